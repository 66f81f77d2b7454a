"""Tests of the COCO loader, augmentation (docs/reference.md §6) and the input pipeline."""

import collections
import copy
import json
import logging
import os

import cv2
import numpy as np
import pytest
import tensorflow as tf

from tf_centernet.config import Config
from tf_centernet.data import (
    CocoDataset,
    augment_for_training,
    build_train_dataset,
    clip_boxes,
    color_jitter,
    crop_border,
    flip_horizontal,
    full_image_crop,
    lighting,
    load_image,
    make_synthetic_coco,
    normalize,
    random_crop,
    random_flip,
    resize,
)
from tf_centernet.data.augment import EIGEN_VECTORS, apply_color_jitter


def seed(n):
    return tf.constant([n, 1234], tf.int64)


# --- augmentation ----------------------------------------------------------


@pytest.mark.parametrize(
    "border, size, expected",
    # 640 - 128 > 128 -> 128; 200 - 128 <= 128, 200 - 64 > 64 -> 64;
    # 100: 128 no, 64 no (36 <= 64), 32 yes -> 32; 1: only 0 fits.
    [(128, 640, 128), (128, 200, 64), (128, 100, 32), (128, 1, 0), (128, 257, 128), (128, 256, 64)],
)
def test_crop_border_by_hand(border, size, expected):
    assert int(crop_border(border, tf.constant(size))) == expected


def test_full_image_crop_by_hand():
    # H = 4, W = 6: side 6, center (3, 2); x0 = 0, x1 = 6; y0 = max(2 - 3, 0)
    # = 0, y1 = min(2 + 3, 4) = 4; pasted at row 3 - 2 = 1, column 0.
    image = np.arange(1, 4 * 6 * 3 + 1, dtype=np.uint8).reshape(4, 6, 3)
    out, boxes = full_image_crop(image, tf.constant([[1.0, 1.0, 3.0, 2.0]]))
    expected = np.zeros((6, 6, 3), np.uint8)
    expected[1:5] = image
    np.testing.assert_array_equal(out.numpy(), expected)
    np.testing.assert_allclose(boxes.numpy(), [[1, 2, 3, 3]])
    # Odd side (release quirk): H = 3, W = 5: side 5, center (2, 1); x1 = min(2
    # + 2, 5) = 4 so the last column is lost; rows pasted at 2 - 1 = 1.
    image = np.full((3, 5, 3), 7, np.uint8)
    out = full_image_crop(image, tf.zeros([0, 4]))[0].numpy()
    assert out.shape == (5, 5, 3)
    assert out[1:4, :4].min() == 7 and not out[:, 4].any() and not out[0].any()


def test_resize_and_clip_by_hand():
    image = np.zeros((100, 200, 3), np.uint8)
    out, boxes = resize(image, tf.constant([[10.0, 20.0, 190.0, 90.0]]), 50)
    assert out.shape == (50, 50, 3) and out.dtype == tf.uint8
    # x * 50 / 200, y * 50 / 100
    np.testing.assert_allclose(boxes.numpy(), [[2.5, 10, 47.5, 45]])
    boxes, classes = clip_boxes(
        tf.constant([[-5.0, 3, 60, 20], [55, 0, 70, 10], [10, 10, 10, 20], [1, 2, 3, 4]]),
        tf.constant([0, 1, 2, 3]),
        50,
        50,
    )
    # -> [0, 3, 49, 20]; [49, 0, 49, 10] dropped (width 0); zero width dropped.
    np.testing.assert_allclose(boxes.numpy(), [[0, 3, 49, 20], [1, 2, 3, 4]])
    np.testing.assert_array_equal(classes.numpy(), [0, 3])


