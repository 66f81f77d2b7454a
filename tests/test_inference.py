"""Tests of `tf_centernet.inference` (docs/reference.md §7.5) and `tf_centernet.visualize`."""

import dataclasses

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from support.decode_helpers import RectangleOracle, draw_rectangles, iou
from tf_centernet.config import Config, DecodeConfig, ModelConfig
from tf_centernet.inference import Predictor, pad_batch, preprocess_images
from tf_centernet.visualize import class_color, draw_detections

MEAN = Config().data.mean
STD = Config().data.std


def make_config(architecture="centernet", num_classes=3, **decode_changes):
    decode = dataclasses.replace(
        DecodeConfig(top_k=20, num_dets=100, max_detections=20), **decode_changes
    )
    return Config(
        model=ModelConfig(architecture=architecture, num_classes=num_classes),
        decode=decode,
    )


# ---------------------------------------------------------------------------
# Preprocessing.
# ---------------------------------------------------------------------------


def test_preprocess_centres_each_image_in_a_common_canvas():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)  # h 200, w 300
    b = rng.integers(0, 256, (150, 100, 3), dtype=np.uint8)
    batch, sizes = pad_batch([a, b])
    canvas, geo = preprocess_images(tf.constant(batch), tf.constant(sizes), 1.0, MEAN, STD)
    # 200 | 127 = 255 and 300 | 127 = 383 (the larger image sets the canvas).
    assert canvas.shape == (2, 255, 383, 3)
    def norm(img):
        return (img / 255.0 - np.array(MEAN)) / np.array(STD)
    # Image a: top = 255 // 2 - 200 // 2 = 27, left = 383 // 2 - 300 // 2 = 41.
    np.testing.assert_allclose(canvas[0, 27:227, 41:341], norm(a), atol=1e-5)
    # Image b: top = 127 - 75 = 52, left = 191 - 50 = 141.
    np.testing.assert_allclose(canvas[1, 52:202, 141:241], norm(b), atol=1e-5)
    # Padding is a zero pixel, normalised (as in the releases).
    np.testing.assert_allclose(canvas[1, 0, 0], norm(np.zeros(3)), atol=1e-6)
    np.testing.assert_allclose(canvas[0, 26, 41], norm(np.zeros(3)), atol=1e-6)
    np.testing.assert_array_equal(geo.borders, [[27, 227, 41, 341], [52, 202, 141, 241]])
    np.testing.assert_array_equal(geo.sizes, [[200, 300], [150, 100]])
    np.testing.assert_allclose(geo.ratios, [[64 / 255, 96 / 383]] * 2, rtol=1e-7)


def test_preprocess_resize_matches_opencv_within_one_level():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (101, 77, 3), dtype=np.uint8)
    batch, sizes = pad_batch([image])
    for scale in (0.6, 1.5):
        canvas, geo = preprocess_images(
            tf.constant(batch), tf.constant(sizes), scale, [0, 0, 0], [1 / 255] * 3
        )
        hs, ws = int(101 * scale), int(77 * scale)
        np.testing.assert_array_equal(geo.sizes, [[hs, ws]])
        top, left = int(geo.borders[0, 0]), int(geo.borders[0, 2])
        assert canvas.shape[1:3] == (hs | 127, ws | 127)
        ours = canvas[0, top : top + hs, left : left + ws].numpy()
        reference = cv2.resize(image, (ws, hs)).astype(np.float32)
        assert np.abs(ours - reference).max() <= 1.0 + 1e-3  # fixed-point vs float


# ---------------------------------------------------------------------------
# Encode -> decode round trips with a fake detector.
# ---------------------------------------------------------------------------

COLORS = [(200, 40, 40), (40, 200, 40), (40, 40, 200)]


def check_round_trip(predictor, images, objects, min_iou=0.999):
    results = predictor.predict_images(images, batch_size=len(images))
    for result, objs in zip(results, objects):
        for rect, cls in objs:
            mine = result["classes"] == cls
            assert mine.any(), f"class {cls} not detected"
            best = np.argmax(np.where(mine, result["scores"], -1))
            assert result["scores"][best] > 0.99
            assert iou(result["boxes"][best], rect) >= min_iou, (result["boxes"][best], rect)
    return results


