"""Pascal VOC and TFRecord readers, format detection, data checks and the
in-memory COCO ground truth, on real BCCD / coco-tiny files and on
malformed inputs."""

import json
import os
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf

from support.tfrecord_examples import od_api_example
from support.tiny import TINY_MODEL
from tf_centernet.cli import main
from tf_centernet.config import load_config
from tf_centernet.data.check import check_dataset
from tf_centernet.data.coco import CocoDataset
from tf_centernet.data.records import coco_ground_truth, detect_format, open_dataset
from tf_centernet.data.tfrecord import TfRecordDataset, make_example
from tf_centernet.data.voc import VocDataset
from tf_centernet.evaluation import evaluate_dataset

BCCD_CLASSES = ["Platelets", "RBC", "WBC"]


def _objects_by_regex(xml_path):
    """Independent reading of a VOC file: (name, xmin, ymin, xmax, ymax) tuples."""
    text = open(xml_path, encoding="utf-8").read()
    found = []
    for block in re.findall(r"<object>(.*?)</object>", text, re.S):
        name = re.search(r"<name>(.*?)</name>", block).group(1)
        coords = [float(re.search(rf"<{k}>(.*?)</{k}>", block).group(1)) for k in ("xmin", "ymin", "xmax", "ymax")]
        found.append((name, *coords))
    return found


