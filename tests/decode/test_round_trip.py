"""Encode -> decode round trip across modules (docs/reference.md §4 and 7).

Ground-truth targets from `encode_targets`, turned into perfect head
outputs (logit +10 at each keypoint, -10 elsewhere; the exact offsets; one
embedding value per object), must decode back to the same boxes, classes and
(mean-of-keypoints) scores. This ties the target geometry (output/input
ratio, floor, offsets) to the decoding geometry (offset addition, ratio
division) without either module's code in the expectation.
"""

import numpy as np
import pytest
import tensorflow as tf

from tf_centernet.config import DecodeConfig
from tf_centernet.decode import ScaleGeometry, decode_detections
from tf_centernet.targets import encode_targets

INPUT, OUTPUT, CLASSES = 511, 128, 4


def perfect_outputs(boxes, classes, with_centers):
    t = encode_targets(
        tf.constant(boxes, tf.float32), tf.constant(classes, tf.int32),
        input_size=INPUT, output_size=OUTPUT, num_classes=CLASSES, max_objects=8,
        with_centers=with_centers,
    )
    n = len(boxes)
    outputs = {}
    keys = ("tl", "br", "ct") if with_centers else ("tl", "br")
    for key in keys:
        heat = t[f"{key}_heatmap"].numpy()
        outputs[f"{key}_heatmap"] = np.where(heat == 1.0, 10.0, -10.0).astype(np.float32)[None]
        offset = np.zeros((OUTPUT * OUTPUT, 2), np.float32)
        index = t[f"{key}_index"].numpy()[:n]
        offset[index] = t[f"{key}_offset"].numpy()[:n]
        outputs[f"{key}_offset"] = offset.reshape(1, OUTPUT, OUTPUT, 2)
        if key != "ct":
            embedding = np.zeros((OUTPUT * OUTPUT, 1), np.float32)
            embedding[index, 0] = 3.0 * np.arange(n)  # one value per object
            outputs[f"{key}_embedding"] = embedding.reshape(1, OUTPUT, OUTPUT, 1)
    return {k: tf.constant(v) for k, v in outputs.items()}


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.parametrize("with_centers", [True, False])
def test_targets_decode_back_to_the_boxes(with_centers):
    boxes = np.array(
        [[10.3, 20.7, 200.2, 150.9], [300.0, 40.5, 480.25, 400.0], [50.5, 300.1, 140.0, 500.0]], np.float32
    )
    classes = [2, 0, 2]
    outputs = perfect_outputs(boxes, classes, with_centers)
    geometry = ScaleGeometry(
        scale=1.0,
        borders=tf.constant([[0.0, INPUT, 0.0, INPUT]]),
        sizes=tf.constant([[float(INPUT), float(INPUT)]]),
        ratios=tf.constant([[OUTPUT / INPUT, OUTPUT / INPUT]]),
    )
    config = DecodeConfig(flip_test=False)
    result = decode_detections(outputs, geometry, config, use_centers=with_centers, flip_test=False)
    count = int(result["num_detections"][0])
    found = result["boxes"][0, :count].numpy()
    scores = result["scores"][0, :count].numpy()
    found_classes = result["classes"][0, :count].numpy()
    keypoint = 1.0 / (1.0 + np.exp(-10.0))  # sigmoid(10)
    confident = scores > 0.5
    assert confident.sum() == len(boxes)
    for box, cls in zip(boxes, classes):
        match = [i for i in np.nonzero(confident)[0] if found_classes[i] == cls and iou(found[i], box) > 0.9999]
        assert len(match) == 1, (box, found[confident], found_classes[confident])
        np.testing.assert_allclose(found[match[0]], box, atol=2e-3)
        # Mean of two corners (+ the center for CenterNet): all sigmoid(10).
        assert scores[match[0]] == pytest.approx(keypoint, rel=1e-5)
    # Nothing else scores above the keypoints' floor: sigmoid(-10) pairs only.
    assert (scores[~confident] < 1e-3).all()
