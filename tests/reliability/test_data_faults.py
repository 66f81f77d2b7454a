"""Odd data end in a counted, logged skip or a one-line error: non-UTF-8 file names,
corrupt TFRecord records, boxes in pixels, ``../`` file names, a missing --init-from.

Every input is built here, at test time, in a temporary folder.
"""

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from support.corpus import jpeg_bytes, pattern
from support.tiny import TINY_MODEL
from tf_centernet import cli  # noqa: E402
from tf_centernet.config import load_config  # noqa: E402
from tf_centernet.data.check import check_dataset  # noqa: E402
from tf_centernet.data.coco import CocoDataset  # noqa: E402
from tf_centernet.data.tfrecord import TfRecordDataset, write_tfrecords  # noqa: E402
from tf_centernet.data.voc import VocDataset  # noqa: E402

LATIN1 = b"caf\xe9"  # "café" in Latin-1: not UTF-8


def voc_xml(name="cat", box=(8, 8, 40, 36), width=64, height=48):
    return (f"<annotation><size><width>{width}</width><height>{height}</height><depth>3</depth></size>"
            f"<object><name>{name}</name><bndbox><xmin>{box[0]}</xmin><ymin>{box[1]}</ymin>"
            f"<xmax>{box[2]}</xmax><ymax>{box[3]}</ymax></bndbox></object></annotation>").encode()


def write_bytes_name(folder, name: bytes, data: bytes):
    """Writes `data` to FOLDER/NAME with NAME given as raw bytes (any encoding)."""
    with open(os.path.join(os.fsencode(str(folder)), name), "wb") as f:
        f.write(data)


def non_utf8_voc_folder(folder):
    """A plain VOC folder: caf\\xe9.xml + caf\\xe9.jpg (Latin-1 names) and plain.xml + plain.jpg."""
    os.makedirs(folder, exist_ok=True)
    for stem, seed in ((LATIN1, 1), (b"plain", 2)):
        write_bytes_name(folder, stem + b".xml", voc_xml())
        write_bytes_name(folder, stem + b".jpg", jpeg_bytes(pattern(seed=seed)))
    return str(folder)


def clean_stderr(text):
    assert "Traceback" not in text and "Segmentation fault" not in text, text[-3000:]


# ------------------------------------------------------------ item 1: file names that are not UTF-8