def _voc_xml(path, filename, objects, size=(640, 480)):
    """Writes a VOC XML file; objects are (name, box, difficult) tuples."""
    parts = [f"<annotation><filename>{filename}</filename>"]
    if size:
        parts.append(f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>")
    for name, box, difficult in objects:
        coords = "".join(f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
        parts.append(f"<object><name>{name}</name><difficult>{int(difficult)}</difficult><bndbox>{coords}</bndbox></object>")
    parts.append("</annotation>")
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(parts))


def _plain_voc_folder(tmp_path, bccd, stems=("BloodImage_00007", "BloodImage_00011")):
    """A plain folder of XML + images (no ImageSets) holding real BCCD files."""
    folder = tmp_path / "plain"
    folder.mkdir()
    for stem in stems:
        shutil.copy(os.path.join(bccd, "Annotations", stem + ".xml"), folder)
        shutil.copy(os.path.join(bccd, "JPEGImages", stem + ".jpg"), folder)
    return folder


def test_voc_split_matches_the_xml_files(bccd):
    split = os.path.join(bccd, "ImageSets", "Main", "test.txt")
    dataset = VocDataset(split)
    stems = [line.strip() for line in open(split) if line.strip()]
    assert len(dataset) == len(stems) == 72
    assert dataset.class_names == BCCD_CLASSES and dataset.category_ids == [1, 2, 3]
    for record, stem in zip(dataset.records, stems):
        expected = _objects_by_regex(os.path.join(bccd, "Annotations", stem + ".xml"))
        assert record.file_name == os.path.join(bccd, "JPEGImages", stem + ".jpg")
        assert (record.height, record.width) == (480, 640)
        names = [BCCD_CLASSES[c] for c in record.classes]
        assert names == [e[0] for e in expected]
        np.testing.assert_array_equal(record.boxes, np.array([e[1:] for e in expected], np.float32))
    assert dataset.skipped == {}


def test_voc_train_split_skips_the_degenerate_box_with_a_message(bccd, caplog):
    dataset = VocDataset(os.path.join(bccd, "ImageSets", "Main", "train.txt"))
    assert dataset.skipped == {"degenerate_box": 1}
    assert "BloodImage_00343.xml" in caplog.text and "degenerate_box" in caplog.text
    assert len(dataset) == 205  # the image itself is kept


def test_voc_folder_without_imagesets(bccd, tmp_path):
    folder = _plain_voc_folder(tmp_path, bccd)
    assert detect_format(str(folder)) == "voc"
    dataset = VocDataset(str(folder))
    assert [os.path.basename(r.file_name) for r in dataset.records] == ["BloodImage_00007.jpg", "BloodImage_00011.jpg"]
    expected = _objects_by_regex(str(folder / "BloodImage_00007.xml"))
    assert dataset.records[0].num_objects == len(expected) == 18


@pytest.mark.parametrize("mode,trained,ignored", [("drop", 1, 0), ("ignore", 1, 1), ("keep", 2, 0)])
def test_voc_difficult_modes(bccd, tmp_path, mode, trained, ignored):
    shutil.copy(os.path.join(bccd, "JPEGImages", "BloodImage_00007.jpg"), tmp_path / "a.jpg")
    _voc_xml(tmp_path / "a.xml", "a.jpg", [("RBC", (10, 10, 60, 60), False), ("WBC", (100, 100, 200, 200), True)])
    dataset = VocDataset(str(tmp_path), difficult=mode, classes=["RBC", "WBC"])
    assert dataset.records[0].num_objects == trained
    gt = coco_ground_truth(dataset)
    assert sum(a["iscrowd"] for a in gt.anns.values()) == ignored
    assert len(gt.anns) == trained + ignored


def test_malformed_voc_files_are_skipped_with_messages(bccd, tmp_path, caplog):
    image = os.path.join(bccd, "JPEGImages", "BloodImage_00007.jpg")
    shutil.copy(image, tmp_path / "good.jpg")
    shutil.copy(image, tmp_path / "edge.jpg")
    _voc_xml(tmp_path / "good.xml", "good.jpg", [("RBC", (10, 10, 60, 60), False)])
    (tmp_path / "broken.xml").write_text("<annotation><object><name>RBC</name>")
    _voc_xml(tmp_path / "nofile.xml", "nofile.jpg", [("RBC", (10, 10, 60, 60), False)])
    _voc_xml(tmp_path / "nobox.xml", "good.jpg", [("RBC", (10, "x", 60, 60), False)])
    _voc_xml(
        tmp_path / "edge.xml",
        "edge.jpg",
        [("RBC", (600, 400, 700, 500), False), ("RBC", (700, 10, 800, 60), False), ("Dog", (1, 1, 9, 9), False)],
    )
    dataset = VocDataset(str(tmp_path), classes=["RBC", "WBC"])
    assert dataset.skipped == {"bad_xml": 2, "missing_image": 1, "outside_image": 1, "unknown_class": 1}
    assert dataset.repaired == {"clipped_box": 1}
    by_name = {os.path.basename(r.file_name): r for r in dataset.records}
    assert sorted(by_name) == ["edge.jpg", "good.jpg"]
    np.testing.assert_array_equal(by_name["edge.jpg"].boxes, [[600, 400, 640, 480]])
    text = caplog.text
    assert "broken.xml: not well-formed XML" in text
    assert "nobox.xml (object 0): <ymin> is not a number" in text
    assert "nofile.xml: <filename>" in text and "does not exist" in text
    assert "edge.xml (object 2, <name>Dog</name>)" in text
    assert "edge.xml (object 1, <name>RBC</name>): <bndbox>" in text and "outside_image" in text


def test_tfrecord_round_trip_through_convert_data(coco_tiny, tmp_path, capsys):
    (train_ann, train_dir), (val_ann, val_dir) = coco_tiny["train"], coco_tiny["val"]
    out = tmp_path / "records"
    assert main([
        "convert-data", "--config", "centernet_small", "--output", str(out), "--shards", "3",
        "--set", f"train_data.annotations={train_ann}", f"train_data.images={train_dir}",
        f"validation_data.annotations={val_ann}", f"validation_data.images={val_dir}",
    ]) == 0
    printed = capsys.readouterr().out
    assert f"train_data.annotations={out}/train-*-of-*.tfrecord" in printed
    assert sorted(os.listdir(out)) == ["classes.txt"] + [f"{s}-{i:05d}-of-00003.tfrecord" for s in ("train", "val") for i in range(3)]
    for split, (ann, images) in coco_tiny.items():
        coco = CocoDataset(ann, images)
        pattern = str(out / f"{split}-*-of-*.tfrecord")
        assert detect_format(pattern) == "tfrecord"
        records = TfRecordDataset(pattern, classes=str(out / "classes.txt"))
        assert records.category_ids == coco.category_ids and records.class_names == coco.class_names
        by_id = {r.image_id: r for r in records.records}
        assert sorted(by_id) == [r.image_id for r in coco.records]
        for original in coco.records:
            copy = by_id[original.image_id]
            with open(original.file_name, "rb") as f:
                assert copy.encoded == f.read()
            np.testing.assert_array_equal(copy.classes, original.classes)
            # Normalised float32 coordinates: equal to float32 rounding.
            np.testing.assert_allclose(copy.boxes, original.boxes, rtol=0, atol=1e-3)
            assert (copy.height, copy.width) == (original.height, original.width)
        # Crowd regions travel as is_crowd and come back as the same ground truth.
        gt_copy, gt = coco_ground_truth(records), coco.coco
        assert sum(a["iscrowd"] for a in gt_copy.anns.values()) == sum(a.get("iscrowd", 0) for a in gt.anns.values())
        assert len(gt_copy.anns) == len(gt.anns)


def test_malformed_tfrecords_are_skipped_with_messages(tmp_path, caplog):
    jpeg = tf.io.encode_jpeg(tf.zeros((40, 50, 3), tf.uint8)).numpy()
    box = dict(image__object__bbox__xmin=[0.1], image__object__bbox__ymin=[0.2],
               image__object__bbox__xmax=[0.5], image__object__bbox__ymax=[0.6])
    good = od_api_example(image__encoded=jpeg, image__height=40, image__width=50, image__source_id=b"7",
                    image__object__class__label=[1], **box)
    wrong_dtype = od_api_example(image__encoded=jpeg, image__height=40.0, image__width=50, image__source_id=b"8",
                           image__object__class__label=[1], **box)
    no_image = od_api_example(image__height=40, image__width=50, image__object__class__label=[1], **box)
    unknown = od_api_example(image__encoded=jpeg, image__height=40, image__width=50, image__source_id=b"9",
                       image__object__class__label=[5], **box)
    path = str(tmp_path / "bad.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for serialized in (good, b"", wrong_dtype, no_image, unknown):
            writer.write(serialized)
    dataset = TfRecordDataset(path, classes=["cell"])
    assert dataset.skipped == {"bad_record": 3, "unknown_class": 1}
    assert [r.image_id for r in dataset.records] == [7, 9]  # the source ids
    np.testing.assert_allclose(dataset.records[0].boxes, [[5, 8, 25, 24]], atol=1e-4)
    assert dataset.records[1].num_objects == 0
    text = caplog.text
    assert f"{path} record 1: empty record" in text
    assert f"{path} record 2: field 'image/height' is a float_list, expected a int64_list" in text
    assert f"{path} record 3: field 'image/encoded' is missing or empty" in text
    assert f"{path} record 4 (9) object 0: image/object/class/label 5 not in" in text


@pytest.mark.slow
def test_training_goes_on_past_bad_files_and_logs_the_counts(bccd, tmp_path, caplog):
    folder = _plain_voc_folder(tmp_path, bccd)
    (folder / "broken.xml").write_text("<annotation>")
    _voc_xml(folder / "nofile.xml", "nofile.jpg", [("RBC", (10, 10, 60, 60), False)])
    (tmp_path / "classes.txt").write_text("Platelets\nRBC\nWBC\n")
    model_dir = str(tmp_path / "model")
    code = main([
        "train", "--config", "bccd_small", "--model-dir", model_dir, "--set",
        f"train_data.annotations={folder}", "train_data.images=''", f"train_data.classes={tmp_path / 'classes.txt'}",
        "data.input_size=63", *TINY_MODEL,
        "train.batch_size=2", "train.total_steps=1", "train.checkpoint_every=1",
    ])
    assert code == 0
    assert os.listdir(os.path.join(model_dir, "checkpoints")) == ["ckpt-1.weights.h5"]
    summary = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Data check:")]
    assert len(summary) == 1 and "2 images" in summary[0]
    assert "1 bad_xml" in summary[0] and "1 missing_image" in summary[0]
    with open(os.path.join(model_dir, "classes.json")) as f:
        assert json.load(f) == {"category_ids": [1, 2, 3], "names": BCCD_CLASSES}


def test_detect_format():
    assert detect_format("a/instances.json") == "coco"
    assert detect_format("voc/ImageSets/Main/train.txt") == "voc"
    assert detect_format("out/train-00000-of-00004.tfrecord") == "tfrecord"
    assert detect_format("out/train-*") == "tfrecord"
    with pytest.raises(ValueError, match="validation_data.format"):
        detect_format("no/such/thing")


def test_config_data_paths_resolve_against_the_config_file(tmp_path, monkeypatch):
    folder = tmp_path / "cfg"
    folder.mkdir()
    (folder / "mine.yaml").write_text("train_data:\n  annotations: ../data/train.txt\n  classes: names.txt\n")
    monkeypatch.chdir(tmp_path.parent)
    config = load_config(str(folder / "mine.yaml"), ["validation_data.annotations=rel/val.json"])
    assert config.train_data.annotations == str(tmp_path / "data" / "train.txt")
    assert config.train_data.classes == str(folder / "names.txt")
    assert config.validation_data.annotations == str(tmp_path.parent / "rel" / "val.json")  # override: cwd


def test_bccd_small_config_reads_bccd_from_anywhere(bccd, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config("bccd_small")
    train, test = open_dataset(config, "train"), open_dataset(config, "val")
    assert (len(train), len(test)) == (205, 72)
    assert train.num_classes == config.model.num_classes == 3


def test_evaluation_of_ground_truth_boxes_is_perfect_and_difficult_is_ignored(bccd, tmp_path):
    shutil.copy(os.path.join(bccd, "JPEGImages", "BloodImage_00007.jpg"), tmp_path / "a.jpg")
    _voc_xml(tmp_path / "a.xml", "a.jpg", [("RBC", (10, 10, 60, 60), False), ("WBC", (100, 100, 200, 200), True)])
    dataset = VocDataset(str(tmp_path), classes=["RBC", "WBC"])

    class Oracle:  # the ground truth plus a box on the difficult (ignored) WBC
        def predict_images(self, images, batch_size=1):
            return [dict(boxes=np.array([[10, 10, 60, 60], [100, 100, 200, 200]], np.float32),
                         scores=np.array([0.9, 0.8]), classes=np.array([0, 1]))]

    metrics = evaluate_dataset(Oracle(), dataset, compute_fd=True, verbose=False)
    assert metrics["AP"] == pytest.approx(1.0) and metrics["FD"] == pytest.approx(0.0)


def test_check_data_fails_on_a_class_count_mismatch(bccd, tmp_path, capsys):
    assert main(["check-data", "--config", "bccd_small", "--split", "val", "--no-decode"]) == 0
    assert main(["check-data", "--config", "bccd_small", "--split", "val", "--no-decode",
                 "--set", "model.num_classes=4"]) == 1
    printed = capsys.readouterr().out
    assert "ERROR: 3 classes in the data but model.num_classes is 4" in printed
    (tmp_path / "classes.txt").write_text("Platelets\nRBC\nWBC\nOther\n")
    assert main(["check-data", "--config", "bccd_small", "--split", "val", "--no-decode",
                 "--classes", str(tmp_path / "classes.txt")]) == 1
    assert "ERROR: 4 classes in the data but model.num_classes is 3" in capsys.readouterr().out
    assert "images: 72 (0 without objects)" in printed and "RBC: 805" in printed


def test_check_reports_objects_past_max_objects(bccd, tmp_path):
    config = load_config("bccd_small", ["data.max_objects=20"])
    report = check_dataset(VocDataset(os.path.join(bccd, "ImageSets", "Main", "test.txt")), config, decode_images=False)
    expected = sum(
        len(_objects_by_regex(os.path.join(bccd, "Annotations", s.strip() + ".xml"))) > 20
        for s in open(os.path.join(bccd, "ImageSets", "Main", "test.txt")) if s.strip()
    )
    assert expected > 0 and report.counts["over_max_objects"] == expected
    assert any("max_objects=20" in e for e in report.errors)


def test_make_example_uses_the_file_bytes(bccd, tmp_path):
    dataset = VocDataset(os.path.join(bccd, "ImageSets", "Main", "test.txt"))
    example = make_example(dataset, dataset.records[0])
    feature = example.features.feature
    with open(dataset.records[0].file_name, "rb") as f:
        assert feature["image/encoded"].bytes_list.value[0] == f.read()
    assert feature["image/object/bbox/xmax"].float_list.value[0] == pytest.approx(dataset.records[0].boxes[0, 2] / 640)


def test_training_pipeline_decodes_tfrecord_images_from_memory(tmp_path):
    from tf_centernet.data.pipeline import build_train_dataset

    image = np.zeros((64, 64, 3), np.uint8)
    image[16:48, 8:40] = 255  # one white box, the object
    jpeg = tf.io.encode_jpeg(image, quality=100).numpy()
    serialized = od_api_example(image__encoded=jpeg, image__height=64, image__width=64, image__source_id=b"1",
                          image__object__class__label=[1], image__object__bbox__xmin=[8 / 64],
                          image__object__bbox__ymin=[16 / 64], image__object__bbox__xmax=[40 / 64],
                          image__object__bbox__ymax=[48 / 64])
    path = str(tmp_path / "one.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(serialized)
    dataset = TfRecordDataset(path)
    config = load_config("bccd_small", ["model.num_classes=1", "data.input_size=63", "data.mean=[0,0,0]",
                                        "data.std=[1,1,1]"])
    images, targets = next(iter(build_train_dataset(dataset, config, batch_size=1, shuffle=False, augment=False)))
    assert images.shape == (1, 63, 63, 3)
    assert int(targets["num_objects"][0]) == 1
    # Unaugmented: the 64 px image resized to 63 px; the box stays white.
    assert float(tf.reduce_mean(images[0, 20:44, 12:36])) > 0.95
    assert float(tf.reduce_mean(images[0, 50:, 50:])) < 0.05