def test_flip_twice_is_identity_and_by_hand():
    image = np.random.default_rng(0).integers(0, 255, (8, 10, 3)).astype(np.uint8)
    boxes = tf.constant([[0.0, 1.0, 4.0, 5.0], [2.5, 0.0, 9.0, 7.0]])
    flipped_image, flipped = flip_horizontal(image, boxes)
    # x' = W - x - 1 = 9 - x with x1 and x2 swapped.
    np.testing.assert_allclose(flipped.numpy(), [[5, 1, 9, 5], [0, 0, 6.5, 7]])
    np.testing.assert_array_equal(flipped_image.numpy()[:, 0], image[:, 9])
    back_image, back = flip_horizontal(flipped_image, flipped)
    np.testing.assert_allclose(back.numpy(), boxes.numpy())
    np.testing.assert_array_equal(back_image.numpy(), image)


def test_random_flip_probability_extremes():
    image = np.zeros((4, 6, 3), np.uint8)
    boxes = tf.constant([[0.0, 0.0, 2.0, 2.0]])
    assert np.allclose(random_flip(image, boxes, 0.0, seed(0))[1].numpy(), [[0, 0, 2, 2]])
    assert np.allclose(random_flip(image, boxes, 1.0, seed(0))[1].numpy(), [[3, 0, 5, 2]])
    flips = [float(random_flip(image, boxes, 0.5, seed(i))[1][0, 0]) == 3.0 for i in range(40)]
    assert 5 < sum(flips) < 35


@pytest.mark.parametrize("trial", range(6))
def test_random_crop_keeps_box_alignment(trial):
    """A white box on black: after crop + resize the box covers the bright pixels."""
    image = np.zeros((200, 300, 3), np.uint8)
    image[50:100, 80:160] = 255  # box [80, 50, 160, 100] (x2, y2 exclusive)
    boxes = tf.constant([[80.0, 50.0, 160.0, 100.0]])
    crop, moved = random_crop(image, boxes, [2.0], 64, border=128, seed=seed(trial))
    assert crop.shape == (128, 128, 3)
    # The crop itself is a pure translation: pixels equal exactly.
    x1, y1, x2, y2 = moved.numpy()[0]
    bright = crop.numpy()[..., 0] > 0
    ys, xs = np.nonzero(bright)
    if len(xs):
        assert xs.min() >= x1 and xs.max() < x2 and ys.min() >= y1 and ys.max() < y2
        inside_x = np.clip([x1, x2], 0, 128).astype(int)
        inside_y = np.clip([y1, y2], 0, 128).astype(int)
        assert bright[inside_y[0]:inside_y[1], inside_x[0]:inside_x[1]].all()
    # Then resize to 64 (x 0.5) and clip: bright pixels stay inside the box.
    small, scaled = resize(crop, moved, 64)
    scaled, _ = clip_boxes(scaled, tf.constant([0]), 64, 64)
    bright = small.numpy()[..., 0] > 127
    if scaled.shape[0] == 0:
        assert not bright[1:-1, 1:-1].any()
        return
    x1, y1, x2, y2 = scaled.numpy()[0]
    ys, xs = np.nonzero(bright)
    if len(xs):
        assert xs.min() >= x1 - 1 and xs.max() <= x2 and ys.min() >= y1 - 1 and ys.max() <= y2
    # Pixels well inside the box are bright.
    inner = bright[int(np.ceil(y1)) + 1:int(y2) - 1, int(np.ceil(x1)) + 1:int(x2) - 1]
    assert inner.all()


def test_random_crop_center_range():
    # W = 300: w_border = 128, center x in [128, 172); H = 200: h_border 64,
    # center y in [64, 136). A crop of 100 x 100 (scale 1, view 100) puts the
    # image pixel (cx, cy) at (50, 50): shift = 50 - c.
    image = np.zeros((200, 300, 3), np.uint8)
    for i in range(30):
        _, moved = random_crop(image, tf.zeros([1, 4]), [1.0], 100, border=128, seed=seed(i))
        cx, cy = 50 - moved.numpy()[0, :2]
        assert 128 <= cx < 172 and 64 <= cy < 136


