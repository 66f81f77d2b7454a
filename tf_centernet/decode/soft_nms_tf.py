"""Soft-NMS with TensorFlow's fused kernel (``DecodeConfig.nms = "tf"``).

An alternative to the releases' soft-NMS (`tf_centernet.decode.soft_nms`)
for runtimes that prefer TensorFlow's `non_max_suppression_with_scores`:
faster, not bit-exact (see `soft_nms_with_tf_op`); docs/reference.md,
"Soft-NMS".
"""

from __future__ import annotations

from typing import Dict

import tensorflow as tf

from tf_centernet.config import DecodeConfig

_DEFAULTS = DecodeConfig()


def soft_nms_with_tf_op(
    boxes: tf.Tensor, scores: tf.Tensor, classes: tf.Tensor,
    max_detections: int = _DEFAULTS.max_detections,
    sigma: float = _DEFAULTS.soft_nms_sigma,
    score_threshold: float = _DEFAULTS.score_threshold,
    inclusive: bool = False,
) -> Dict[str, tf.Tensor]:
    """Per-class Gaussian soft-NMS of one image with TF's built-in kernel.

    An alternative to `soft_nms`, for runtimes that prefer the fused kernel;
    `decode_detections` runs it (batched by `soft_nms_tf`) with
    ``DecodeConfig.nms = "tf"``. Not bit-exact with the releases. TensorFlow's
    `non_max_suppression_with_scores` weighs by ``exp(-0.5 / soft_nms_sigma *
    IoU^2)`` (`non_max_suppression_op.cc`: ``scale = -0.5 / soft_nms_sigma``)
    = ``exp(-IoU^2 / (2 soft_nms_sigma))``, so ``soft_nms_sigma = sigma / 2``
    reproduces the releases' ``exp(-IoU^2 / sigma)``; `iou_threshold` = 1 so
    that no box is hard-suppressed (older kernels zero the weight above it).
    Differences from `soft_nms`: the kernel's IoU has exclusive areas (no
    +1); with `inclusive` the boxes are passed with ``x2 + 1, y2 + 1``, which
    gives the releases' pixel-inclusive IoU up to float rounding. Boxes at
    exactly `score_threshold` are dropped (the kernel keeps ``> threshold``).
    Classes are separated by shifting each class's boxes by
    ``class * (max coordinate + 1)`` along both axes, so the kernel's IoU is
    computed on coordinates up to ``classes * max coordinate`` and loses low
    bits (about 1e-3 px at 80 classes of 1000 px); the kernel also updates
    scores lazily (a box is decayed only when it reaches the top of its
    queue), in a different float order. Selections and scores therefore
    match `soft_nms` closely but not bit for bit, and near-ties can swap.

    Args:
        boxes: float32 tensor `(n, 4)` ``[x1, y1, x2, y2]``, image pixels.
        scores: float32 tensor `(n,)`.
        classes: int32 tensor `(n,)`.
        max_detections: int. Defaults to ``DecodeConfig.max_detections``.
        sigma: float. Release-form Gaussian parameter. Defaults to ``DecodeConfig.soft_nms_sigma``.
        score_threshold: float. Defaults to ``DecodeConfig.score_threshold``.
        inclusive: bool. Pixel-inclusive IoU as the releases (see above).
            Defaults to `False`.

    Returns:
        dict with ``boxes`` `(max_detections, 4)`, ``scores``, ``classes``,
        ``num_detections`` (scalar int32), zero-padded.
    """
    boxes = tf.cast(boxes, tf.float32)
    kernel_boxes = boxes + tf.constant([0.0, 0.0, 1.0, 1.0]) if inclusive else boxes
    shift = tf.reduce_max(tf.abs(kernel_boxes)) + 1.0
    offset = tf.cast(classes, tf.float32)[:, None] * shift
    # TF's kernel takes [y1, x1, y2, x2]; the kernel is symmetric in x and y.
    shifted = tf.gather(kernel_boxes, [1, 0, 3, 2], axis=1) + offset
    index, new_scores = tf.image.non_max_suppression_with_scores(
        shifted, scores, max_output_size=max_detections, iou_threshold=1.0,
        score_threshold=score_threshold, soft_nms_sigma=sigma / 2.0,
    )
    num = tf.shape(index)[0]
    pad = max_detections - num
    return {
        "boxes": tf.pad(tf.gather(boxes, index), [[0, pad], [0, 0]]),
        "scores": tf.pad(new_scores, [[0, pad]]),
        "classes": tf.pad(tf.gather(classes, index), [[0, pad]]),
        "num_detections": num,
    }


def soft_nms_tf(
    boxes: tf.Tensor, scores: tf.Tensor, classes: tf.Tensor, max_detections: int = _DEFAULTS.max_detections, **options
) -> Dict[str, tf.Tensor]:
    """``DecodeConfig.nms = "tf"``: `soft_nms_with_tf_op` per image of a batch.

    Pixel-inclusive IoU as the releases; not bit-exact with them or with
    `soft_nms` (see `soft_nms_with_tf_op` for what differs). TF's kernel
    has no XLA kernel, so not under ``jit_compile``.

    Args:
        boxes: float32 tensor `(batch, n, 4)`, image pixels.
        scores: float32 tensor `(batch, n)`.
        classes: int32 tensor `(batch, n)`.
        max_detections: int. Defaults to ``DecodeConfig.max_detections``.
        **options: ``sigma`` (release-form Gaussian parameter) and
            ``score_threshold``, as in `soft_nms_with_tf_op` (defaults from
            `DecodeConfig`).

    Returns:
        The dict of `soft_nms`.
    """
    def one(args):
        return soft_nms_with_tf_op(args[0], args[1], args[2], max_detections, inclusive=True, **options)

    return tf.map_fn(
        one,
        (tf.cast(boxes, tf.float32), tf.cast(scores, tf.float32), tf.cast(classes, tf.int32)),
        fn_output_signature={
            "boxes": tf.TensorSpec([max_detections, 4], tf.float32),
            "scores": tf.TensorSpec([max_detections], tf.float32),
            "classes": tf.TensorSpec([max_detections], tf.int32),
            "num_detections": tf.TensorSpec([], tf.int32),
        },
    )