@pytest.mark.slow
def test_check_data_reads_non_utf8_file_names_without_crashing(tmp_path):
    """Item 1: was SIGSEGV (exit 139) in OpenCV's imread; now both images decode and the set is OK."""
    folder = non_utf8_voc_folder(tmp_path / "voc")
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=repo, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(
        [sys.executable, "-m", "tf_centernet", "check-data", "--config", "demo", "--split", "train", "--set",
         f"train_data.annotations={folder}", f"train_data.images={folder}", "model.num_classes=1"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert done.returncode == 0, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    clean_stderr(done.stderr)
    assert "images: 2 (0 without objects)" in done.stdout and "check-data: OK" in done.stdout


def test_training_pipeline_reads_non_utf8_file_names(tmp_path):
    """Item 1: `train` stopped in tf.constant ('Error converting unicode string'); the pipeline now takes bytes."""
    from tf_centernet.data.pipeline import build_train_dataset

    folder = non_utf8_voc_folder(tmp_path / "voc")
    dataset = VocDataset(folder, folder)
    assert len(dataset) == 2 and not dataset.skipped
    names = sorted(os.fsencode(os.path.basename(r.file_name)) for r in dataset.records)
    assert names == [LATIN1 + b".jpg", b"plain.jpg"]  # the file system's bytes, round-tripped
    config = load_config("demo", [*TINY_MODEL, "data.input_size=63", "model.num_classes=1",
                                  "data.num_parallel_calls=0"])
    images, targets = next(iter(build_train_dataset(dataset, config, batch_size=2, shuffle=False)))
    assert images.shape == (2, 63, 63, 3) and np.isfinite(images.numpy()).all()
    assert targets["num_objects"].numpy().tolist() == [1, 1]


def test_image_set_with_a_non_utf8_id_names_its_file(tmp_path, caplog):
    """Item 1: an image-set line 'caf\\xe9' raised "'utf-8' codec can't decode byte 0xe9" naming no file."""
    root = tmp_path / "VOC"
    for sub in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
        (root / sub).mkdir(parents=True)
    for stem, seed in ((LATIN1, 1), (b"plain", 2)):
        write_bytes_name(root / "Annotations", stem + b".xml", voc_xml())
        write_bytes_name(root / "JPEGImages", stem + b".jpg", jpeg_bytes(pattern(seed=seed)))
    (root / "ImageSets" / "Main" / "train.txt").write_bytes(LATIN1 + b"\nplain\nmissing\xff\n")
    with caplog.at_level(logging.WARNING):
        dataset = VocDataset(str(root), split="train")
    assert len(dataset) == 2 and dataset.skipped == {"missing_xml": 1}
    assert all(os.path.isfile(r.file_name) for r in dataset.records)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "missing\\xff.xml is listed in" in text  # the bad id is named, printable
    report = check_dataset(dataset, load_config("demo", ["model.num_classes=1"]))
    assert not report.errors and report.images == 2
    assert "missing\\xff.xml" in report.text()
    report.text().encode("utf-8")  # printable as UTF-8 (no lone surrogates)


def test_convert_data_keeps_a_non_utf8_file_name(tmp_path):
    """The TFRecord's image/filename holds the file system's bytes (str.encode() failed on them)."""
    folder = non_utf8_voc_folder(tmp_path / "voc")
    [path] = write_tfrecords(VocDataset(folder, folder), str(tmp_path / "out" / "train"))
    read = TfRecordDataset(path)
    assert sorted(os.fsencode(r.file_name) for r in read.records) == [LATIN1 + b".jpg", b"plain.jpg"]
    assert sorted(r.display_name for r in read.records)[0] == f"{path} record 0 (caf\\xe9.jpg)"


# ------------------------------------------------------------ TFRecord: corrupt records, names, pixel boxes


@pytest.fixture(scope="module")
def tfrecord_file(synthetic_coco, tmp_path_factory):
    """One TFRecord file of the 16 synthetic images; returns (path, record offsets)."""
    image_dir, annotation_file = synthetic_coco
    folder = tmp_path_factory.mktemp("records")
    [path] = write_tfrecords(CocoDataset(annotation_file, image_dir), str(folder / "train"))
    data = open(path, "rb").read()
    offsets, offset = [], 0
    while offset < len(data):
        offsets.append(offset)
        offset += 16 + int.from_bytes(data[offset:offset + 8], "little")
    assert len(offsets) == 16
    return path, offsets


def damaged_copy(source, target, changes):
    data = bytearray(open(source, "rb").read())
    for position in changes:
        data[position] ^= 0xFF
    open(target, "wb").write(bytes(data))
    return str(target)


@pytest.mark.parametrize("where", ["data", "header"])
def test_records_after_a_corrupt_one_are_read_and_the_skip_counted(tfrecord_file, tmp_path, caplog, where):
    """Item 9: the 13 intact records after a corrupt one were lost uncounted; now 15 read, 1 skipped."""
    path, offsets = tfrecord_file
    position = offsets[2] + (40 if where == "data" else 3)  # inside record 2's data, or its length field
    damaged = damaged_copy(path, tmp_path / "damaged.tfrecord", [position])
    with caplog.at_level(logging.WARNING):
        dataset = TfRecordDataset(damaged)
    assert len(dataset) == 15 and dataset.skipped == {"bad_record": 1}
    assert [r.source for r in dataset.records][2] == f"{damaged} record 3"  # numbering goes on
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert f"{damaged} record 2: corrupt" in text and "skipped" in text


def test_truncated_tfrecord_keeps_the_records_before_and_counts_the_cut(tfrecord_file, tmp_path):
    path, offsets = tfrecord_file
    cut = tmp_path / "cut.tfrecord"
    cut.write_bytes(open(path, "rb").read()[: offsets[5] + 30])
    dataset = TfRecordDataset(str(cut))
    assert len(dataset) == 5 and dataset.skipped == {"bad_record": 1}
    assert any("record 5: truncated at byte" in p for p in dataset.problems)


def test_tfrecord_check_names_the_file_and_record_number(tfrecord_file, tmp_path):
    """Item 9: an undecodable image in a TFRecord is named by TFRecord file and record number."""
    import tensorflow as tf

    path, _ = tfrecord_file
    out = tmp_path / "one_bad.tfrecord"
    with tf.io.TFRecordWriter(str(out)) as writer:
        for number, serialized in enumerate(tf.data.TFRecordDataset(path).take(3).as_numpy_iterator()):
            example = tf.train.Example.FromString(serialized)
            if number == 1:  # the JPEG cut in half: no end-of-image marker
                encoded = example.features.feature["image/encoded"].bytes_list.value[0]
                example.features.feature["image/encoded"].bytes_list.value[0] = encoded[: len(encoded) // 2]
            writer.write(example.SerializeToString())
    dataset = TfRecordDataset(str(out))
    report = check_dataset(dataset, load_config("demo", [f"model.num_classes={dataset.num_classes}"]))
    [example] = [e for e in report.examples if e.startswith("unreadable_image")]
    assert f"{out} record 1 (" in example and "truncated JPEG" in example
    assert report.errors == ["1 images cannot be decoded"]


def test_boxes_in_pixels_make_check_data_fail_with_a_hint(tmp_path, capsys, caplog):
    """Item 9: every box > 1 (pixels) was dropped as outside_image and check-data said OK."""
    import tensorflow as tf

    path = tmp_path / "pixels.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for number in range(3):
            feature = {
                "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg_bytes(pattern())])),
                "image/height": tf.train.Feature(int64_list=tf.train.Int64List(value=[48])),
                "image/width": tf.train.Feature(int64_list=tf.train.Int64List(value=[64])),
                "image/filename": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"img%d.jpg" % number])),
                "image/object/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[1])),
            }
            for key, value in zip(("xmin", "ymin", "xmax", "ymax"), (8.0, 6.0, 40.0, 30.0)):  # pixels
                feature[f"image/object/bbox/{key}"] = tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    code = cli.main(["check-data", "--config", "demo", "--split", "train", "--set",
                     f"train_data.annotations={path}", "model.num_classes=1"])
    out = capsys.readouterr().out
    assert code == 1 and "check-data: problems found" in out
    assert "ERROR: no object left in 3 images: all 3 were skipped (3 outside_image)" in out
    assert "must be normalised to [0, 1]" in out
    caplog.clear()
    assert cli.main(["train", "--config", "demo", "--model-dir", str(tmp_path / "model"), "--set",
                     f"train_data.annotations={path}", "model.num_classes=1"]) == 2
    [error] = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert error.startswith("No object to train on: no object left in 3 images") and "normalised" in error
    assert not (tmp_path / "model").exists()


