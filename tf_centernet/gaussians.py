"""Gaussian keypoint windows on output-grid maps (docs/reference.md §4).

The kernels behind `tf_centernet.targets.encode_targets`: a square window of
radius r around a keypoint cell, ``exp(-(dx^2 + dy^2) / (2 sigma^2))`` with
``sigma = (2r + 1) / divisor``, values below float64 epsilon set to 0.
"""

from __future__ import annotations

from typing import Union

import numpy as np
import tensorflow as tf

# Values of the Gaussian below float64 machine epsilon are set to zero, as in
# the releases' `gaussian2D` (docs/reference.md §4). With a square window of radius r
# and sigma = (2r + 1) / 6 the smallest value in the window is exp(-9) for
# large r, so in practice this only matters for custom sigma divisors.
_FLOAT64_EPS = float(np.finfo(np.float64).eps)  # 2.220446049250313e-16

# Sigma divisors of the releases: sigma = diameter / divisor.
CORNER_SIGMA_DIVISOR = 6.0
CENTER_SIGMA_DIVISOR = 5.0

def gaussian_windows(
    centers: tf.Tensor,
    radii: tf.Tensor,
    sigma_divisors: Union[float, tf.Tensor],
    height: Union[int, tf.Tensor],
    width: Union[int, tf.Tensor],
) -> tf.Tensor:
    """One clipped square Gaussian window per keypoint, on the full map.

    The vectorised kernel behind `draw_gaussian` and `encode_targets`
    (docs/reference.md §4): diameter ``d = 2r + 1``, ``sigma = d / divisor``,
    value ``exp(-(dx^2 + dy^2) / (2 sigma^2))`` for ``|dx| <= r`` and
    ``|dy| <= r`` (a square window), 0 outside it, values below float64
    machine epsilon set to 0. Parts of the window outside the map are simply
    not there (the releases clip the window at the borders).

    Args:
        centers: int tensor ``(n, 2)``. Keypoint cells ``(x, y)``.
        radii: int tensor ``(n,)``. Radii in cells (0 gives a single 1).
        sigma_divisors: float or float tensor ``(n,)``. 6 for corners, 5 for
            centers.
        height: int or scalar int tensor. Map height in cells.
        width: int or scalar int tensor. Map width in cells.

    Returns:
        float32 tensor ``(n, height, width)``; exactly 1 at each center that
        lies on the map.
    """
    centers = tf.reshape(tf.cast(centers, tf.int32), [-1, 2])
    radii = tf.reshape(tf.cast(radii, tf.int32), [-1])
    # (n, width) and (n, height) signed distances in cells.
    dx = tf.range(width, dtype=tf.int32)[tf.newaxis, :] - centers[:, 0:1]
    dy = tf.range(height, dtype=tf.int32)[tf.newaxis, :] - centers[:, 1:2]
    inf = tf.constant(np.inf, tf.float32)
    dx2 = tf.where(
        tf.abs(dx) <= radii[:, tf.newaxis], tf.cast(dx * dx, tf.float32), inf
    )
    dy2 = tf.where(
        tf.abs(dy) <= radii[:, tf.newaxis], tf.cast(dy * dy, tf.float32), inf
    )
    sigma = tf.cast(2 * radii + 1, tf.float32) / tf.cast(sigma_divisors, tf.float32)
    # (n, 1, 1)
    two_sigma2 = tf.reshape(2.0 * sigma * sigma, [-1, 1, 1])
    # (n, height, width); outside the window the exponent is inf -> exp 0.
    exponent = (dy2[:, :, tf.newaxis] + dx2[:, tf.newaxis, :]) / two_sigma2
    windows = tf.exp(-exponent)
    return tf.where(windows < _FLOAT64_EPS, tf.zeros_like(windows), windows)


def draw_gaussian(heatmap, center, radius, sigma_divisor: float = CORNER_SIGMA_DIVISOR):
    """Merges one Gaussian into a heatmap with an element-wise maximum.

    The single-object form of the releases' `draw_gaussian` (docs/reference.md §4),
    built on the same kernel as `encode_targets` (`gaussian_windows`).

    Args:
        heatmap: float tensor or array ``(height, width)``.
        center: ``(x, y)`` integer cell.
        radius: int. Radius in cells, e.g. ``max(0, int(gaussian_radius(...)))``.
        sigma_divisor: float. ``sigma = (2 radius + 1) / sigma_divisor``; 6 for
            corners, 5 for centers. Defaults to 6.

    Returns:
        tf tensor ``(height, width)`` of the heatmap's float dtype:
        ``max(heatmap, window)``.

    Example:

    >>> import numpy as np
    >>> out = draw_gaussian(np.zeros((5, 5), np.float32), (0, 0), 1)
    >>> float(out[0, 0]), bool(out[0, 2] == 0)
    (1.0, True)
    """
    heatmap = tf.convert_to_tensor(heatmap)
    if not heatmap.dtype.is_floating:
        heatmap = tf.cast(heatmap, tf.float32)
    heatmap.shape.assert_has_rank(2)
    shape = tf.shape(heatmap)
    window = gaussian_windows(
        tf.reshape(tf.cast(center, tf.int32), [1, 2]),
        tf.reshape(tf.cast(radius, tf.int32), [1]),
        sigma_divisor,
        shape[0],
        shape[1],
    )[0]
    return tf.maximum(heatmap, tf.cast(window, heatmap.dtype))