def test_color_jitter_by_hand():
    # One pixel [1, 0, 0]: gs = 0.299 (taken once), mean(gs) = 0.299.
    # Factors (brightness 1.2, contrast 0.8, saturation 0.5), order
    # saturation, brightness, contrast:
    #   saturation: 0.5 * x + 0.5 * 0.299 -> [0.6495, 0.1495, 0.1495]
    #   brightness: * 1.2                 -> [0.7794, 0.1794, 0.1794]
    #   contrast:   0.8 * x + 0.2 * 0.299 -> [0.68332, 0.20332, 0.20332]
    out = apply_color_jitter(tf.constant([[[1.0, 0.0, 0.0]]]), [1.2, 0.8, 0.5], [2, 0, 1])
    np.testing.assert_allclose(out.numpy()[0, 0], [0.68332, 0.20332, 0.20332], atol=1e-6)


def test_color_jitter_random_invariants():
    # A gray image stays gray and uniform whatever the factors and order; the
    # value stays within 0.5 +- 0.5 * 0.4 * 1.4 * 1.4 (brightness first, then
    # both blends towards 0.5) or 0.5 * 1.4 (brightness last).
    image = tf.fill([5, 7, 3], 0.5)
    values = []
    for i in range(10):
        out = color_jitter(image, 0.4, seed(i)).numpy()
        assert np.allclose(out, out[0, 0, 0], atol=1e-6)
        values.append(out[0, 0, 0])
    assert 0.1 <= min(values) and max(values) <= 0.9 and np.std(values) > 0
    colour = tf.random.stateless_uniform([4, 4, 3], seed=[3, 4])
    np.testing.assert_allclose(color_jitter(colour, 0.0, seed(1)).numpy(), colour.numpy(), atol=1e-6)


def test_lighting_adds_one_vector_in_rgb_order():
    # The release row for B is [-0.58752847, ...]; RGB order puts R's row,
    # [-0.56089297, 0.71832671, 0.41158938], first.
    np.testing.assert_allclose(EIGEN_VECTORS[0], [-0.56089297, 0.71832671, 0.41158938])
    np.testing.assert_allclose(EIGEN_VECTORS[2], [-0.58752847, -0.69563484, 0.41340352])
    image = tf.random.stateless_uniform([6, 5, 3], seed=[1, 2])
    delta = (lighting(image, 0.1, seed(3)) - image).numpy()
    assert np.allclose(delta, delta[0, 0], atol=1e-6)
    assert np.abs(delta[0, 0]).max() > 0
    assert np.allclose(lighting(image, 0.0, seed(3)).numpy(), image.numpy())


def test_normalize_by_hand():
    out = normalize(tf.fill([1, 1, 3], 0.5), [0.5, 0.25, 0.0], [0.5, 0.25, 0.5])
    np.testing.assert_allclose(out.numpy()[0, 0], [0.0, 1.0, 1.0])


def test_augment_for_training_invariants():
    config = Config().data
    config.input_size = 127
    image = np.random.default_rng(1).integers(0, 255, (180, 240, 3)).astype(np.uint8)
    boxes = tf.constant([[10.0, 20.0, 200.0, 170.0], [0, 0, 30, 30], [100, 100, 101, 101]])
    classes = tf.constant([0, 1, 2])
    for i in range(8):
        out, b, c = augment_for_training(image, boxes, classes, config, seed=seed(i))
        assert out.shape == (127, 127, 3) and out.dtype == tf.float32
        assert np.isfinite(out.numpy()).all()
        b = b.numpy()
        assert b.shape[0] == c.shape[0] <= 3
        assert (b >= 0).all() and (b <= 126).all()
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
    # Same seed, same output.
    a = augment_for_training(image, boxes, classes, config, seed=seed(5))[0]
    b = augment_for_training(image, boxes, classes, config, seed=seed(5))[0]
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_augment_eval_mode_by_hand():
    # 100 x 200 image: square of side 200 around (100, 50): rows pasted at
    # 100 - 50 = 50, so y + 50; then resize by 127 / 200.
    config = Config().data
    config.input_size = 127
    image = np.full((100, 200, 3), 255, np.uint8)
    out, boxes, _ = augment_for_training(
        image, tf.constant([[20.0, 10.0, 120.0, 60.0]]), tf.constant([0]), config, training=False
    )
    np.testing.assert_allclose(boxes.numpy(), [[20 * 0.635, 60 * 0.635, 120 * 0.635, 110 * 0.635]], rtol=1e-5)
    # Padding (zeros) normalises to -mean / std, the image to (1 - mean) / std.
    mean, std = np.array(config.mean), np.array(config.std)
    np.testing.assert_allclose(out.numpy()[0, 0], -mean / std, rtol=1e-5)
    np.testing.assert_allclose(out.numpy()[63, 63], (1 - mean) / std, rtol=1e-5)


