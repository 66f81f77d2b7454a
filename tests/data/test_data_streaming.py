"""TFRecord training input streamed from the files (tf_centernet.data.tfrecord_stream)."""

import numpy as np
import pytest
import tensorflow as tf

# The tf.train.Example builder of the format tests.
from support.tfrecord_examples import od_api_example
from tf_centernet.config import load_config
from tf_centernet.data.coco import CocoDataset
from tf_centernet.data.pipeline import build_train_dataset
from tf_centernet.data.records import coco_ground_truth
from tf_centernet.data.tfrecord import TfRecordDataset, TfRecordRecord, write_tfrecords
from tf_centernet.data.tfrecord_stream import COUNTERS, shard_files, stream_records

CONFIG = ["model.num_classes=3", "data.input_size=63", "train.seed=7"]


def _jpeg(height=64, width=64):
    image = np.zeros((height, width, 3), np.uint8)
    image[16:48, 8:40] = 255
    return tf.io.encode_jpeg(image, quality=95).numpy()


def _objects(boxes, labels, crowd=None):
    columns = np.asarray(boxes, np.float32).reshape(-1, 4).T.tolist()
    fields = dict(image__object__bbox__xmin=columns[0], image__object__bbox__ymin=columns[1],
                  image__object__bbox__xmax=columns[2], image__object__bbox__ymax=columns[3],
                  image__object__class__label=list(labels))
    if crowd is not None:
        fields["image__object__is_crowd"] = list(crowd)
    return fields


@pytest.fixture(scope="module")
def shards(synthetic_coco, tmp_path_factory):
    """The 16 synthetic images as one CocoDataset and as TFRecords: (coco, [1 shard prefix], [5 shards prefix])."""
    image_dir, annotation_file = synthetic_coco
    coco = CocoDataset(annotation_file, image_dir)
    folder = tmp_path_factory.mktemp("stream")
    write_tfrecords(coco, str(folder / "one"), 1)
    write_tfrecords(coco, str(folder / "five"), 5)
    return coco, str(folder / "one-*"), str(folder / "five-*")


def test_records_hold_the_place_of_their_image_not_the_image(shards):
    coco, one, _ = shards
    dataset = TfRecordDataset(one)
    assert len(dataset.records) == len(coco.records) == 16
    for record, original in zip(dataset.records, coco.records):
        assert isinstance(record, TfRecordRecord)
        assert not any(isinstance(v, bytes) for v in vars(record).values())
        with open(original.file_name, "rb") as handle:
            assert record.encoded == handle.read()
        np.testing.assert_allclose(record.boxes, original.boxes, atol=1e-3)


def test_stream_gives_the_values_of_the_file_pipeline(shards):
    """Same images, boxes and element numbers -> the same augmented images and targets."""
    coco, one, _ = shards
    config = load_config("bccd_small", CONFIG)
    streamed = TfRecordDataset(one)
    options = dict(batch_size=2, shuffle=False, repeat=False, augment=True, start_element=3)
    expected = list(build_train_dataset(coco, config, **options))
    got = list(build_train_dataset(streamed, config, **options))
    assert len(got) == len(expected) == 8
    for (images, targets), (want_images, want_targets) in zip(got, expected):
        np.testing.assert_allclose(images.numpy(), want_images.numpy(), atol=1e-5)
        assert set(targets) == set(want_targets)
        for key in targets:
            np.testing.assert_allclose(targets[key].numpy(), want_targets[key].numpy(), atol=1e-5, err_msg=key)
    assert streamed.stream_report.passes == [dict.fromkeys(COUNTERS, 0) | {"records": 16}]


def test_stream_repeats_and_shuffles_by_pass(shards):
    _, _, five = shards
    dataset = TfRecordDataset(five)
    first = [tuple(x[:2]) for x in stream_records(dataset, shuffle=True, seed=1, passes=2).as_numpy_iterator()]
    assert len(first) == 32
    assert sorted(first[:16]) == sorted(first[16:]) == sorted((r.file_index, r.number) for r in dataset.records)
    assert first[:16] != first[16:]  # another file order in the second pass


@pytest.mark.parametrize("num_files", [5, 1])
def test_two_workers_read_disjoint_shares_that_cover_every_record(shards, num_files):
    """5 files: each worker reads its own files; 1 file: each keeps every second record."""
    _, one, five = shards
    dataset = TfRecordDataset(five if num_files == 5 else one)
    read = []
    for worker in (0, 1):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=worker, num_replicas_in_sync=2)
        files, data_shard = shard_files(len(dataset.files), context)
        keys = [(int(f), int(n)) for f, n, _ in stream_records(dataset, context, seed=3).as_numpy_iterator()]
        read.append(keys)
        if num_files == 5:
            assert data_shard is None and files == [i for i in range(5) if i % 2 == worker]
            assert {f for f, _ in keys} == set(files)
        else:
            assert data_shard == (2, worker)
    assert not set(read[0]) & set(read[1])
    assert sorted(read[0] + read[1]) == sorted((r.file_index, r.number) for r in dataset.records)


