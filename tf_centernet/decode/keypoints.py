"""Step 1 of decoding: heatmap NMS, top-K keypoints and their offsets.

See docs/reference.md, "Decoding" (CornerNet section 3.5, CenterNet section 3.2).
"""

from __future__ import annotations

from typing import Dict, Optional

import tensorflow as tf

from tf_centernet.config import DecodeConfig
from tf_centernet.ops.gather import gather_cells

_DEFAULTS = DecodeConfig()


def heatmap_nms(heatmap: tf.Tensor, kernel: int = _DEFAULTS.nms_kernel) -> tf.Tensor:
    """Max-pool "NMS" on a heatmap of probabilities (docs/reference.md §7.1).

    A cell is kept when it equals the maximum of its ``kernel x kernel``
    neighbourhood (so plateaus of equal values all survive, as in the
    releases); other cells are set to 0. Cells outside the map never win
    (``SAME`` max pooling ignores the padding, like PyTorch's -inf padding).

    Args:
        heatmap: float tensor `(batch, height, width, classes)`. Probabilities
            (after the sigmoid).
        kernel: int. Odd neighbourhood size. Defaults to ``DecodeConfig.nms_kernel``.

    Returns:
        Tensor like `heatmap` with non-maximal cells zeroed.
    """
    if kernel <= 1:
        return heatmap
    hmax = tf.nn.max_pool2d(heatmap, ksize=kernel, strides=1, padding="SAME")
    return heatmap * tf.cast(tf.equal(hmax, heatmap), heatmap.dtype)


def topk_keypoints(heatmap: tf.Tensor, k: int) -> Dict[str, tf.Tensor]:
    """The `k` highest cells over all classes and positions, per image.

    The flattening order is (class, y, x), the releases' NCHW order, so that
    ties resolve as there: `tf.math.top_k` returns equal values lowest index
    first, i.e. lower class, then upper row, then left column.

    Args:
        heatmap: float32 tensor `(batch, height, width, classes)`.
        k: int. Number of keypoints kept; must not exceed
            ``height * width * classes``.

    Returns:
        dict with
        - ``scores``: float32 `(batch, k)`, descending.
        - ``classes``: int32 `(batch, k)`, 0-based class index.
        - ``indices``: int32 `(batch, k)`, flat cell index ``y * width + x``.
        - ``xs``, ``ys``: float32 `(batch, k)`, integer cell coordinates
          (output-grid cells).
    """
    shape = tf.shape(heatmap)
    height, width = shape[1], shape[2]
    static = heatmap.shape
    if None not in static[1:]:
        k = min(k, int(static[1] * static[2] * static[3]))
    # (batch, classes * height * width) in (class, y, x) order.
    flat = tf.reshape(tf.transpose(heatmap, [0, 3, 1, 2]), [shape[0], -1])
    scores, flat_index = tf.math.top_k(flat, k=k, sorted=True)
    cells = height * width
    classes = flat_index // cells
    indices = flat_index % cells
    ys = indices // width
    xs = indices % width
    return {
        "scores": scores,
        "classes": tf.cast(classes, tf.int32),
        "indices": tf.cast(indices, tf.int32),
        "xs": tf.cast(xs, tf.float32),
        "ys": tf.cast(ys, tf.float32),
    }


def decode_keypoints(
    heatmap_logits: tf.Tensor,
    offsets: Optional[tf.Tensor],
    k: int,
    kernel: int = _DEFAULTS.nms_kernel,
) -> Dict[str, tf.Tensor]:
    """Top-K keypoints of one heatmap with their sub-cell offsets (docs/reference.md §7.1-7.2).

    Args:
        heatmap_logits: float tensor `(batch, height, width, classes)`.
            Pre-sigmoid logits.
        offsets: float tensor `(batch, height, width, 2)` or None. Offsets
            (x then y) in output-grid cells, added to the integer cell.
        k: int. Number of keypoints.
        kernel: int. Max-pool NMS kernel. Defaults to ``DecodeConfig.nms_kernel``.

    Returns:
        The dict of `topk_keypoints`, with ``xs``/``ys`` including offsets
        (output-grid cells).
    """
    heat = heatmap_nms(tf.sigmoid(tf.cast(heatmap_logits, tf.float32)), kernel)
    points = topk_keypoints(heat, k)
    if offsets is not None:
        off = gather_cells(tf.cast(offsets, tf.float32), points["indices"])
        points["xs"] = points["xs"] + off[..., 0]
        points["ys"] = points["ys"] + off[..., 1]
    return points