# --- COCO loader -----------------------------------------------------------


def test_coco_tiny_loader(coco_tiny):
    annotation_file, image_dir = coco_tiny["train"]
    with open(annotation_file) as handle:
        raw = json.load(handle)
    crowd = sum(a["iscrowd"] for a in raw["annotations"])
    dataset = CocoDataset(annotation_file, image_dir)
    assert len(dataset) == len(raw["images"]) == 80
    assert dataset.num_classes == 80
    assert dataset.category_ids == sorted(c["id"] for c in raw["categories"])
    names = {c["id"]: c["name"] for c in raw["categories"]}
    assert dataset.class_names == [names[i] for i in dataset.category_ids]
    assert dataset.skipped == {"crowd": crowd}
    assert dataset.num_objects == len(raw["annotations"]) - crowd
    # One annotation converted by hand: [x, y, w, h] -> [x, y, x + w, y + h].
    ann = next(a for a in raw["annotations"] if not a["iscrowd"])
    record = next(r for r in dataset.records if r.image_id == ann["image_id"])
    x, y, w, h = ann["bbox"]
    row = np.where(np.all(np.isclose(record.boxes, [x, y, x + w, y + h]), axis=1))[0]
    assert len(row) >= 1
    assert record.classes[row[0]] == dataset.category_ids.index(ann["category_id"])
    assert os.path.isfile(record.file_name)
    assert record.boxes.dtype == np.float32 and record.classes.dtype == np.int32
    keep = CocoDataset(annotation_file, image_dir, crowd="keep")
    assert keep.num_objects == len(raw["annotations"]) and keep.skipped == {}
    image = load_image(record.file_name)
    assert image.dtype == np.uint8 and image.shape == (record.height, record.width, 3)


def test_coco_errors(tmp_path, synthetic_coco):
    image_dir, annotation_file = synthetic_coco
    with pytest.raises(FileNotFoundError, match="annotation"):
        CocoDataset(str(tmp_path / "nope.json"), image_dir)
    with pytest.raises(FileNotFoundError, match="folder"):
        CocoDataset(annotation_file, str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="crowd"):
        CocoDataset(annotation_file, image_dir, crowd="ignore")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="parse"):
        CocoDataset(str(bad), image_dir)
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="annotations"):
        CocoDataset(str(bad), image_dir)


def test_coco_bad_input_skipped_and_logged_once(tmp_path, synthetic_coco, caplog):
    image_dir, annotation_file = synthetic_coco
    with open(annotation_file) as handle:
        raw = json.load(handle)
    raw = copy.deepcopy(raw)
    anns = raw["annotations"]
    anns[0]["bbox"] = [float("nan"), 1.0, 5.0, 5.0]
    anns[1]["bbox"] = [3.0, 3.0, 0.0, 5.0]
    anns[2]["bbox"] = [3.0, 3.0, 4.0, -1.0]
    anns[3]["iscrowd"] = 1
    raw["images"].append({"id": 999, "file_name": "missing.jpg", "height": 10, "width": 10})
    raw["images"].append({"id": 1000, "file_name": raw["images"][0]["file_name"], "height": 160, "width": 200})
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(raw))
    with caplog.at_level(logging.WARNING, logger="tf_centernet.data.coco"):
        dataset = CocoDataset(str(path), image_dir)
    assert dataset.skipped == {"nan_box": 1, "degenerate_box": 2, "crowd": 1, "missing_image": 1}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "missing_image" in warnings[0].getMessage()
    # Images without objects are kept.
    empty = [r for r in dataset.records if r.image_id == 1000]
    assert len(empty) == 1 and empty[0].boxes.shape == (0, 4)
    assert len(dataset) == len(raw["images"]) - 1