@pytest.fixture()
def faulty(tmp_path):
    """A TFRecord file with one of each fault the checks count, and what each should count."""
    jpeg = _jpeg()
    good = dict(image__encoded=jpeg, image__height=64, image__width=64, image__format=b"jpeg")
    records = [
        od_api_example(image__source_id=b"1", **good, **_objects([[0.1, 0.1, 0.5, 0.5], [0.5, 0.5, 1.2, 0.9]], [1, 2])),
        od_api_example(image__source_id=b"2", **good, **_objects([[0.5, 0.1, 0.4, 0.5], [0.1, 0.1, 0.3, 0.3]], [1, 9])),
        od_api_example(image__source_id=b"3", **good, **_objects([[1.1, 0.1, 1.5, 0.5], [float("nan"), 0, 0.5, 0.5]], [3, 3])),
        od_api_example(image__source_id=b"4", **good, **_objects([[0.2, 0.2, 0.6, 0.6], [0.1, 0.1, 0.2, 0.2]], [1, 2], [1, 0])),
        od_api_example(image__source_id=b"5", image__encoded=jpeg, **_objects([[0.2, 0.2, 0.6, 0.6]], [2])),  # no size
        od_api_example(image__source_id=b"6", image__encoded=b"not an image at all", image__height=64, image__width=64,
                 **_objects([[0.2, 0.2, 0.6, 0.6]], [1])),
        od_api_example(image__source_id=b"7", image__encoded=jpeg, image__height=[64, 64], image__width=64),  # 2 heights
        od_api_example(image__source_id=b"8", **good, **_objects([[0.2, 0.2, 0.6, 0.6]], [3])),
        od_api_example(image__source_id=b"9", image__encoded=jpeg[: len(jpeg) // 2], image__height=64, image__width=64,
                 **_objects([[0.2, 0.2, 0.6, 0.6]], [1])),  # a JPEG cut short: no end-of-image marker
    ]
    path = str(tmp_path / "faulty.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for serialized in records:
            writer.write(serialized)
    counts = dict.fromkeys(COUNTERS, 0) | dict(
        records=9, clipped_box=1, degenerate_box=1, unknown_class=1, outside_image=1, nan_box=1, crowd=1,
        size_from_image=1, unreadable_image=2, bad_record=1)
    return path, counts


def test_stream_counts_equal_the_readers_and_the_expected(faulty, caplog):
    path, expected = faulty
    dataset = TfRecordDataset(path, classes=["a", "b", "c"])
    config = load_config("bccd_small", CONFIG + ["data.num_parallel_calls=2"])
    batches = list(build_train_dataset(dataset, config, batch_size=1, shuffle=False, repeat=False, augment=False))
    # 9 records: the bad record, the non-image and the cut JPEG are skipped whole.
    assert len(batches) == 6
    assert [int(t["num_objects"][0]) for _, t in batches] == [2, 0, 0, 1, 1, 1]
    [counts] = dataset.stream_report.passes
    assert counts == expected
    reader = dict(dataset.skipped) | dict(dataset.repaired)
    for key in COUNTERS:
        if key not in ("records", "unreadable_image"):  # the reader does not decode images
            assert counts[key] == reader.get(key, 0), key
    assert "pass 1 over the TFRecord stream read 9 records" in caplog.text


def test_records_after_a_corrupt_stretch_are_streamed(shards, tmp_path):
    _, one, _ = shards
    [path] = TfRecordDataset(one).files
    blob = bytearray(open(path, "rb").read())
    blob[200] ^= 0xFF  # inside record 0's data: a checksum mismatch
    damaged = tmp_path / "damaged.tfrecord"
    damaged.write_bytes(bytes(blob))
    dataset = TfRecordDataset(str(damaged))
    assert dataset.skipped == {"bad_record": 1} and dataset.corrupt_files == [0]
    keys = sorted(int(n) for _, n, _ in stream_records(dataset, shuffle=False).as_numpy_iterator())
    assert keys == sorted(r.number for r in dataset.records) and len(keys) == 15


def test_ground_truth_of_a_tfrecord_split_is_built_from_the_boxes(shards):
    coco, _, five = shards
    truth = coco_ground_truth(TfRecordDataset(five))
    assert sorted(truth.getImgIds()) == sorted(r.image_id for r in coco.records)
    assert len(truth.getAnnIds()) == sum(r.num_objects for r in coco.records)