@pytest.mark.parametrize("architecture", ["centernet", "cornernet"])
def test_round_trip_odd_sizes_batch_and_flip(architecture):
    # Image 1: 300 wide x 200 high; image 2: 180 x 261. Rectangles as
    # (x1, y1, x2, y2) with exclusive ends, i.e. the boxes in pixels.
    objects = [
        [((37, 21, 140, 97), 0), ((190, 60, 281, 187), 2)],
        [((11, 150, 170, 250), 1), ((60, 5, 95, 40), 0)],
    ]
    images = [
        draw_rectangles(200, 300, [r for r, _ in objects[0]], [COLORS[0], COLORS[2]]),
        draw_rectangles(261, 180, [r for r, _ in objects[1]], [COLORS[1], COLORS[0]]),
    ]
    config = make_config(architecture)
    model = RectangleOracle(
        COLORS, [0, 1, 2], 3, MEAN, STD, with_centers=architecture == "centernet"
    )
    predictor = Predictor(model, config)
    assert predictor.flip_test and predictor.use_centers == (architecture == "centernet")
    results = check_round_trip(predictor, images, objects)
    # Flip test: every object also comes back from the mirrored input, with
    # its score decayed by soft-NMS against its (identical) twin.
    for result, objs in zip(results, objects):
        for rect, cls in objs:
            twins = [i for i in range(len(result["scores"]))
                     if result["classes"][i] == cls and iou(result["boxes"][i], rect) > 0.999]
            assert len(twins) == 2
    # One batch of two sizes gives what two batches of one give.
    singles = [predictor.predict_images([image])[0] for image in images]
    for single, batched in zip(singles, results):
        np.testing.assert_allclose(single["boxes"], batched["boxes"], atol=1e-3)
        np.testing.assert_allclose(single["scores"], batched["scores"], atol=1e-6)


def test_round_trip_without_flip_finds_each_object_once():
    objects = [[((37, 21, 140, 97), 0), ((190, 60, 281, 187), 2)]]
    images = [draw_rectangles(200, 300, [r for r, _ in objects[0]], [COLORS[0], COLORS[2]])]
    model = RectangleOracle(COLORS, [0, 1, 2], 3, MEAN, STD)
    results = check_round_trip(Predictor(model, make_config(flip_test=False)), images, objects)
    assert len(results[0]["scores"]) == 2


def test_round_trip_multi_scale_uses_scale_one_centers():
    objects = [[((30, 20, 180, 140), 1)]]
    images = [draw_rectangles(151, 203, [objects[0][0][0]], [COLORS[1]])]
    config = make_config(test_scales=[1.0, 0.75])
    predictor = Predictor(RectangleOracle(COLORS, [0, 1, 2], 3, MEAN, STD), config)
    results = check_round_trip(predictor, images, objects)
    # Scale 0.75 finds the (blurred-edge) rectangle too: at most about one
    # resized pixel off per side.
    close = [b for b, c in zip(results[0]["boxes"], results[0]["classes"])
             if c == 1 and iou(b, objects[0][0][0]) > 0.93]
    assert len(close) == 4  # 2 scales x 2 flips


def test_round_trip_center_scale_other_than_one():
    """``decode.center_scale`` 0.5 with ``test_scales [0.5]``: centers of that scale filter the boxes."""
    objects = [[((30, 20, 180, 140), 1)]]
    images = [draw_rectangles(151, 203, [objects[0][0][0]], [COLORS[1]])]
    model = RectangleOracle(COLORS, [0, 1, 2], 3, MEAN, STD)
    with pytest.raises(ValueError, match="scale 1 .*lack it"):
        Predictor(model, make_config(test_scales=[0.5]))
    predictor = Predictor(model, make_config(test_scales=[0.5], center_scale=0.5))
    # One resized pixel off per side at most; a score > 0.99: kept by the filter.
    check_round_trip(predictor, images, objects, min_iou=0.93)
    with pytest.raises(ValueError, match="scale 0.5"):
        Predictor(model, make_config(test_scales=[1.0], center_scale=0.5))