def test_load_image_rgb_and_errors(tmp_path):
    path = str(tmp_path / "red.png")
    cv2.imwrite(path, np.dstack([np.zeros((4, 5)), np.zeros((4, 5)), np.full((4, 5), 255)]).astype(np.uint8))
    image = load_image(path)
    assert image.shape == (4, 5, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[0, 0], [255, 0, 0])
    with pytest.raises(FileNotFoundError):
        load_image(str(tmp_path / "nope.jpg"))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="decode"):
        load_image(str(broken))


# --- synthetic data --------------------------------------------------------


def test_synthetic_coco(tmp_path, synthetic_coco):
    image_dir, annotation_file = synthetic_coco
    with open(annotation_file) as handle:
        raw = json.load(handle)
    assert [c["name"] for c in raw["categories"]] == ["rectangle", "ellipse", "triangle"]
    per_image = collections.Counter(a["image_id"] for a in raw["annotations"])
    assert len(raw["images"]) == 16
    assert all(1 <= per_image[i["id"]] <= 4 for i in raw["images"])
    touching = [
        a for a in raw["annotations"]
        if a["bbox"][0] == 0 or a["bbox"][1] == 0
        or a["bbox"][0] + a["bbox"][2] == 200 or a["bbox"][1] + a["bbox"][3] == 160
    ]
    assert touching, "some objects should touch the image border"
    assert all(a["iscrowd"] == 0 and a["area"] > 0 for a in raw["annotations"])
    dataset = CocoDataset(annotation_file, image_dir)
    assert dataset.skipped == {} and dataset.num_classes == 3
    assert load_image(dataset.records[0].file_name).shape == (160, 200, 3)
    # Deterministic for a seed.
    again_dir, again_file = make_synthetic_coco(str(tmp_path / "again"), num_images=16, seed=0)
    with open(again_file) as handle:
        assert json.load(handle) == raw
    name = raw["images"][3]["file_name"]
    with open(os.path.join(image_dir, name), "rb") as a, open(os.path.join(again_dir, name), "rb") as b:
        assert a.read() == b.read()


def test_synthetic_boxes_are_tight(synthetic_coco):
    """The last-drawn (unoccluded) shape's colour spans its box, within JPEG blur."""
    image_dir, annotation_file = synthetic_coco
    dataset = CocoDataset(annotation_file, image_dir)
    palette = {0: (220, 40, 40), 1: (40, 200, 60), 2: (40, 80, 230)}
    checked = 0
    for record in dataset.records:
        x1, y1, x2, y2 = record.boxes[-1].astype(int)
        label = int(record.classes[-1])
        # Skip when another object of the same colour is near this one.
        near = [
            b for b, c in zip(record.boxes[:-1], record.classes[:-1])
            if c == label and b[0] < x2 + 3 and b[2] > x1 - 3 and b[1] < y2 + 3 and b[3] > y1 - 3
        ]
        if near:
            continue
        image = load_image(record.file_name).astype(int)
        ya, xa = max(y1 - 3, 0), max(x1 - 3, 0)
        region = image[ya:y2 + 3, xa:x2 + 3]
        close = np.abs(region - np.array(palette[label])).sum(-1) < 90
        ys, xs = np.nonzero(close)
        assert abs(xs.min() + xa - x1) <= 2 and abs(xs.max() + xa + 1 - x2) <= 2
        assert abs(ys.min() + ya - y1) <= 2 and abs(ys.max() + ya + 1 - y2) <= 2
        checked += 1
    assert checked >= 8


