"""Step 5 of decoding: CenterNet's central-region filter (CenterNet eq. 1).

See docs/reference.md, "Central region".
"""

from __future__ import annotations

import tensorflow as tf

from tf_centernet.config import DecodeConfig
from tf_centernet.decode.geometry import INVALID_SCORE

_DEFAULTS = DecodeConfig()


def central_region_filter(
    boxes: tf.Tensor, scores: tf.Tensor, classes: tf.Tensor,
    centers: tf.Tensor, center_scores: tf.Tensor, center_classes: tf.Tensor,
    small_region_n: int = _DEFAULTS.small_region_n,
    large_region_n: int = _DEFAULTS.large_region_n,
    region_area_threshold: float = _DEFAULTS.region_area_threshold,
) -> tf.Tensor:
    """Keeps boxes whose central region holds a center of their class (docs/reference.md §7.4).

    CenterNet eq. 1: for a box with area ``(x2 - x1) * (y2 - y1) <=
    region_area_threshold`` (pixels^2) n = `small_region_n`, otherwise
    `large_region_n`; the central region is

        ctlx = ((n + 1) x1 + (n - 1) x2) / (2n),  cbrx = ((n - 1) x1 + (n + 1) x2) / (2n)

    and likewise in y (for n = 3 the middle third, for n = 5 the middle
    fifth). A valid box (score > -1) survives when some center of its class
    lies strictly inside (``ctlx < cx < cbrx`` and ``ctly < cy < cbry``); its
    score becomes ``(2 * pair_score + center_score) / 3`` using the first
    matching center in the given order (the releases' `argmax`). All other
    boxes get -1.

    Args:
        boxes: float32 tensor `(batch, n, 4)`, image pixels.
        scores: float32 tensor `(batch, n)`, -1 for invalid boxes.
        classes: int32 tensor `(batch, n)`.
        centers: float32 tensor `(batch, m, 2)`, image pixels (x, y).
        center_scores: float32 tensor `(batch, m)`.
        center_classes: int32 tensor `(batch, m)`.
        small_region_n: int. n for small boxes. Defaults to ``DecodeConfig.small_region_n`` (3).
        large_region_n: int. n for large boxes. Defaults to ``DecodeConfig.large_region_n`` (5).
        region_area_threshold: float. Area (pixels^2) up to which a box is
            small. Defaults to ``DecodeConfig.region_area_threshold``
            (22500 = 150^2).

    Returns:
        float32 tensor `(batch, n)`: the new scores.
    """
    x1, y1, x2, y2 = tf.unstack(boxes, axis=-1)  # each (batch, n)
    area = (x2 - x1) * (y2 - y1)
    n = tf.where(
        area <= region_area_threshold,
        tf.constant(float(small_region_n), tf.float32),
        tf.constant(float(large_region_n), tf.float32),
    )
    # Bitwise equal to the releases' (2 x1 + x2) / 3 and (3 x1 + 2 x2) / 5: the
    # numerator and denominator differ from theirs by exact factors of 2.
    ctlx = ((n + 1.0) * x1 + (n - 1.0) * x2) / (2.0 * n)
    cbrx = ((n - 1.0) * x1 + (n + 1.0) * x2) / (2.0 * n)
    ctly = ((n + 1.0) * y1 + (n - 1.0) * y2) / (2.0 * n)
    cbry = ((n - 1.0) * y1 + (n + 1.0) * y2) / (2.0 * n)

    cx = centers[:, None, :, 0]  # (batch, 1, m)
    cy = centers[:, None, :, 1]
    # (batch, n, m)
    inside = (
        (cx > ctlx[..., None])
        & (cx < cbrx[..., None])
        & (cy > ctly[..., None])
        & (cy < cbry[..., None])
        & tf.equal(center_classes[:, None, :], classes[..., None])
    )
    m = tf.shape(centers)[1]
    order = tf.range(m, dtype=tf.int32)[None, None, :]
    # First matching center (tf.argmax does not promise the first of ties).
    first = tf.reduce_min(tf.where(inside, order, m), axis=-1)  # (batch, n)
    found = first < m
    center_score = tf.gather(center_scores, tf.minimum(first, m - 1), batch_dims=1)
    valid = scores > INVALID_SCORE
    return tf.where(
        valid & found,
        (scores * 2.0 + center_score) / 3.0,
        tf.constant(INVALID_SCORE, tf.float32),
    )
