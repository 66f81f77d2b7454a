"""Bad images and malformed COCO annotations: a clear error or a counted, logged skip.

The corpus is built at test time (`corpus.py`). Each case asserts its
outcome and that every good sample is still used (counted).
"""

import json
import logging
import os

import numpy as np
import pytest
import tensorflow as tf

from support.corpus import EXPECTED, build_image_corpus, jpeg_bytes, pattern
from tf_centernet.config import load_config  # noqa: E402
from tf_centernet.data import build_train_dataset  # noqa: E402
from tf_centernet.data.coco import CocoDataset  # noqa: E402
from tf_centernet.data.images import ImageError, check_image_file, load_image  # noqa: E402
from tf_centernet.data.pipeline import decode_image  # noqa: E402

GOOD = sorted(n for n, e in EXPECTED.items() if e == "ok")
BAD = sorted(n for n, e in EXPECTED.items() if e != "ok")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build_image_corpus(str(tmp_path_factory.mktemp("corpus")))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_one_loading_rule_per_case(corpus, name):
    """Loader, header check and TF decoder agree: stored pixels, RGB uint8, or an error naming the file."""
    path = corpus[name]
    if EXPECTED[name] == "ok":
        image = load_image(path)
        # Stored pixels: the EXIF-rotated file keeps its 48 x 64 storage.
        assert image.shape == (48, 64, 3) and image.dtype == np.uint8
        assert check_image_file(path) == (48, 64)
        tf_image = decode_image(tf.constant(path)).numpy()
        assert tf_image.shape == image.shape
        if name in ("grayscale.png", "sixteen_bit.png", "rgba.png", "exif_rotated.jpg"):
            # Same pixels from both decoders (lossless, or the same JPEG).
            np.testing.assert_allclose(tf_image.astype(int), image.astype(int), atol=3)
        if name == "exif_rotated.jpg":
            # Pillow's decode without exif_transpose: the stored pixels.
            from PIL import Image

            with Image.open(path) as stored:
                assert stored.getexif().get(0x0112) == 6
                expected = np.asarray(stored.convert("RGB")).astype(int)
            assert np.abs(image.astype(int) - expected).mean() < 2
    else:
        with pytest.raises(ValueError) as error:
            load_image(path)
        assert os.path.basename(path) in str(error.value)
        with pytest.raises(ImageError) as header_error:
            check_image_file(path)
        assert os.path.basename(path) in str(header_error.value)
        if name != "huge_declared.png":
            with pytest.raises(tf.errors.InvalidArgumentError):
                decode_image(tf.constant(path))


def _coco_for(paths, boxes_per_image=1):
    images, annotations = [], []
    for i, path in enumerate(paths):
        images.append({"id": i + 1, "file_name": os.path.basename(path), "height": 48, "width": 64})
        for k in range(boxes_per_image):
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": 1,
                                "bbox": [4.0 + k, 4.0, 20.0, 20.0], "area": 400.0, "iscrowd": 0})
    return {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "thing"}]}


def test_training_skips_undecodable_images_and_trains_on_every_good_one(corpus, tmp_path, caplog):
    folder = os.path.dirname(corpus["good.jpg"])
    content = _coco_for([corpus[n] for n in sorted(EXPECTED)])
    content["annotations"][0]["bbox"] = [1.0, 1.0, 5.0, 5.0]
    for k in range(3):  # the first image gets 4 objects, over max_objects=3
        content["annotations"].append({"id": 100 + k, "image_id": 1, "category_id": 1,
                                       "bbox": [10.0 + k, 10.0, 8.0, 8.0], "iscrowd": 0})
    annotation_file = tmp_path / "train.json"
    annotation_file.write_text(json.dumps(content))
    config = load_config("demo", ["model.num_classes=1", "data.input_size=63", "data.max_objects=3",
                                  f"train.model_dir={tmp_path / 'model'}"])
    dataset = CocoDataset(str(annotation_file), folder)
    assert len(dataset) == len(EXPECTED)
    with caplog.at_level(logging.WARNING):
        batches = build_train_dataset(dataset, config, batch_size=1, shuffle=False, repeat=False, augment=False)
    seen = sum(int(images.shape[0]) for images, _ in batches)
    assert seen == len(GOOD)  # every good image, none of the bad ones
    text = "\n".join(r.getMessage() for r in caplog.records)
    for name in BAD:
        assert name in text, f"{name} not named in the skip warning"
    assert f"training on {len(GOOD)} of {len(EXPECTED)}" in text
    assert "max_objects=3" in text and "1 objects beyond" in text
    assert dataset.skipped.get("empty_image") == 1 and dataset.skipped.get("truncated_image") == 1
    assert dataset.skipped.get("not_an_image") == 1 and dataset.skipped.get("image_too_large") == 1


