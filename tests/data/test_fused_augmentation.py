"""Fused photometric augmentation == the step-by-step chain (docs/reference.md §6)."""

import numpy as np
import pytest
import tensorflow as tf

from support.augment_reference import augment_unfused
from tf_centernet.config import Config
from tf_centernet.data.augment import augment_for_training
from tf_centernet.data.photometric import photometric


@pytest.mark.parametrize("jitter, light", [(True, True), (True, False), (False, True), (False, False)])
def test_fused_equals_unfused_reference(jitter, light):
    config = Config().data
    config.input_size = 127
    config.color_jitter, config.lighting = jitter, light
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (150, 210, 3)).astype(np.uint8)
    boxes = tf.constant([[10.0, 20.0, 200.0, 140.0], [0, 0, 30, 30], [100, 100, 101, 101]])
    classes = tf.constant([0, 1, 2])
    fused_fn = tf.function(lambda s: augment_for_training(image, boxes, classes, config, seed=s))
    for i in range(6):
        seed = tf.constant([i, 99], tf.int64)
        fused, fused_boxes, fused_classes = fused_fn(seed)
        ref, ref_boxes, ref_classes = augment_unfused(image, boxes, classes, config, seed=seed)
        # Values are about N(0, 1) (normalised); float32 rounding of a
        # different but equivalent order of operations.
        np.testing.assert_allclose(fused.numpy(), ref.numpy(), rtol=1e-5, atol=2e-5)
        np.testing.assert_array_equal(fused_boxes.numpy(), ref_boxes.numpy())
        np.testing.assert_array_equal(fused_classes.numpy(), ref_classes.numpy())
    for training in (False,):
        fused = augment_for_training(image, boxes, classes, config, training=training)[0]
        ref = augment_unfused(image, boxes, classes, config, training=training)[0]
        np.testing.assert_allclose(fused.numpy(), ref.numpy(), rtol=1e-5, atol=2e-5)


def test_photometric_by_hand():
    # One pixel [255, 0, 0], factors as tests/test_data.py's hand example
    # (saturation 0.5, brightness 1.2, contrast 0.8): [0.68332, 0.20332,
    # 0.20332] in [0, 1]; then normalised with mean 0.5, std 0.25.
    out = photometric(
        tf.constant([[[255, 0, 0]]], tf.uint8),
        mean=[0.5, 0.5, 0.5],
        std=[0.25, 0.25, 0.25],
        jitter=([1.2, 0.8, 0.5], [2, 0, 1]),
    )
    expected = (np.array([0.68332, 0.20332, 0.20332]) - 0.5) / 0.25
    np.testing.assert_allclose(out.numpy()[0, 0], expected, atol=1e-5)
