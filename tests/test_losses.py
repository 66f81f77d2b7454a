"""Losses against hand-derived values and invariants (docs/reference.md §5)."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tf_centernet import losses
from tf_centernet.config import LossConfig

LOG2 = math.log(2.0)


def test_focal_loss_hand_values():
    # Two cells of one class: a positive (target 1) and a negative (target
    # 0.5), both with logit 0 -> p = 0.5.
    logits = tf.zeros([1, 1, 2, 1])
    target = tf.constant([[[[1.0], [0.5]]]])
    pos = 0.25 * LOG2  # (1 - p)^2 * -log p
    neg = (0.5**4) * 0.25 * LOG2  # (1 - y)^4 p^2 * -log(1 - p)
    assert float(losses.focal_loss(logits, target)) == pytest.approx(pos + neg, rel=1e-6)


def test_focal_loss_divides_by_positives_of_the_batch():
    logits = tf.zeros([2, 1, 2, 1])
    target = tf.constant([[[[1.0], [0.0]]], [[[1.0], [1.0]]]])
    pos = 0.25 * LOG2
    neg = 0.25 * LOG2  # y = 0: (1 - y)^4 = 1
    expected = (3 * pos + neg) / 3.0
    assert float(losses.focal_loss(logits, target)) == pytest.approx(expected, rel=1e-6)


def test_focal_loss_without_positives_is_negative_sum():
    logits = tf.constant([[[[0.0], [math.log(3.0)]]]])  # p = 0.5 and 0.75
    target = tf.constant([[[[0.0], [0.2]]]])
    expected = 0.25 * LOG2 + (0.8**4) * (0.75**2) * -math.log(0.25)
    assert float(losses.focal_loss(logits, target)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("alpha,beta,dtype", [(2.0, 4.0, tf.float32), (3.0, 1.5, tf.float32), (2.0, 4.0, tf.bfloat16)])
def test_focal_loss_gradient_in_closed_form_equals_autodiff_of_the_terms(alpha, beta, dtype):
    """`focal_loss`'s hand-written derivative against TensorFlow's derivative of eq. 1 term by term.

    Logits span the clamp (|x| up to 12: p beyond [1e-4, 1 - 1e-4] gets no
    gradient), targets mix exact positives, Gaussian values and zeros.
    """
    rng = np.random.default_rng(0)
    logits = tf.cast(tf.constant(rng.uniform(-12, 12, (2, 9, 7, 3)).astype("float32")), dtype)
    target = rng.choice([0.0, 0.3, 0.8, 1.0], size=(2, 9, 7, 3), p=[0.5, 0.2, 0.2, 0.1]).astype("float32")
    target = tf.constant(target)

    def reference(x):
        terms, positive = losses.focal_loss_elements(x, target, alpha, beta)
        return tf.reduce_sum(terms) / tf.maximum(tf.reduce_sum(positive), 1.0)

    for fn in (reference, lambda x: losses.focal_loss(x, target, alpha, beta)):
        with tf.GradientTape() as tape:
            tape.watch(logits)
            value = fn(logits)
        grad = tape.gradient(value, logits)
        if fn is reference:
            expected_value, expected_grad = float(value), tf.cast(grad, tf.float32).numpy()
    assert float(value) == pytest.approx(expected_value, rel=1e-5)
    got = tf.cast(grad, tf.float32).numpy()
    assert grad.dtype == dtype and np.any(got == 0.0) and np.any(got != 0.0)  # clamped cells get none
    np.testing.assert_allclose(got, expected_grad, rtol=2e-3 if dtype == tf.bfloat16 else 1e-4, atol=1e-6)


def test_focal_loss_clamps_probabilities():
    # A confident wrong negative: p clamps at 1 - 1e-4, so the loss is finite.
    value = float(losses.focal_loss(tf.constant([[[[50.0]]]]), tf.constant([[[[0.0]]]])))
    assert value == pytest.approx(-math.log(1e-4) * (1 - 1e-4) ** 2, rel=1e-3)


def test_embedding_loss_hand_values():
    mask = tf.constant([[1.0, 1.0, 0.0]])
    # Means 0.5 and 2.0: pull = (0.25 + 0.25) / 2, push = 0 (|0.5 - 2| > 1).
    pull, push = losses.embedding_loss(tf.constant([[0.0, 2.0, 9.0]]), tf.constant([[1.0, 2.0, -9.0]]), mask)
    assert float(pull) == pytest.approx(0.25)
    assert float(push) == pytest.approx(0.0)
    # Means 0 and 0.2: two ordered pairs of 0.8, divided by N (N - 1) = 2.
    pull, push = losses.embedding_loss(tf.constant([[0.0, 0.2, 5.0]]), tf.constant([[0.0, 0.2, 5.0]]), mask)
    assert float(pull) == pytest.approx(0.0)
    assert float(push) == pytest.approx(0.8, rel=1e-6)


def test_embedding_loss_three_objects():
    tl = np.array([[0.0, 0.5, 3.0]], np.float32)
    br = np.array([[0.2, 0.5, 3.4]], np.float32)
    mean = (tl + br) / 2  # 0.1, 0.5, 3.2
    pull_expected = ((0.1**2) * 2 + 0 + (0.2**2) * 2) / 3
    # Ordered pairs (6): |0.1 - 0.5| = 0.4 -> 0.6 twice; others > 1 -> 0.
    push_expected = (0.6 * 2) / 6
    pull, push = losses.embedding_loss(tl, br, tf.ones([1, 3]))
    assert float(pull) == pytest.approx(pull_expected, rel=1e-5)
    assert float(push) == pytest.approx(push_expected, rel=1e-5)
    assert mean.shape == (1, 3)


def test_embedding_loss_invariants_batch_of_one_and_empty_images():
    # One object: push is 0; no objects: both 0; batch size 1 works (the
    # release crashes there).
    pull, push = losses.embedding_loss(tf.constant([[0.3, 7.0]]), tf.constant([[0.1, -7.0]]), tf.constant([[1.0, 0.0]]))
    assert float(push) == 0.0
    assert float(pull) == pytest.approx(0.01 + 0.01)
    pull, push = losses.embedding_loss(tf.zeros([1, 4]) + 3.0, tf.zeros([1, 4]), tf.zeros([1, 4]))
    assert float(pull) == 0.0 and float(push) == 0.0
    # The batch value is the mean over images: an empty image halves it.
    tl = tf.constant([[0.0, 2.0], [0.0, 0.0]])
    br = tf.constant([[1.0, 2.0], [0.0, 0.0]])
    pull, _ = losses.embedding_loss(tl, br, tf.constant([[1.0, 1.0], [0.0, 0.0]]))
    assert float(pull) == pytest.approx(0.125)


def test_offset_loss_hand_values():
    predicted = tf.constant([[[0.5, 0.0], [3.0, 0.0], [100.0, 100.0]]])
    target = tf.constant([[[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]]])
    mask = tf.constant([[1.0, 1.0, 0.0]])
    # Smooth L1: 0.5 * 0.5^2 = 0.125 and |2| - 0.5 = 1.5; masked slot ignored.
    assert float(losses.offset_loss(predicted, target, mask)) == pytest.approx((0.125 + 1.5) / 2)
    assert float(losses.offset_loss(predicted, target, tf.zeros([1, 3]))) == 0.0


def test_gather_at_uses_y_times_width_plus_x():
    feature = tf.reshape(tf.range(2 * 3 * 4 * 1, dtype=tf.float32), [2, 3, 4, 1])
    index = tf.constant([[0, 2 * 4 + 3], [1 * 4 + 1, 0]])
    got = losses.gather_at(feature, index).numpy()[..., 0]
    np.testing.assert_array_equal(got, [[0, 11], [12 + 5, 12]])


def _outputs_and_targets():
    rng = np.random.default_rng(0)
    b, h, w, c, m = 2, 8, 8, 3, 4
    heat = np.zeros([b, h, w, c], np.float32)
    heat[0, 2, 3, 1] = 1.0
    heat[1, 5, 5, 0] = 1.0
    heat[1, 4, 5, 0] = 0.6
    targets = {k: tf.constant(heat) for k in ("tl_heatmap", "br_heatmap", "ct_heatmap")}
    for k in ("tl", "br", "ct"):
        targets[f"{k}_index"] = tf.constant(rng.integers(0, h * w, size=(b, m)), tf.int32)
        targets[f"{k}_offset"] = tf.constant(rng.uniform(size=(b, m, 2)), tf.float32)
    targets["mask"] = tf.constant([[1, 0, 0, 0], [1, 1, 0, 0]], tf.float32)
    outputs = {}
    for k in ("tl", "br", "ct"):
        outputs[f"{k}_heatmap"] = tf.constant(rng.normal(size=(b, h, w, c)), tf.float32)
        outputs[f"{k}_offset"] = tf.constant(rng.normal(size=(b, h, w, 2)), tf.float32)
    for k in ("tl", "br"):
        outputs[f"{k}_embedding"] = tf.constant(rng.normal(size=(b, h, w, 1)), tf.float32)
    return outputs, targets


def test_total_is_weighted_sum_and_stacks_average():
    outputs, targets = _outputs_and_targets()
    config = LossConfig(pull_weight=0.1, push_weight=0.1, offset_weight=1.0)
    one = losses.detection_losses(outputs, targets, config, uses_centers=True)
    expected_total = (
        one["focal_corner"] + one["focal_center"] + 0.1 * one["pull"] + 0.1 * one["push"]
        + one["offset_corner"] + one["offset_center"]
    )
    assert float(one["loss"]) == pytest.approx(float(expected_total), rel=1e-6)
    focal_tl = losses.focal_loss(outputs["tl_heatmap"], targets["tl_heatmap"])
    focal_br = losses.focal_loss(outputs["br_heatmap"], targets["br_heatmap"])
    assert float(one["focal_corner"]) == pytest.approx(float(focal_tl + focal_br), rel=1e-6)
    # Two stacks: the second with zero-loss-ish outputs; terms are averaged.
    stacked = {k: [v, v * 0.0] for k, v in outputs.items()}
    two = losses.detection_losses(stacked, targets, config, uses_centers=True)
    zero = losses.detection_losses({k: v * 0.0 for k, v in outputs.items()}, targets, config, True)
    for key in ("focal_corner", "pull", "offset_center", "loss"):
        assert float(two[key]) == pytest.approx((float(one[key]) + float(zero[key])) / 2, rel=1e-5)


def test_cornernet_has_no_center_terms():
    outputs, targets = _outputs_and_targets()
    out = losses.detection_losses(
        {k: v for k, v in outputs.items() if not k.startswith("ct")}, targets, LossConfig(), uses_centers=False
    )
    assert float(out["focal_center"]) == 0.0 and float(out["offset_center"]) == 0.0


def test_loss_of_sparse_targets_equals_the_loss_of_dense_ones():
    """The training pipeline's sparse targets give the dense targets' loss (heatmaps drawn in the loss)."""
    import numpy as np
    import tensorflow as tf

    from tf_centernet.config import LossConfig
    from tf_centernet.losses import detection_losses
    from tf_centernet.targets import encode_targets

    rng = np.random.default_rng(0)
    boxes = [np.array([[10, 12, 60, 70], [30, 5, 120, 90]], np.float32), np.zeros((0, 4), np.float32)]
    classes = [np.array([1, 2]), np.zeros((0,), np.int64)]
    args = dict(input_size=127, output_size=32, num_classes=3, max_objects=8)

    def batch(heatmaps):
        items = [encode_targets(b, c, heatmaps=heatmaps, **args) for b, c in zip(boxes, classes)]
        return {k: tf.stack([t[k] for t in items]) for k in items[0]}

    outputs = {
        key: [tf.constant(rng.normal(size=(2, 32, 32, channels)), tf.float32) for _ in range(2)]
        for key, channels in (("tl_heatmap", 3), ("br_heatmap", 3), ("ct_heatmap", 3), ("tl_embedding", 1),
                              ("br_embedding", 1), ("tl_offset", 2), ("br_offset", 2), ("ct_offset", 2))
    }
    dense = detection_losses(outputs, batch("dense"), LossConfig(), uses_centers=True)
    sparse = detection_losses(outputs, batch("sparse"), LossConfig(), uses_centers=True)
    assert "keypoint_cells" in batch("sparse") and "tl_heatmap" not in batch("sparse")
    for key in dense:
        np.testing.assert_allclose(sparse[key].numpy(), dense[key].numpy(), rtol=1e-6, err_msg=key)
    assert float(dense["focal_corner"]) > 0