DEFECTS = {
    # reason -> (edit of the content, what the message names)
    "missing_category_id": lambda c: c["annotations"][0].pop("category_id"),
    "missing_image_id": lambda c: c["annotations"][1].pop("image_id"),
    "malformed_box": lambda c: c["annotations"][2]["bbox"].__setitem__(1, None),
    "coordinate_out_of_range": lambda c: c["annotations"][3]["bbox"].__setitem__(2, 1e39),
    "bad_image_id": lambda c: c["annotations"][4].__setitem__("image_id", str(c["annotations"][4]["image_id"])),
    "annotation_of_missing_image": lambda c: c["annotations"][5].__setitem__("image_id", 777),
    "outside_image": lambda c: c["annotations"][6].__setitem__("bbox", [500.0, 500.0, 10.0, 10.0]),
    "nan_box": lambda c: c["annotations"][7]["bbox"].__setitem__(0, float("nan")),
}


def _defect_corpus(tmp_path, images=12):
    folder = tmp_path / "images"
    folder.mkdir()
    paths = []
    for i in range(images):
        path = folder / f"img{i}.jpg"
        path.write_bytes(jpeg_bytes(pattern(seed=i)))
        paths.append(str(path))
    return str(folder), _coco_for(paths, boxes_per_image=1)


@pytest.mark.parametrize("reason", sorted(DEFECTS))
def test_each_annotation_defect_is_a_named_counted_skip(tmp_path, caplog, reason):
    folder, content = _defect_corpus(tmp_path)
    DEFECTS[reason](content)
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(content))
    with caplog.at_level(logging.WARNING):
        dataset = CocoDataset(str(path), folder)
    assert dataset.skipped == {reason: 1}
    assert dataset.num_objects == 11 and len(dataset) == 12  # every good annotation kept
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert str(path) in text and f"({reason})" in text
    assert "annotations[" in text or "annotation id" in text


def test_all_annotation_defects_at_once(tmp_path, caplog):
    folder, content = _defect_corpus(tmp_path)
    for edit in DEFECTS.values():
        edit(content)
    content["annotations"][8]["bbox"][3] = "tall"  # a non-numeric string
    content["images"][9].pop("file_name")
    content["images"][10]["id"] = content["images"][11]["id"]  # duplicate image id
    content["images"][0]["width"] = 640  # JSON size differs from the file (64 x 48)
    for k in range(3):  # good annotations, all of which must be kept
        content["annotations"].append({"id": 50 + k, "image_id": 2, "category_id": 1,
                                       "bbox": [2.0 + k, 3.0, 10.0, 12.0], "iscrowd": 0})
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(content))
    with caplog.at_level(logging.WARNING):
        dataset = CocoDataset(str(path), folder)
    expected = {reason: 1 for reason in DEFECTS}
    expected["malformed_box"] = 2
    # Image index 10 took id 12 (duplicate): both images 12 are dropped, and
    # the annotation of id 11 now points at no image.
    expected.update(missing_file_name=1, duplicate_image_id=2, annotation_of_missing_image=2)
    assert dataset.skipped == expected
    assert dataset.repaired == {"size_from_image": 1}
    assert len(dataset) == 12 - 1 - 2
    kept = {r.image_id: r for r in dataset.records}
    assert kept[1].width == 64 and 10 not in kept and 12 not in kept
    # Annotations 0..11 are all defective or belong to a dropped image; the 3 added ones stay.
    assert dataset.num_objects == 3 and kept[2].num_objects == 3
    messages = caplog.records[-1].getMessage()
    assert "image id 777" in messages and "annotations[5]" in messages and "images[9]" in messages


def test_bad_categories_are_fatal_and_named(tmp_path):
    folder, content = _defect_corpus(tmp_path, images=1)
    content["categories"].append({"id": 1, "name": "again"})
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=r"categories\[1\].*duplicate category id 1"):
        CocoDataset(str(path), folder)


def test_check_data_reports_the_same_images_training_skips(corpus, tmp_path):
    from tf_centernet.data.check import check_dataset

    folder = os.path.dirname(corpus["good.jpg"])
    annotation_file = tmp_path / "train.json"
    annotation_file.write_text(json.dumps(_coco_for([corpus[n] for n in sorted(EXPECTED)])))
    config = load_config("demo", ["model.num_classes=1", f"train.model_dir={tmp_path / 'model'}"])
    report = check_dataset(CocoDataset(str(annotation_file), folder), config, decode_images=True)
    assert report.counts["unreadable_image"] == len(BAD)
    listed = "\n".join(report.examples)
    for name in BAD:
        assert name in listed