# --- pipeline --------------------------------------------------------------


def check_batch(images, targets, batch, size, num_classes, with_centers=True):
    out = (size + 1) // 4  # stride 4 (DataConfig.output_size)
    assert images.shape == (batch, size, size, 3) and images.dtype == tf.float32
    assert np.isfinite(images.numpy()).all()
    kinds = ("tl", "br", "ct") if with_centers else ("tl", "br")
    expected_keys = {f"{k}_{n}" for k in kinds for n in ("heatmap", "offset", "index")}
    assert set(targets) == expected_keys | {"mask", "num_objects"}
    mask = targets["mask"].numpy()
    assert mask.shape == (batch, 128) and set(np.unique(mask)) <= {0.0, 1.0}
    assert (targets["num_objects"].numpy() >= mask.sum(1)).all()
    for k in kinds:
        heatmap = targets[f"{k}_heatmap"].numpy()
        assert heatmap.shape == (batch, out, out, num_classes) and heatmap.dtype == np.float32
        assert heatmap.min() >= 0 and heatmap.max() <= 1
        index = targets[f"{k}_index"].numpy()
        assert index.dtype == np.int32 and (index >= 0).all() and (index < out * out).all()
        assert not index[mask == 0].any()
        offset = targets[f"{k}_offset"].numpy()
        assert offset.shape == (batch, 128, 2) and (offset >= 0).all() and (offset < 1).all()
        # Each filled slot sits on an exact 1 of its heatmap.
        flat = heatmap.reshape(batch, out * out, num_classes).max(-1)
        for b in range(batch):
            assert (flat[b, index[b, mask[b] == 1]] == 1.0).all()


def test_pipeline_coco_tiny(coco_tiny):
    annotation_file, image_dir = coco_tiny["val"]
    dataset = CocoDataset(annotation_file, image_dir)
    config = Config()
    config.data.input_size = 127
    images, targets = next(iter(build_train_dataset(dataset, config, batch_size=2)))
    check_batch(images, targets, 2, 127, 80)


def test_pipeline_synthetic_eval_and_cornernet(synthetic_coco):
    image_dir, annotation_file = synthetic_coco
    dataset = CocoDataset(annotation_file, image_dir)
    config = Config()
    config.model.num_classes = 3
    config.model.architecture = "cornernet"
    config.data.input_size = 63
    pipeline = build_train_dataset(dataset, config, batch_size=4, shuffle=False, repeat=False, augment=False)
    batches = list(pipeline)
    assert len(batches) == 4  # 16 images, drop_remainder
    images, targets = batches[0]
    check_batch(images, targets, 4, 63, 3, with_centers=False)
    # No random crop: every object survives with its slot.
    counts = [r.num_objects for r in dataset.records[:4]]
    np.testing.assert_array_equal(targets["num_objects"].numpy(), counts)
    np.testing.assert_array_equal(targets["mask"].numpy().sum(1), counts)


def test_pipeline_is_reproducible_and_checks_classes(synthetic_coco):
    image_dir, annotation_file = synthetic_coco
    dataset = CocoDataset(annotation_file, image_dir)
    config = Config()
    config.model.num_classes = 3
    config.data.input_size = 63
    first = next(iter(build_train_dataset(dataset, config, batch_size=2)))
    second = next(iter(build_train_dataset(dataset, config, batch_size=2)))
    np.testing.assert_array_equal(first[0].numpy(), second[0].numpy())
    np.testing.assert_array_equal(first[1]["tl_heatmap"].numpy(), second[1]["tl_heatmap"].numpy())
    config.model.num_classes = 80
    with pytest.raises(ValueError, match="num_classes"):
        build_train_dataset(dataset, config)
