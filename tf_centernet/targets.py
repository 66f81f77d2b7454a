"""Training-target encoder for CornerNet and CenterNet (docs/reference.md §4).

One image at a time, inside `tf.data` (graph mode), with static output shapes
and no Python loop over boxes: every keypoint's Gaussian is computed in its
own ``(2r + 1)^2`` window only (all keypoints at once) and merged into the
NHWC class maps with an element-wise maximum (`tf.tensor_scatter_nd_max`).

Conventions:

- Boxes are ``[x1, y1, x2, y2]`` in input pixels, float32, already clipped to
  the input image and filtered (docs/reference.md §6).
- A keypoint at input position ``x`` lands at ``fx = x * output / input`` on
  the output grid; its integer cell is ``floor(fx)`` and its offset target
  ``fx - floor(fx)`` (in cells). Flat indices are ``cell_y * width + cell_x``.
- Keypoint arithmetic (scaling, floor, ceil of the box size, radius) runs in
  float64 like the releases' NumPy code, so cell assignment does not depend on
  float32 rounding; the Gaussians themselves are float32 (they differ from the
  releases' float64 values by less than 1e-6).
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from tf_centernet.config import check_choice
from tf_centernet.gaussians import (  # noqa: F401 (re-exported)
    _FLOAT64_EPS,
    CENTER_SIGMA_DIVISOR,
    CORNER_SIGMA_DIVISOR,
    draw_gaussian,
    draw_windows,
    gaussian_windows,
)

# The releases reserve 128 embedding/offset slots per image.
RELEASE_MAX_OBJECTS = 128

_IntPair = Union[int, Sequence[int]]


def _pair(value: _IntPair, name: str) -> Tuple[int, int]:
    """An int or an (height, width) pair as a pair of positive ints."""
    if isinstance(value, (int, np.integer)):
        pair = (int(value), int(value))
    else:
        pair = tuple(int(v) for v in value)
        if len(pair) != 2:
            raise ValueError(f"{name} must be an int or (height, width), got {value!r}.")
    if min(pair) <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}.")
    return pair


def gaussian_radius(det_size, min_overlap, variant: str = "release"):
    r"""Radius around a corner within which a shifted box keeps IoU >= t.

    CornerNet (section 3.1) reduces the penalty of negative locations within a
    radius r of a ground-truth corner, r chosen so that a pair of corners
    within r of the true ones still gives a box of IoU >= t = `min_overlap`
    with the ground truth. With a box of height h and width w on the output
    grid there are three limiting cases, each a quadratic
    ``a r^2 + b r + c = 0``:

    Case 1: one corner inside the box, the other outside (both shifted by r in
    the same direction)::

        +-------+             overlap (w - r)(h - r)
        |  +----|--+          union   w h + (w + h) r - r^2
        |  |    |  |
        +--|----+  |          IoU >= t  <=>
           +-------+          r^2 - (w + h) r + w h (1 - t) / (1 + t) >= 0

        a1 = 1, b1 = -(w + h), c1 = w h (1 - t) / (1 + t)

    Case 2: both corners inside the box::

        +---------+           overlap (w - 2r)(h - 2r), union w h
        |  +---+  |
        |  |   |  |           4 r^2 - 2 (w + h) r + (1 - t) w h >= 0
        |  +---+  |
        +---------+           a2 = 4, b2 = -2 (w + h), c2 = (1 - t) w h

    Case 3: both corners outside the box::

        +---------+           overlap w h, union (w + 2r)(h + 2r)
        |  +---+  |
        |  |   |  |           4 t r^2 + 2 t (w + h) r + (t - 1) w h <= 0
        |  +---+  |
        +---------+           a3 = 4 t, b3 = 2 t (w + h), c3 = (t - 1) w h

    In cases 1 and 2 the admissible radii lie below the smaller root
    ``(-b - sqrt(b^2 - 4ac)) / (2a)``, in case 3 below the larger root
    ``(-b + sqrt(b^2 - 4ac)) / (2a)``; the radius is the minimum of the three.

    ``variant="release"`` (default) reproduces the releases' `gaussian_radius`
    (CornerNet and CenterNet `sample/utils.py`), which keeps the signs
    ``b1 = w + h``, ``b2 = 2 (w + h)``, ``b3 = -2 t (w + h)`` and returns
    the minimum of::

        r1 = (b1 + sqrt(b1^2 - 4 a1 c1)) / 2
        r2 = (b2 + sqrt(b2^2 - 4 a2 c2)) / 2
        r3 = (b3 + sqrt(b3^2 - 4 a3 c3)) / 2

    i.e. the larger roots, divided by 2 instead of 2a. This is a quirk of the
    releases, reproduced on purpose because all published numbers were
    trained with it (docs/reference.md §4): with ``s = w + h``, r3 <= s (sqrt(t) - t)
    <= s / 4 while r1 >= s / 2 and r2 >= s, so the result is always the
    case-3 radius multiplied by ``a3 = 4t`` (2.8 times the geometric case-3
    radius at t = 0.7), and cases 1 and 2 never bind.

    ``variant="paper"`` returns the geometric radius, the minimum of::

        r1 = (b1 - sqrt(b1^2 - 4 a1 c1)) / (2 a1)
        r2 = (b2 - sqrt(b2^2 - 4 a2 c2)) / (2 a2)
        r3 = (b3 + sqrt(b3^2 - 4 a3 c3)) / (2 a3)

    with the same (release-signed) b1, b2, b3.

    Callers truncate: ``radius = max(0, int(r))``, where h and w are the ceil
    of the box height and width scaled to the output grid.

    Args:
        det_size: the box size ``(height, width)``: a pair of Python floats,
            NumPy arrays or tf tensors (vectorised over boxes), or one array /
            tensor whose last axis is ``(height, width)``. Output-grid cells.
        min_overlap: float or tensor. The IoU t in (0, 1).
        variant: str. ``"release"`` or ``"paper"``. Defaults to
            ``"release"``.

    Returns:
        The float radius before truncation: a tf tensor (float32 for integer
        inputs, else the input's float dtype) when any input is a tensor,
        otherwise a NumPy float64 scalar or array.

    Raises:
        ValueError: unknown `variant` or malformed `det_size`.

    Example:

    >>> round(float(gaussian_radius((10, 10), 0.7)), 4)
    2.7332
    >>> round(float(gaussian_radius((10, 10), 0.7, variant="paper")), 4)
    0.8167
    """
    check_choice("data.radius_variant", variant)
    if tf.is_tensor(det_size) or isinstance(det_size, np.ndarray):
        height, width = det_size[..., 0], det_size[..., 1]
    else:
        try:
            height, width = det_size
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"det_size must be (height, width), got {det_size!r}."
            ) from error

    if any(tf.is_tensor(v) for v in (height, width, min_overlap)):
        height = tf.convert_to_tensor(height)
        if not height.dtype.is_floating:
            height = tf.cast(height, tf.float32)
        dtype = height.dtype
        # tf.cast of a Python float would go through float32 first.
        width = tf.cast(width, dtype) if tf.is_tensor(width) else tf.constant(width, dtype)
        if tf.is_tensor(min_overlap):
            t = tf.cast(min_overlap, dtype)
        else:
            t = tf.constant(min_overlap, dtype)
        sqrt, minimum = tf.sqrt, tf.minimum
    else:
        height = np.asarray(height, dtype=np.float64)
        width = np.asarray(width, dtype=np.float64)
        t = np.float64(min_overlap)
        sqrt, minimum = np.sqrt, np.minimum

    a1 = 1.0
    b1 = height + width
    c1 = width * height * (1 - t) / (1 + t)
    sq1 = sqrt(b1**2 - 4 * a1 * c1)

    a2 = 4.0
    b2 = 2 * (height + width)
    c2 = (1 - t) * width * height
    sq2 = sqrt(b2**2 - 4 * a2 * c2)

    a3 = 4 * t
    b3 = -2 * t * (height + width)
    c3 = (t - 1) * width * height
    sq3 = sqrt(b3**2 - 4 * a3 * c3)

    if variant == "release":
        r1 = (b1 + sq1) / 2
        r2 = (b2 + sq2) / 2
        r3 = (b3 + sq3) / 2
    else:
        r1 = (b1 - sq1) / (2 * a1)
        r2 = (b2 - sq2) / (2 * a2)
        r3 = (b3 + sq3) / (2 * a3)
    return minimum(minimum(r1, r2), r3)


def _pad_slots(values: tf.Tensor, count: tf.Tensor, max_objects: int) -> tf.Tensor:
    """The first `count` rows of `values`, zero-padded to `max_objects` rows."""
    values = values[:count]
    paddings = [[0, max_objects - count]] + [[0, 0]] * (values.shape.rank - 1)
    padded = tf.pad(values, paddings)
    return tf.ensure_shape(padded, [max_objects] + values.shape.as_list()[1:])


def encode_targets(
    boxes,
    classes,
    *,
    input_size: _IntPair,
    output_size: _IntPair,
    num_classes: int,
    max_objects: int,
    gaussian_iou: float = 0.7,
    gaussian_bump: bool = True,
    with_centers: bool = True,
    radius_variant: str = "release",
    heatmaps: str = "dense",
) -> Dict[str, tf.Tensor]:
    """Heatmaps, offsets, flat indices and mask of one image (docs/reference.md §4).

    Runs eagerly or in graph mode (inside `tf.data.Dataset.map`) with static
    output shapes and no Python loop over boxes.

    For each object the top-left ``(x1, y1)``, bottom-right ``(x2, y2)`` and
    (CenterNet) center ``((x1 + x2) / 2, (y1 + y2) / 2)`` keypoints are mapped
    to the output grid, ``fx = x * output / input``; the cell is
    ``floor(fx)`` and the offset target ``fx - floor(fx)``. The three
    keypoints share one radius, ``max(0, int(gaussian_radius((h, w), iou)))``
    with ``h, w = ceil`` of the box height and width on the output grid;
    sigma is ``(2r + 1) / 6`` for corners and ``(2r + 1) / 5`` for centers.
    Without `gaussian_bump` the radius is 0 (the positive cell alone is 1).

    Objects beyond the limit: heatmaps include ALL objects, but the
    embedding / offset slots (`*_offset`, `*_index`, `mask`) hold only the
    first `max_objects` objects in input order; `num_objects` reports the
    count before truncation so the pipeline can log drops. (The releases have
    a hard limit of 128 slots and raise an IndexError beyond it.)

    Two objects whose keypoints fall on the same cell: the heatmap keeps the
    maximum (1) and each object keeps its own slot, with equal indices.

    Cells are clamped to the map, a no-op for boxes clipped to
    ``[0, input_size - 1]`` (their keypoints satisfy ``fx < output_size``).

    Args:
        boxes: float tensor ``(num_boxes, 4)``. ``[x1, y1, x2, y2]`` in input
            pixels, clipped and filtered.
        classes: int tensor ``(num_boxes,)``. 0-based class indices in
            ``[0, num_classes)``.
        input_size: int or ``(height, width)``. Network input size in pixels.
        output_size: int or ``(height, width)``. Output grid size in cells.
        num_classes: int. Number of heatmap channels.
        max_objects: int. Number of embedding / offset slots.
        gaussian_iou: float. IoU t of `gaussian_radius`. Defaults to 0.7.
        gaussian_bump: bool. Draw Gaussians (else single cells). Defaults to
            True.
        with_centers: bool. Also encode center keypoints (CenterNet); when
            False the ``ct_*`` keys are omitted. Defaults to True.
        radius_variant: str. ``"release"`` or ``"paper"``, see
            `gaussian_radius`. Defaults to ``"release"``.
        heatmaps: str. ``"dense"`` (default): the ``*_heatmap`` maps.
            ``"sparse"``: instead of the maps, the keypoints they are drawn
            from (a few KiB instead of ``3 H W C`` floats), for
            `tf_centernet.gaussians.draw_heatmaps` to draw on the device
            (same values, bit for bit, for up to `max_keypoint_objects`
            objects).

    Returns:
        dict of tensors, with ``H, W = output_size`` and ``K = max_objects``:

        - ``tl_heatmap``, ``br_heatmap``, ``ct_heatmap``: float32
          ``(H, W, num_classes)`` in [0, 1], exactly 1 at keypoint cells.
        - ``tl_offset``, ``br_offset``, ``ct_offset``: float32 ``(K, 2)``,
          ``(x, y)`` sub-cell offsets in [0, 1) output cells; 0 in empty slots.
        - ``tl_index``, ``br_index``, ``ct_index``: int32 ``(K,)``,
          ``cell_y * W + cell_x``; 0 in empty slots.
        - ``mask``: float32 ``(K,)``, 1 for filled slots.
        - ``num_objects``: int32 scalar, objects before truncation to K.

        With ``heatmaps="sparse"`` the ``*_heatmap`` keys are replaced by
        (``M = max_keypoint_objects(K)``; the first M objects in input
        order, padding rows with class -1):

        - ``keypoint_cells``: int32 ``(M, kinds, 2)``, ``(x, y)`` cells of
          the top-left, bottom-right (and center) keypoints.
        - ``keypoint_radii``: int32 ``(M,)``, Gaussian radii in cells.
        - ``keypoint_classes``: int32 ``(M,)``, class index or -1.

    Raises:
        ValueError: bad sizes, `boxes` not of shape ``(n, 4)`` or another
            `heatmaps` value.
        tf.errors.InvalidArgumentError: (at run time) a class outside
            ``[0, num_classes)``.
    """
    if heatmaps not in ("dense", "sparse"):
        raise ValueError(f"heatmaps must be 'dense' or 'sparse', got {heatmaps!r}.")
    in_h, in_w = _pair(input_size, "input_size")
    out_h, out_w = _pair(output_size, "output_size")
    if num_classes <= 0 or max_objects <= 0:
        raise ValueError(
            f"num_classes and max_objects must be positive, got {num_classes} "
            f"and {max_objects}."
        )
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    if boxes.shape.rank != 2 or boxes.shape[-1] not in (None, 4):
        raise ValueError(f"boxes must have shape (n, 4), got {boxes.shape}.")
    boxes = tf.reshape(boxes, [-1, 4])
    classes = tf.reshape(tf.cast(classes, tf.int32), [-1])
    num_objects = tf.shape(boxes)[0]
    checks = [
        tf.debugging.assert_equal(
            tf.shape(classes)[0], num_objects, message="boxes and classes differ in length"
        ),
        tf.debugging.assert_non_negative(classes, message="negative class index"),
        tf.debugging.assert_less(
            classes, tf.constant(num_classes, tf.int32), message="class index >= num_classes"
        ),
    ]
    with tf.control_dependencies(checks):
        classes = tf.identity(classes)

    # Keypoints in input pixels, (n, kinds, 2) as (x, y); float64 like the
    # releases' NumPy arithmetic.
    b64 = tf.cast(boxes, tf.float64)
    x1, y1, x2, y2 = tf.unstack(b64, axis=1)
    points = [tf.stack([x1, y1], -1), tf.stack([x2, y2], -1)]
    if with_centers:
        points.append(tf.stack([(x1 + x2) / 2.0, (y1 + y2) / 2.0], -1))
    points = tf.stack(points, axis=1)
    num_kinds = 3 if with_centers else 2
    ratio = tf.constant([out_w / in_w, out_h / in_h], tf.float64)
    scaled = points * ratio  # (n, kinds, 2) in output cells
    cells_f = tf.floor(scaled)
    offsets = tf.cast(scaled - cells_f, tf.float32)
    cells = tf.cast(cells_f, tf.int32)
    cells = tf.clip_by_value(cells, 0, tf.constant([out_w - 1, out_h - 1], tf.int32))
    indices = cells[..., 1] * out_w + cells[..., 0]  # (n, kinds)

    if gaussian_bump:
        box_w = tf.math.ceil((x2 - x1) * (out_w / in_w))
        box_h = tf.math.ceil((y2 - y1) * (out_h / in_h))
        radius = gaussian_radius((box_h, box_w), gaussian_iou, variant=radius_variant)
        # int() truncates toward 0; with max(0, .) that equals floor.
        radii = tf.cast(tf.maximum(tf.floor(radius), 0.0), tf.int32)
    else:
        radii = tf.zeros([num_objects], tf.int32)

    count = tf.minimum(num_objects, max_objects)
    names = ("tl", "br", "ct")[:num_kinds]
    targets = {}
    if heatmaps == "sparse":
        limit = max_keypoint_objects(max_objects)
        kept = tf.minimum(num_objects, limit)
        targets["keypoint_cells"] = _pad_slots(cells, kept, limit)
        targets["keypoint_radii"] = _pad_slots(radii, kept, limit)
        targets["keypoint_classes"] = _pad_slots(classes + 1, kept, limit) - 1
    else:
        maps = _draw(cells, radii, classes, num_kinds, out_h, out_w, num_classes)
        for k, name in enumerate(names):  # over the 2 or 3 keypoint kinds
            targets[f"{name}_heatmap"] = tf.ensure_shape(maps[k], [out_h, out_w, num_classes])
    for k, name in enumerate(names):
        targets[f"{name}_offset"] = _pad_slots(offsets[:, k], count, max_objects)
        targets[f"{name}_index"] = _pad_slots(indices[:, k], count, max_objects)
    targets["mask"] = _pad_slots(tf.ones([num_objects], tf.float32), count, max_objects)
    targets["num_objects"] = num_objects
    return targets


def max_keypoint_objects(max_objects: int) -> int:
    """Objects whose keypoints sparse targets carry: ``max(2 * max_objects, 256)``.

    Dense heatmaps hold every object; sparse ones the first this many
    (more than any COCO image has after cropping, 93 at most).
    """
    return max(2 * int(max_objects), 256)


def _draw(cells, radii, classes, num_kinds, out_h, out_w, num_classes):
    """The ``(kinds, H, W, C)`` heatmaps of one image's keypoints ``cells (n, kinds, 2)``."""
    num_objects = tf.shape(radii)[0]
    # All kinds at once, kind-major: keypoint k * n + i is kind k, object i.
    kind_cells = tf.reshape(tf.transpose(cells, [1, 0, 2]), [-1, 2])
    kind_radii = tf.tile(radii, [num_kinds])
    divisors = [CORNER_SIGMA_DIVISOR, CORNER_SIGMA_DIVISOR, CENTER_SIGMA_DIVISOR]
    kind_divisors = tf.repeat(
        tf.constant(divisors[:num_kinds], tf.float32), num_objects
    )
    kinds = tf.repeat(tf.range(num_kinds), num_objects)
    maps = draw_windows(
        kind_cells, kind_radii, kind_divisors, kinds, tf.tile(classes, [num_kinds]),
        num_kinds, out_h, out_w, num_classes,
    )
    return maps