def test_bccd_small_tests_at_its_center_scale():
    """configs/bccd_small.yaml trains on shrunk crops and tests at scale 0.5 with that scale's centers."""
    from tf_centernet.config import load_config

    config = load_config("bccd_small")
    assert config.decode.test_scales == [0.5] and config.decode.center_scale == 0.5
    assert min(config.data.rand_scales) > 1.0  # crops are shrunk: a white cell fits whole
    predictor = Predictor(None, config)
    assert predictor.scales == (0.5,) and predictor.use_centers


def test_predictor_with_keras_model_and_signature():
    inputs = keras.Input((None, None, 3))
    feat = keras.layers.Conv2D(8, 3, strides=4, padding="same")(inputs)
    outputs = {
        "tl_heatmap": keras.layers.Conv2D(3, 1)(feat),
        "br_heatmap": keras.layers.Conv2D(3, 1)(feat),
        "ct_heatmap": keras.layers.Conv2D(3, 1)(feat),
        "tl_embedding": keras.layers.Conv2D(1, 1)(feat),
        "br_embedding": keras.layers.Conv2D(1, 1)(feat),
        "tl_offset": keras.layers.Conv2D(2, 1)(feat),
        "br_offset": keras.layers.Conv2D(2, 1)(feat),
        "ct_offset": keras.layers.Conv2D(2, 1)(feat),
    }
    model = keras.Model(inputs, outputs)
    weights = [w.numpy() for w in model.weights]
    predictor = Predictor(model, make_config(score_threshold=0.0))
    images = np.random.default_rng(0).integers(0, 256, (2, 90, 120, 3), dtype=np.uint8)
    out = predictor(images, np.array([[90, 120], [70, 50]], np.int32))
    assert out["boxes"].shape == (2, 20, 4) and out["boxes"].dtype == tf.float32
    assert out["scores"].shape == (2, 20)
    assert out["classes"].dtype == tf.int32 and out["num_detections"].dtype == tf.int32
    n = out["num_detections"].numpy()
    assert ((0 <= n) & (n <= 20)).all()
    # Boxes lie in each image.
    boxes = out["boxes"].numpy()
    assert (boxes[1, :, 2] <= 50 + 1e-4).all() and (boxes[1, :, 3] <= 70 + 1e-4).all()
    signature = predictor.predict.get_concrete_function()
    assert signature.structured_input_signature[0][0].shape.as_list() == [None, None, None, 3]
    for before, after in zip(weights, model.weights):
        np.testing.assert_array_equal(before, after.numpy())


def test_bad_inputs_raise_clear_errors():
    predictor = Predictor(RectangleOracle(COLORS, [0, 1, 2], 3, MEAN, STD), make_config())
    with pytest.raises(TypeError, match="uint8"):
        predictor(np.zeros((1, 64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="batch, height, width, 3"):
        predictor(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="within"):
        predictor(np.zeros((1, 64, 64, 3), np.uint8), np.array([[65, 64]], np.int32))
    with pytest.raises(TypeError, match="uint8"):
        predictor.predict_images([np.zeros((64, 64, 3), np.float32)])
    with pytest.raises(ValueError, match="height, width, 3"):
        predictor.predict_images([np.zeros((64, 64), np.uint8)])
    with pytest.raises(ValueError, match="scale 1"):
        Predictor(None, make_config(test_scales=[0.5, 1.5]))


# ---------------------------------------------------------------------------
# Visualisation.
# ---------------------------------------------------------------------------


def test_draw_detections():
    image = np.zeros((120, 160, 3), np.uint8)
    drawn = draw_detections(
        image, [[10, 20, 100, 90], [5, 5, 30, 30]], [0.9, 0.1], [2, 1],
        ["a", "b", "c"], score_threshold=0.3,
    )
    assert drawn.dtype == np.uint8 and drawn.shape == image.shape
    assert image.sum() == 0  # the input is untouched
    assert tuple(drawn[60, 10]) == class_color(2)  # left edge of the kept box
    assert drawn[17, 5].sum() == 0  # the 0.1 box is below the threshold
    assert class_color(2) == class_color(2) and class_color(1) != class_color(2)
    with pytest.raises(TypeError):
        draw_detections(image.astype(np.float32), [], [], [])