def draw_windows(centers, radii, sigma_divisors, kinds, classes, num_kinds, height, width, num_classes):
    """Element-wise maximum of Gaussian windows, each drawn in its own square.

    The values of `gaussian_windows` (same float32 arithmetic, so the same
    bits), but only the ``(2r + 1)^2`` cells of each keypoint's window are
    computed (a ragged range over all keypoints at once) and merged into an
    NHWC ``(kinds, height, width, num_classes)`` map with one
    `tf.tensor_scatter_nd_max`; cells outside the map are dropped.

    Args:
        centers: int32 ``(m, 2)`` keypoint cells ``(x, y)``.
        radii: int32 ``(m,)`` radii in cells.
        sigma_divisors: float32 ``(m,)``.
        kinds: int32 ``(m,)`` keypoint kind (map index) in ``[0, num_kinds)``.
        classes: int32 ``(m,)`` class (channel) in ``[0, num_classes)``.
        num_kinds, height, width, num_classes: ints, the map shape.

    Returns:
        float32 ``(num_kinds, height, width, num_classes)``, 0 where no
        window reaches.
    """
    diameters = 2 * radii + 1
    counts = diameters * diameters
    owner = tf.repeat(tf.range(tf.shape(radii)[0]), counts)  # keypoint of each cell
    first = tf.cumsum(counts, exclusive=True)
    local = tf.range(tf.reduce_sum(counts)) - tf.gather(first, owner)
    radius = tf.gather(radii, owner)
    diameter = tf.gather(diameters, owner)
    dy = local // diameter - radius
    dx = local % diameter - radius
    center = tf.gather(centers, owner)
    x = center[:, 0] + dx
    y = center[:, 1] + dy
    sigma = tf.cast(diameters, tf.float32) / tf.cast(sigma_divisors, tf.float32)
    two_sigma2 = tf.gather(2.0 * sigma * sigma, owner)
    exponent = (tf.cast(dy * dy, tf.float32) + tf.cast(dx * dx, tf.float32)) / two_sigma2
    values = tf.exp(-exponent)
    inside = (x >= 0) & (x < width) & (y >= 0) & (y < height) & (values >= _FLOAT64_EPS)
    flat = ((tf.gather(kinds, owner) * height + y) * width + x) * num_classes + tf.gather(classes, owner)
    flat = tf.boolean_mask(flat, inside)
    values = tf.boolean_mask(values, inside)
    maps = tf.tensor_scatter_nd_max(
        tf.zeros([num_kinds * height * width * num_classes], tf.float32), flat[:, tf.newaxis], values
    )
    return tf.reshape(maps, [num_kinds, height, width, num_classes])


def draw_heatmaps(targets, output_size, num_classes: int):
    """Draws the heatmaps of a batch of sparse targets (on the device, inside the training step).

    The counterpart of ``encode_targets(..., heatmaps="sparse")``: the input
    pipeline moves keypoints (a few KiB per image) instead of three
    ``H x W x C`` float32 maps (15 MiB per image for COCO at 511), and this
    draws the maps with the same kernel (`draw_windows`), so the values equal
    the dense encoder's bit for bit.

    Args:
        targets: dict with ``keypoint_cells`` int32 ``(B, M, kinds, 2)``
            ``(x, y)`` cells, ``keypoint_radii`` int32 ``(B, M)`` and
            ``keypoint_classes`` int32 ``(B, M)`` (-1: padding); other keys
            are passed through. A dict that already has ``tl_heatmap`` is
            returned as is.
        output_size: int or ``(height, width)`` (ints or scalar tensors).
            Output grid in cells.
        num_classes: int. Heatmap channels.

    Returns:
        dict: the input's other keys plus ``tl_heatmap``, ``br_heatmap``
        (and ``ct_heatmap`` when kinds is 3), float32 ``(B, H, W, C)``.
    """
    if "keypoint_cells" not in targets:
        return targets
    height, width = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    cells = tf.convert_to_tensor(targets["keypoint_cells"], tf.int32)
    num_kinds = int(cells.shape[2])
    radii = tf.convert_to_tensor(targets["keypoint_radii"], tf.int32)
    classes = tf.convert_to_tensor(targets["keypoint_classes"], tf.int32)
    batch, slots = tf.shape(radii)[0], tf.shape(radii)[1]
    # One map per (image, kind): map b * kinds + k; keypoints kind-major per image.
    maps = tf.reshape(tf.range(batch * num_kinds), [batch, 1, num_kinds])
    maps = tf.broadcast_to(maps, [batch, slots, num_kinds])
    divisors = tf.constant([CORNER_SIGMA_DIVISOR, CORNER_SIGMA_DIVISOR, CENTER_SIGMA_DIVISOR][:num_kinds])
    divisors = tf.broadcast_to(divisors, [batch, slots, num_kinds])
    valid = tf.broadcast_to((classes >= 0)[..., tf.newaxis], [batch, slots, num_kinds])
    repeat = tf.broadcast_to
    drawn = draw_windows(
        tf.boolean_mask(cells, valid),
        tf.boolean_mask(repeat(radii[..., tf.newaxis], [batch, slots, num_kinds]), valid),
        tf.boolean_mask(divisors, valid),
        tf.boolean_mask(maps, valid),
        tf.boolean_mask(repeat(classes[..., tf.newaxis], [batch, slots, num_kinds]), valid),
        batch * num_kinds, height, width, num_classes,
    )
    drawn = tf.reshape(drawn, [batch, num_kinds, height, width, num_classes])
    out = {k: v for k, v in targets.items() if not k.startswith("keypoint_")}
    for k, name in enumerate(("tl", "br", "ct")[:num_kinds]):
        out[f"{name}_heatmap"] = drawn[:, k]
    return out