# ------------------------------------------------------------ COCO ../ file names, --init-from


def test_coco_file_name_leaving_the_image_folder_is_refused_and_counted(tmp_path, caplog):
    """Item 9: a '../' file_name was read from outside the image folder without a word."""
    (tmp_path / "images" / "sub").mkdir(parents=True)
    (tmp_path / "images" / "inside.jpg").write_bytes(jpeg_bytes(pattern()))
    (tmp_path / "outside.jpg").write_bytes(jpeg_bytes(pattern(seed=2)))
    annotation_file = tmp_path / "ann.json"
    images = [{"id": 1, "file_name": "inside.jpg", "height": 48, "width": 64},
              {"id": 2, "file_name": "../outside.jpg", "height": 48, "width": 64},
              {"id": 3, "file_name": "sub/../inside.jpg", "height": 48, "width": 64}]
    annotations = [{"id": i, "image_id": i, "category_id": 1, "bbox": [4, 4, 20, 20], "area": 400, "iscrowd": 0}
                   for i in (1, 2, 3)]
    annotation_file.write_text(json.dumps({"images": images, "annotations": annotations,
                                           "categories": [{"id": 1, "name": "thing"}]}))
    with caplog.at_level(logging.WARNING):
        dataset = CocoDataset(str(annotation_file), str(tmp_path / "images"))
    assert [r.image_id for r in dataset.records] == [1, 3]  # a/../b stays inside: kept
    assert dataset.skipped == {"unsafe_file_name": 1}
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "image id 2 (../outside.jpg): file_name leads outside the image folder" in text


def test_missing_init_from_fails_before_creating_the_model_dir(synthetic_coco, tmp_path, caplog):
    """Item 9: a missing --init-from left MODEL_DIR/.train.lock behind."""
    image_dir, annotation_file = synthetic_coco
    model_dir = tmp_path / "model"
    code = cli.main(["train", "--config", "demo", "--model-dir", str(model_dir), "--init-from",
                     str(tmp_path / "no_such_snapshot.pkl"), "--set", f"train_data.images={image_dir}",
                     f"train_data.annotations={annotation_file}"])
    assert code == 2
    [error] = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert "--init-from" in error and "no_such_snapshot.pkl" in error
    assert not model_dir.exists()
