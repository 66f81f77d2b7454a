"""Training-time data augmentation (docs/reference.md §6), as TF graph functions.

Every function works eagerly and inside `tf.data.Dataset.map` (graph mode).
Images are NHWC without the batch axis, ``(height, width, 3)``, RGB; boxes
are float32 ``(num_boxes, 4)`` ``[x1, y1, x2, y2]`` in pixels of the image
they come with; classes are int32 ``(num_boxes,)``.

The order of `augment_for_training` is the releases' (CenterNet
`sample/coco.py`): random crop (or the centred square pad) -> resize to the
input size -> clip and drop boxes -> horizontal flip -> image / 255 ->
colour jitter -> PCA lighting -> normalise. The geometric steps run on the
uint8 image; the photometric ones (``/ 255`` to normalise) are one fused
affine pass (`tf_centernet.data.photometric.photometric`).

Randomness: each random function takes ``seed=None`` (stateful `tf.random`
ops) or a ``(2,)`` integer seed tensor, in which case the stateless
`tf.random.stateless_*` ops are used and the result is a function of the
seed alone (reproducible whatever the `tf.data` parallelism).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from tf_centernet.data.photometric import (  # noqa: F401 (re-exported)
    EIGEN_VALUES,
    EIGEN_VECTORS,
    _fold,
    _normal,
    _uniform,
    apply_color_jitter,
    color_jitter,
    color_jitter_parameters,
    grayscale,
    lighting,
    normalize,
    photometric,
)

_Seed = Optional[tf.Tensor]
_IntPair = Union[int, Sequence[int]]


def _pair(value: _IntPair) -> Tuple[int, int]:
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    height, width = value
    return int(height), int(width)


def _crop_around(image, boxes, center_x, center_y, crop_height, crop_width):
    """Cuts a (crop_height, crop_width) window centred on a pixel, zero-padded.

    The releases' `crop_image` / `random_crop` geometry: the image region
    ``[y0:y1, x0:x1]`` with ``x0 = max(cx - cw // 2, 0)``,
    ``x1 = min(cx + cw // 2, W)`` (same for y) is pasted on a zero canvas so
    that pixel ``(cx, cy)`` lands at ``(cw // 2, ch // 2)``. As in the
    releases the window spans ``2 * (cw // 2)`` pixels: with an odd size the
    last canvas column (row) stays zero.

    Args:
        image: tensor ``(H, W, 3)``, any dtype.
        boxes: float32 ``(n, 4)`` in image pixels.
        center_x: scalar int32. Crop center column in the image.
        center_y: scalar int32. Crop center row in the image.
        crop_height: scalar int32. Canvas height in pixels.
        crop_width: scalar int32. Canvas width in pixels.

    Returns:
        (canvas ``(crop_height, crop_width, 3)`` of the image's dtype, boxes
        float32 ``(n, 4)`` in canvas pixels, not clipped).
    """
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    x0 = tf.maximum(center_x - crop_width // 2, 0)
    x1 = tf.minimum(center_x + crop_width // 2, width)
    y0 = tf.maximum(center_y - crop_height // 2, 0)
    y1 = tf.minimum(center_y + crop_height // 2, height)
    # Top-left corner of the pasted region on the canvas.
    paste_x = crop_width // 2 - (center_x - x0)
    paste_y = crop_height // 2 - (center_y - y0)
    region = image[y0:y1, x0:x1, :]
    canvas = tf.pad(
        region,
        [
            [paste_y, crop_height - paste_y - (y1 - y0)],
            [paste_x, crop_width - paste_x - (x1 - x0)],
            [0, 0],
        ],
    )
    shift = tf.cast(tf.stack([paste_x - x0, paste_y - y0] * 2), tf.float32)
    return canvas, boxes + shift


def crop_border(border: int, size) -> tf.Tensor:
    """The releases' `_get_border`: `border` halved until it fits `size`.

    Returns ``border // i`` for the smallest ``i`` in 1, 2, 4, ... with
    ``size - border // i > border // i``, so the random crop center can be
    drawn from ``[b, size - b)``.

    Args:
        border: int. Configured border in pixels (`DataConfig.border`).
        size: scalar int tensor. Image width or height in pixels (>= 1).

    Returns:
        scalar int32 tensor.
    """
    border = int(border)
    candidates = [border >> k for k in range(max(border, 0).bit_length() + 1)]
    candidates = tf.constant(candidates or [0], tf.int32)  # ends with 0
    fits = tf.cast(tf.cast(size, tf.int32) > 2 * candidates, tf.int32)
    return candidates[tf.argmax(fits, output_type=tf.int32)]


def random_crop(
    image,
    boxes,
    scales: Sequence[float],
    view_size: _IntPair,
    border: int = 128,
    seed: _Seed = None,
):
    """Random crop around a random center, zero outside the image (docs/reference.md §6).

    The releases' `random_crop`: a scale s is picked uniformly from `scales`;
    the crop is ``int(view_height * s) x int(view_width * s)``; the border
    b (per axis) is `border` halved until ``size - b > b`` (`crop_border`);
    the center ``(cx, cy)`` is a uniform integer in ``[b, size - b)``; the
    window around it is cut as in `_crop_around` (zero outside the image).
    Boxes are shifted with the image but neither clipped nor dropped.

    Args:
        image: tensor ``(H, W, 3)``, any dtype (uint8 in the pipeline).
        boxes: float32 ``(n, 4)`` in image pixels.
        scales: sequence of floats. Candidate scales (`DataConfig.rand_scales`).
        view_size: int or ``(height, width)``. Network input size in pixels.
        border: int. `DataConfig.border`. Defaults to 128.
        seed: optional ``(2,)`` int tensor for stateless randomness.

    Returns:
        (cropped image ``(crop_h, crop_w, 3)`` of the image's dtype, boxes
        float32 ``(n, 4)`` in crop pixels).

    Raises:
        ValueError: empty `scales` or non-positive crop size.
    """
    view_h, view_w = _pair(view_size)
    scales = [float(s) for s in scales]
    if not scales:
        raise ValueError("random_crop needs at least one scale.")
    # int(size * scale) in Python float64, exactly as the releases do.
    heights = [int(view_h * s) for s in scales]
    widths = [int(view_w * s) for s in scales]
    if min(heights + widths) <= 0:
        raise ValueError(f"scales {scales} give an empty crop of {view_size}.")
    choice = _uniform([], _fold(seed, 0), 0, len(scales), tf.int32)
    crop_h = tf.gather(tf.constant(heights, tf.int32), choice)
    crop_w = tf.gather(tf.constant(widths, tf.int32), choice)

    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    w_border = crop_border(border, width)
    h_border = crop_border(border, height)
    center_x = _uniform([], _fold(seed, 1), w_border, width - w_border, tf.int32)
    center_y = _uniform([], _fold(seed, 2), h_border, height - h_border, tf.int32)
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    return _crop_around(image, boxes, center_x, center_y, crop_h, crop_w)


def full_image_crop(image, boxes):
    """Pads the image, centred, into a square of side max(H, W) (docs/reference.md §6).

    The releases' `_full_image_crop` (used when random crop is off): a crop
    of size ``max(H, W)`` around pixel ``(W // 2, H // 2)``; boxes shifted
    with the image. Like the releases, an image whose larger side is odd
    loses its last column (row) (see `_crop_around`).

    Args:
        image: tensor ``(H, W, 3)``, any dtype.
        boxes: float32 ``(n, 4)`` in image pixels.

    Returns:
        (square image ``(S, S, 3)`` with ``S = max(H, W)``, boxes float32
        ``(n, 4)``).
    """
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    side = tf.maximum(height, width)
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    return _crop_around(image, boxes, width // 2, height // 2, side, side)


def resize(image, boxes, size: _IntPair):
    """Bilinear resize to `size` with the boxes scaled alike (docs/reference.md §6).

    The releases' `_resize_image` (`cv2.resize`, bilinear, half-pixel
    centers like `tf.image.resize`). Boxes are multiplied by
    ``new_width / width`` and ``new_height / height``. A uint8 image comes back
    uint8, rounded as `cv2.resize` rounds; a float image stays float32.

    Args:
        image: tensor ``(H, W, 3)``, uint8 or float.
        boxes: float32 ``(n, 4)`` in image pixels.
        size: int or ``(height, width)``. Target size in pixels.

    Returns:
        (image ``(height, width, 3)``, boxes float32 ``(n, 4)``).
    """
    new_h, new_w = _pair(size)
    image = tf.convert_to_tensor(image)
    shape = tf.shape(image)
    height = tf.cast(shape[0], tf.float32)
    width = tf.cast(shape[1], tf.float32)
    resized = tf.image.resize(image, [new_h, new_w], method="bilinear")
    if image.dtype == tf.uint8:
        resized = tf.cast(tf.round(tf.clip_by_value(resized, 0.0, 255.0)), tf.uint8)
    resized = tf.ensure_shape(resized, [new_h, new_w, 3])
    scale = tf.stack([new_w / width, new_h / height] * 2)
    return resized, tf.convert_to_tensor(boxes, tf.float32) * scale


def clip_boxes(boxes, classes, height, width):
    """Clips boxes to ``[0, size - 1]`` and drops empty ones (docs/reference.md §6).

    The releases' `_clip_detections`: x to ``[0, width - 1]``, y to
    ``[0, height - 1]``; boxes with ``x2 - x1 <= 0`` or ``y2 - y1 <= 0``
    afterwards are dropped, with their classes.

    Args:
        boxes: float32 ``(n, 4)``.
        classes: int32 ``(n,)``.
        height: int or scalar tensor. Image height in pixels.
        width: int or scalar tensor. Image width in pixels.

    Returns:
        (boxes float32 ``(m, 4)``, classes int32 ``(m,)``), m <= n.
    """
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    upper = tf.cast(tf.stack([width - 1, height - 1] * 2), tf.float32)
    boxes = tf.clip_by_value(boxes, 0.0, upper)
    keep = (boxes[:, 2] - boxes[:, 0] > 0) & (boxes[:, 3] - boxes[:, 1] > 0)
    return tf.boolean_mask(boxes, keep), tf.boolean_mask(classes, keep)


def flip_horizontal(image, boxes):
    """Mirrors image and boxes: ``x' = W - x - 1`` with x1 and x2 swapped.

    Args:
        image: tensor ``(H, W, 3)``.
        boxes: float32 ``(n, 4)``.

    Returns:
        (image, boxes) mirrored.
    """
    image = tf.convert_to_tensor(image)
    width = tf.cast(tf.shape(image)[1], tf.float32)
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    x1, y1, x2, y2 = tf.unstack(boxes, 4, axis=1)
    flipped = tf.stack([width - x2 - 1, y1, width - x1 - 1, y2], axis=1)
    return tf.reverse(image, [1]), flipped  # 15x faster than a ::-1 slice


def random_flip(image, boxes, probability: float = 0.5, seed: _Seed = None):
    """Horizontal flip with probability `probability` (docs/reference.md §6).

    Args:
        image: tensor ``(H, W, 3)``.
        boxes: float32 ``(n, 4)``.
        probability: float. Defaults to 0.5.
        seed: optional ``(2,)`` int tensor for stateless randomness.

    Returns:
        (image, boxes), flipped by `flip_horizontal` or unchanged.
    """
    image = tf.convert_to_tensor(image)
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    do_flip = _uniform([], seed) < probability
    return tf.cond(
        do_flip, lambda: flip_horizontal(image, boxes), lambda: (image, boxes)
    )


def augment_for_training(image_uint8, boxes, classes, config, training=True, seed=None):
    """The full docs/reference.md §6 chain for one image.

    With ``training=True``: `random_crop` (or `full_image_crop` when
    ``config.random_crop`` is False) -> `resize` to ``config.input_size`` ->
    `clip_boxes` -> `random_flip` (``config.flip``) -> ``/ 255`` ->
    `color_jitter` (``config.color_jitter``) -> `lighting`
    (``config.lighting``) -> `normalize`. The releases apply lighting only
    together with colour jitter; here the two switches are independent.

    With ``training=False`` (evaluation-like): `full_image_crop` -> `resize`
    -> `clip_boxes` -> ``/ 255`` -> `normalize`.

    Args:
        image_uint8: uint8 ``(H, W, 3)`` RGB.
        boxes: float32 ``(n, 4)`` ``[x1, y1, x2, y2]`` image pixels.
        classes: int32 ``(n,)``.
        config: `tf_centernet.config.DataConfig`.
        training: bool. Random augmentation on or off. Defaults to True.
        seed: optional ``(2,)`` int tensor; stateless randomness when given.

    Returns:
        (image float32 ``(S, S, 3)`` normalised, boxes float32 ``(m, 4)`` in
        ``[0, S - 1]``, classes int32 ``(m,)``) with ``S = config.input_size``.
    """
    size = int(config.input_size)
    image = tf.convert_to_tensor(image_uint8)
    if image.dtype != tf.uint8:
        raise ValueError(f"augment_for_training expects a uint8 image, got {image.dtype}.")
    image = tf.ensure_shape(image, [None, None, 3])
    boxes = tf.reshape(tf.convert_to_tensor(boxes, tf.float32), [-1, 4])
    classes = tf.reshape(tf.cast(classes, tf.int32), [-1])

    if training and config.random_crop:
        image, boxes = random_crop(
            image, boxes, config.rand_scales, size, config.border, _fold(seed, 10)
        )
    else:
        image, boxes = full_image_crop(image, boxes)
    image, boxes = resize(image, boxes, size)
    boxes, classes = clip_boxes(boxes, classes, size, size)
    if training and config.flip:
        image, boxes = random_flip(image, boxes, 0.5, _fold(seed, 11))
    jitter = lighting_std = None
    if training and config.color_jitter:
        jitter = color_jitter_parameters(0.4, _fold(seed, 12))
    if training and config.lighting:
        lighting_std = config.lighting_std
    image = photometric(image, config.mean, config.std, jitter, lighting_std, _fold(seed, 13))
    return tf.ensure_shape(image, [size, size, 3]), boxes, classes
