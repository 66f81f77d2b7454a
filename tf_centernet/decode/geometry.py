"""Coordinates of decoded detections: flip mirroring and output grid -> image pixels.

Two coordinate systems appear (see `tf_centernet.decode`): output-grid cells
and original-image pixels. `ScaleGeometry` says where the images of one test
scale sit in the network input; `boxes_to_image` and `points_to_image` map
output-grid coordinates back with it (docs/reference.md, "Decoding").
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from tf_centernet.config import DecodeConfig

_DEFAULTS = DecodeConfig()

# Score of a rejected candidate (the releases' convention).
INVALID_SCORE = -1.0


class ScaleGeometry(NamedTuple):
    """Where the images of one test scale sit in the network input (docs/reference.md §7.5).

    All tensors have one row per *original* image (not per flipped copy).

    Attributes:
        scale: float. The test scale ``s``; the image was resized to
            ``(int(h * s), int(w * s))`` pixels.
        borders: float32 tensor `(batch, 4)`. ``[top, bottom, left, right]``
            of the pasted, resized image inside the network input, in input
            pixels (only top and left are used for decoding).
        sizes: float32 tensor `(batch, 2)`. Resized image ``(height, width)``
            in pixels.
        ratios: float32 tensor `(batch, 2)`. ``(out_height / in_height,
            out_width / in_width)``: output-grid cells per input pixel.
    """

    scale: float
    borders: tf.Tensor
    sizes: tf.Tensor
    ratios: tf.Tensor


def mirror_boxes(boxes: tf.Tensor, output_width) -> tf.Tensor:
    """Mirrors boxes of a horizontally flipped input back (docs/reference.md §7.5).

    ``x1' = W_out - x2``, ``x2' = W_out - x1`` (the releases' formula).

    Args:
        boxes: float32 tensor `(..., 4)`, output-grid cells.
        output_width: scalar float32. Output-grid width ``W_out`` in cells.

    Returns:
        Tensor like `boxes`.
    """
    x1, y1, x2, y2 = tf.unstack(boxes, axis=-1)
    return tf.stack([output_width - x2, y1, output_width - x1, y2], axis=-1)


def mirror_points(points: tf.Tensor, output_width) -> tf.Tensor:
    """Mirrors (x, y) points of a flipped input back: ``x' = W_out - x``.

    Args:
        points: float32 tensor `(..., 2)`, output-grid cells.
        output_width: scalar float32. Output-grid width in cells.

    Returns:
        Tensor like `points`.
    """
    x, y = tf.unstack(points, axis=-1)
    return tf.stack([output_width - x, y], axis=-1)


def boxes_to_image(
    boxes: tf.Tensor,
    scores: tf.Tensor,
    geometry: ScaleGeometry,
    border_tolerance: float = _DEFAULTS.border_tolerance,
):
    """Output-grid boxes -> original-image pixels (docs/reference.md §7.5).

    ``x / width_ratio - border_left``, ``y / height_ratio - border_top``;
    boxes with ``x1 <= -tol``, ``x2 >= w_resized + tol``, ``y1 <= -tol`` or
    ``y2 >= h_resized + tol`` (before clipping) get score -1 (CenterNet
    release; CornerNet's release has no such test: use an infinite
    tolerance); then clipped to the resized image and divided by the scale.

    Args:
        boxes: float32 tensor `(batch, n, 4)`, output-grid cells.
        scores: float32 tensor `(batch, n)`.
        geometry: `ScaleGeometry` of the images (batch rows).
        border_tolerance: float. Pixels (of the resized image). Defaults to
            ``DecodeConfig.border_tolerance``.

    Returns:
        (boxes, scores): float32 `(batch, n, 4)` in original-image pixels and
        `(batch, n)` with rejected boxes at -1.
    """
    ratios = tf.cast(geometry.ratios, tf.float32)
    borders = tf.cast(geometry.borders, tf.float32)
    sizes = tf.cast(geometry.sizes, tf.float32)
    rh, rw = ratios[:, 0:1], ratios[:, 1:2]  # (batch, 1)
    top, left = borders[:, 0:1], borders[:, 2:3]
    height, width = sizes[:, 0:1], sizes[:, 1:2]

    x1, y1, x2, y2 = tf.unstack(boxes, axis=-1)  # each (batch, n)
    x1 = x1 / rw - left
    x2 = x2 / rw - left
    y1 = y1 / rh - top
    y2 = y2 / rh - top
    tol = tf.constant(border_tolerance, tf.float32)
    outside = (x1 <= -tol) | (x2 >= width + tol) | (y1 <= -tol) | (y2 >= height + tol)
    scores = tf.where(outside, tf.constant(INVALID_SCORE, tf.float32), scores)
    x1 = tf.clip_by_value(x1, 0.0, width)
    x2 = tf.clip_by_value(x2, 0.0, width)
    y1 = tf.clip_by_value(y1, 0.0, height)
    y2 = tf.clip_by_value(y2, 0.0, height)
    scale = tf.constant(geometry.scale, tf.float32)
    return tf.stack([x1, y1, x2, y2], axis=-1) / scale, scores


def points_to_image(points: tf.Tensor, geometry: ScaleGeometry) -> tf.Tensor:
    """Output-grid (x, y) points -> original-image pixels, clipped (docs/reference.md §7.4).

    Args:
        points: float32 tensor `(batch, n, 2)`, output-grid cells.
        geometry: `ScaleGeometry` of the images.

    Returns:
        float32 tensor `(batch, n, 2)`, original-image pixels, clipped to the
        image.
    """
    ratios = tf.cast(geometry.ratios, tf.float32)
    borders = tf.cast(geometry.borders, tf.float32)
    sizes = tf.cast(geometry.sizes, tf.float32)
    x = points[..., 0] / ratios[:, 1:2] - borders[:, 2:3]
    y = points[..., 1] / ratios[:, 0:1] - borders[:, 0:1]
    x = tf.clip_by_value(x, 0.0, sizes[:, 1:2])
    y = tf.clip_by_value(y, 0.0, sizes[:, 0:1])
    return tf.stack([x, y], axis=-1) / tf.constant(geometry.scale, tf.float32)


def input_geometry(images: tf.Tensor, output_size: tf.Tensor) -> ScaleGeometry:
    """The `ScaleGeometry` of images that *are* the network input (scale 1).

    For a batch fed to the model as it is (e.g. `keras.Model.predict` on
    normalised ``(batch, H, W, 3)`` canvases): no border, no resize, so
    detections come out in the input's pixels.

    Args:
        images: tensor `(batch, height, width, channels)`. Only its shape is
            used.
        output_size: int tensor `(2,)`. ``(H_out, W_out)`` of the heatmaps in
            output-grid cells.

    Returns:
        `ScaleGeometry` with scale 1, borders ``[0, H, 0, W]``, sizes
        ``[H, W]`` and ratios ``H_out / H``, ``W_out / W`` (computed in
        float64, then float32, as `tf_centernet.inference.preprocess_images`).
    """
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    in_size = tf.cast(tf.stack([height, width]), tf.float64)
    ratios = tf.cast(tf.cast(output_size, tf.float64) / in_size, tf.float32)
    zero = tf.zeros_like(height)
    borders = tf.cast(tf.stack([zero, height, zero, width]), tf.float32)

    def rows(values):
        return tf.tile(values[None, :], [batch, 1])

    return ScaleGeometry(
        scale=1.0,
        borders=rows(borders),
        sizes=rows(tf.cast(tf.stack([height, width]), tf.float32)),
        ratios=rows(ratios),
    )
