"""Decoding of CornerNet / CenterNet head outputs into detections (SPEC §7).

Everything here is pure TensorFlow with static output shapes, so the whole
decoding (after the network) runs inside one `tf.function` and exports with
the model. Two coordinate systems appear, and every docstring says which:

- *output-grid cells*: coordinates on the heatmaps, ``(input + 1) / 4`` cells
  per side; a keypoint's position is its integer cell plus its predicted
  offset (x then y).
- *image pixels*: coordinates in the original (unresized, unpadded) image,
  continuous, with the image spanning ``[0, width] x [0, height]``.

Boxes are ``[x1, y1, x2, y2]`` throughout. Invalid candidates carry the score
``-1`` (the releases' convention) until the final, padded outputs.

The pipeline, as `decode_detections` runs it (SPEC §7 steps):

1. `decode_keypoints`: sigmoid, 3x3 max-pool NMS (`heatmap_nms`), top-K over
   (class, y, x) (`topk_keypoints`), offsets added.
2. `pair_corners`: all K x K (top-left, bottom-right) pairs, rejected on class,
   embedding distance and orientation; the best ``num_dets`` kept.
3. `mirror_boxes` / `mirror_points`: flipped-image detections mirrored back.
4. `boxes_to_image` / `points_to_image`: output-grid cells -> image pixels,
   border rejection, clipping, division by the test scale.
5. `central_region_filter` (CenterNet, eq. 1 of the paper).
6. `soft_nms`: per-class Gaussian soft-NMS (or the weighted "merge"
   variant) that also keeps the best ``max_detections`` (SPEC §7.6-7.7).
"""

from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional, Sequence, Union

import tensorflow as tf

from tf_centernet.config import DecodeConfig

__all__ = [
    "ScaleGeometry",
    "heatmap_nms",
    "topk_keypoints",
    "gather_cells",
    "decode_keypoints",
    "pair_corners",
    "decode_outputs",
    "mirror_boxes",
    "mirror_points",
    "boxes_to_image",
    "points_to_image",
    "central_region_filter",
    "box_iou",
    "soft_nms",
    "soft_nms_with_tf_op",
    "top_detections",
    "decode_detections",
]

INVALID_SCORE = -1.0


class ScaleGeometry(NamedTuple):
    """Where the images of one test scale sit in the network input (SPEC §7.5).

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


# --------------------------------------------------------------------------
# Step 1: keypoints.
# --------------------------------------------------------------------------


def heatmap_nms(heatmap: tf.Tensor, kernel: int = 3) -> tf.Tensor:
    """Max-pool "NMS" on a heatmap of probabilities (SPEC §7.1).

    A cell is kept when it equals the maximum of its ``kernel x kernel``
    neighbourhood (so plateaus of equal values all survive, as in the
    releases); other cells are set to 0. Cells outside the map never win
    (``SAME`` max pooling ignores the padding, like PyTorch's -inf padding).

    Args:
        heatmap: float tensor `(batch, height, width, classes)`. Probabilities
            (after the sigmoid).
        kernel: int. Odd neighbourhood size. Defaults to `3`.

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
    height, width, channels = shape[1], shape[2], shape[3]
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


def gather_cells(feature: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
    """Values of a feature map at flat cell indices.

    Args:
        feature: tensor `(batch, height, width, depth)`.
        indices: int32 tensor `(batch, k)`, ``y * width + x``.

    Returns:
        Tensor `(batch, k, depth)`.
    """
    shape = tf.shape(feature)
    flat = tf.reshape(feature, [shape[0], shape[1] * shape[2], shape[3]])
    return tf.gather(flat, indices, batch_dims=1)


def decode_keypoints(
    heatmap_logits: tf.Tensor,
    offsets: Optional[tf.Tensor],
    k: int,
    kernel: int = 3,
) -> Dict[str, tf.Tensor]:
    """Top-K keypoints of one heatmap with their sub-cell offsets (SPEC §7.1-7.2).

    Args:
        heatmap_logits: float tensor `(batch, height, width, classes)`.
            Pre-sigmoid logits.
        offsets: float tensor `(batch, height, width, 2)` or None. Offsets
            (x then y) in output-grid cells, added to the integer cell.
        k: int. Number of keypoints.
        kernel: int. Max-pool NMS kernel. Defaults to `3`.

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


# --------------------------------------------------------------------------
# Step 2: corner pairs.
# --------------------------------------------------------------------------


def pair_corners(
    tl: Dict[str, tf.Tensor],
    br: Dict[str, tf.Tensor],
    tl_embedding: tf.Tensor,
    br_embedding: tf.Tensor,
    ae_threshold: float = 0.5,
    num_dets: int = 1000,
) -> Dict[str, tf.Tensor]:
    """Boxes from all (top-left, bottom-right) pairs (SPEC §7.3).

    Pair (i, j) makes the box ``(tl_x_i, tl_y_i, br_x_j, br_y_j)`` with score
    ``(tl_score_i + br_score_j) / 2``; the score is set to -1 when the classes
    differ, when ``|e_tl_i - e_br_j| > ae_threshold``, when ``br_x < tl_x`` or
    when ``br_y < tl_y`` (touching corners, ``br_x == tl_x``, are allowed, as
    in the releases). The best ``min(num_dets, K * K)`` pairs are kept, ordered
    by score (flattened ``i * K + j``, ties lowest index first).

    Args:
        tl: dict from `decode_keypoints` for the top-left heatmap (K points).
        br: the same for the bottom-right heatmap (K points).
        tl_embedding: float tensor `(batch, height, width, 1)`. Only channel 0
            is used.
        br_embedding: float tensor `(batch, height, width, 1)`.
        ae_threshold: float. Largest accepted embedding distance. Defaults to
            `0.5`.
        num_dets: int. Pairs kept. Defaults to `1000`.

    Returns:
        dict with
        - ``boxes``: float32 `(batch, n, 4)`, output-grid cells.
        - ``scores``: float32 `(batch, n)`, -1 for rejected pairs.
        - ``tl_scores``, ``br_scores``: float32 `(batch, n)`.
        - ``classes``: int32 `(batch, n)` (the top-left corner's class).
        where ``n = min(num_dets, K * K)``.
    """
    k = tl["scores"].shape[1]
    if k is None:
        raise ValueError("The number of keypoints K must be static.")
    n = min(num_dets, k * k)
    batch = tf.shape(tl["scores"])[0]

    tl_e = gather_cells(tf.cast(tl_embedding, tf.float32), tl["indices"])[..., 0]
    br_e = gather_cells(tf.cast(br_embedding, tf.float32), br["indices"])[..., 0]

    # (batch, K, K): i indexes top-left corners, j bottom-right corners.
    tl_x = tl["xs"][:, :, None] + tf.zeros_like(br["xs"][:, None, :])
    tl_y = tl["ys"][:, :, None] + tf.zeros_like(br["ys"][:, None, :])
    br_x = br["xs"][:, None, :] + tf.zeros_like(tl["xs"][:, :, None])
    br_y = br["ys"][:, None, :] + tf.zeros_like(tl["ys"][:, :, None])
    tl_s = tl["scores"][:, :, None] + tf.zeros_like(br["scores"][:, None, :])
    br_s = br["scores"][:, None, :] + tf.zeros_like(tl["scores"][:, :, None])
    tl_c = tl["classes"][:, :, None] + tf.zeros_like(br["classes"][:, None, :])
    br_c = br["classes"][:, None, :] + tf.zeros_like(tl["classes"][:, :, None])
    dists = tf.abs(tl_e[:, :, None] - br_e[:, None, :])

    scores = (tl_s + br_s) / 2.0
    reject = (
        tf.not_equal(tl_c, br_c)
        | (dists > ae_threshold)
        | (br_x < tl_x)
        | (br_y < tl_y)
    )
    scores = tf.where(reject, tf.constant(INVALID_SCORE, tf.float32), scores)

    # (batch, K * K) -> best n pairs.
    scores, inds = tf.math.top_k(tf.reshape(scores, [batch, k * k]), k=n)
    boxes = tf.reshape(tf.stack([tl_x, tl_y, br_x, br_y], axis=-1), [batch, k * k, 4])

    def take(t):
        return tf.gather(tf.reshape(t, [batch, k * k]), inds, batch_dims=1)

    return {
        "boxes": tf.gather(boxes, inds, batch_dims=1),
        "scores": scores,
        "tl_scores": take(tl_s),
        "br_scores": take(br_s),
        "classes": take(tl_c),
    }


def decode_outputs(
    outputs: Dict[str, tf.Tensor],
    config: DecodeConfig,
    use_centers: bool,
) -> Dict[str, tf.Tensor]:
    """Steps 1-2 of SPEC §7 for every image of a model output batch.

    Args:
        outputs: dict of float tensors `(batch, height, width, channels)` as
            returned by the model (see `decode_detections`).
        config: `DecodeConfig`. Uses ``top_k``, ``nms_kernel``,
            ``ae_threshold``, ``num_dets``.
        use_centers: bool. Also decode ``ct_heatmap``/``ct_offset``.

    Returns:
        dict with the keys of `pair_corners` (output-grid cells) and, when
        `use_centers`, ``centers`` float32 `(batch, K, 2)` (x, y in cells),
        ``center_scores`` float32 `(batch, K)`, ``center_classes`` int32
        `(batch, K)`.

    Raises:
        KeyError: a required output is missing.
    """
    required = [
        "tl_heatmap", "br_heatmap", "tl_embedding", "br_embedding",
        "tl_offset", "br_offset",
    ]
    if use_centers:
        required += ["ct_heatmap", "ct_offset"]
    missing = [key for key in required if key not in outputs]
    if missing:
        raise KeyError(
            f"Model outputs lack {missing} (have {sorted(outputs)}); "
            + ("CornerNet models have no center outputs: decode them with "
               "use_centers=False." if use_centers else "")
        )
    k, kernel = config.top_k, config.nms_kernel
    tl = decode_keypoints(outputs["tl_heatmap"], outputs["tl_offset"], k, kernel)
    br = decode_keypoints(outputs["br_heatmap"], outputs["br_offset"], k, kernel)
    dets = pair_corners(
        tl, br, outputs["tl_embedding"], outputs["br_embedding"],
        ae_threshold=config.ae_threshold, num_dets=config.num_dets,
    )
    if use_centers:
        ct = decode_keypoints(outputs["ct_heatmap"], outputs["ct_offset"], k, kernel)
        dets["centers"] = tf.stack([ct["xs"], ct["ys"]], axis=-1)
        dets["center_scores"] = ct["scores"]
        dets["center_classes"] = ct["classes"]
    return dets


# --------------------------------------------------------------------------
# Steps 3-4: flip and mapping to image pixels.
# --------------------------------------------------------------------------


def mirror_boxes(boxes: tf.Tensor, output_width) -> tf.Tensor:
    """Mirrors boxes of a horizontally flipped input back (SPEC §7.5).

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
    border_tolerance: float = 5.0,
):
    """Output-grid boxes -> original-image pixels (SPEC §7.5).

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
            `5.0`.

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
    """Output-grid (x, y) points -> original-image pixels, clipped (SPEC §7.4).

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


# --------------------------------------------------------------------------
# Step 5: central region.
# --------------------------------------------------------------------------


def central_region_filter(
    boxes: tf.Tensor,
    scores: tf.Tensor,
    classes: tf.Tensor,
    centers: tf.Tensor,
    center_scores: tf.Tensor,
    center_classes: tf.Tensor,
    small_region_n: int = 3,
    large_region_n: int = 5,
    region_area_threshold: float = 22500.0,
) -> tf.Tensor:
    """Keeps boxes whose central region holds a center of their class (SPEC §7.4).

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
        small_region_n: int. n for small boxes. Defaults to `3`.
        large_region_n: int. n for large boxes. Defaults to `5`.
        region_area_threshold: float. Area (pixels^2) up to which a box is
            small. Defaults to `22500.0` (150^2).

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


# --------------------------------------------------------------------------
# Step 6-7: soft-NMS and top-N.
# --------------------------------------------------------------------------


def box_iou(box: tf.Tensor, boxes: tf.Tensor, inclusive: bool = True) -> tf.Tensor:
    """IoU of one box per image against many.

    With `inclusive`, widths and heights are ``x2 - x1 + 1`` (the releases'
    pixel-inclusive convention of their soft-NMS); overlaps below zero count
    as no overlap.

    Args:
        box: float32 tensor `(batch, 4)`.
        boxes: float32 tensor `(batch, n, 4)`.
        inclusive: bool. Add 1 to widths and heights. Defaults to `True`.

    Returns:
        float32 tensor `(batch, n)`.
    """
    one = 1.0 if inclusive else 0.0
    bx1, by1, bx2, by2 = [t[:, None] for t in tf.unstack(box, axis=-1)]
    x1, y1, x2, y2 = tf.unstack(boxes, axis=-1)
    iw = tf.maximum(tf.minimum(bx2, x2) - tf.maximum(bx1, x1) + one, 0.0)
    ih = tf.maximum(tf.minimum(by2, y2) - tf.maximum(by1, y1) + one, 0.0)
    inter = iw * ih
    union = (bx2 - bx1 + one) * (by2 - by1 + one) + (x2 - x1 + one) * (y2 - y1 + one) - inter
    return tf.math.divide_no_nan(inter, union)


def soft_nms(
    boxes: tf.Tensor,
    scores: tf.Tensor,
    classes: tf.Tensor,
    max_detections: int = 100,
    sigma: float = 0.5,
    score_threshold: float = 0.001,
    method: str = "gaussian",
    tl_scores: Optional[tf.Tensor] = None,
    br_scores: Optional[tf.Tensor] = None,
    weight_exp: float = 8.0,
    inclusive: bool = True,
) -> Dict[str, tf.Tensor]:
    """Per-class Gaussian soft-NMS that keeps the best `max_detections` (SPEC §7.6-7.7).

    Greedy, as Bodla et al. and the releases' `soft_nms`: repeatedly select
    the remaining box with the highest current score; every remaining box of
    the same class is multiplied by ``exp(-IoU^2 / sigma)`` (IoU with the
    selected box, pixel-inclusive areas when `inclusive`), and boxes whose
    score is then below `score_threshold` are removed. Classes never
    interact, so one loop over all classes gives the per-class result; and
    since the remaining scores only decrease, the selections come out in
    non-increasing score order, so the first `max_detections` selections are
    exactly the best `max_detections` per image after per-class soft-NMS. The
    loop therefore stops after `max_detections` selections.

    With ``method="merge"`` (the releases' `soft_nms_merge`) the selected box
    is replaced by the weighted mean of itself and the remaining overlapping
    boxes of its class, each weighted by ``(1 - w)^weight_exp`` (w: its
    Gaussian weight) times its top-left score for x1, y1 and its
    bottom-right score for x2, y2; scores decay as in ``"gaussian"``.

    Args:
        boxes: float32 tensor `(batch, n, 4)`, image pixels.
        scores: float32 tensor `(batch, n)`; boxes below `score_threshold`
            (including the -1 of rejected candidates) never enter.
        classes: int32 tensor `(batch, n)`.
        max_detections: int. Selections per image. Defaults to `100`.
        sigma: float. Gaussian parameter (release form exp(-IoU^2/sigma)).
            Defaults to `0.5`.
        score_threshold: float. Defaults to `0.001`.
        method: str. ``"gaussian"`` or ``"merge"``. Defaults to
            `"gaussian"`.
        tl_scores: float32 tensor `(batch, n)` or None. Needed for "merge".
        br_scores: float32 tensor `(batch, n)` or None. Needed for "merge".
        weight_exp: float. Exponent of the merge weights. Defaults to `8.0`.
        inclusive: bool. Pixel-inclusive IoU (`box_iou`). Defaults to `True`.

    Returns:
        dict with ``boxes`` float32 `(batch, max_detections, 4)`, ``scores``
        float32 `(batch, max_detections)` (score at selection),
        ``classes`` int32 `(batch, max_detections)`, ``num_detections``
        int32 `(batch,)`; rows past ``num_detections`` are zero.

    Raises:
        ValueError: unknown `method`, or "merge" without corner scores.
    """
    if method not in ("gaussian", "merge"):
        raise ValueError(f"soft_nms method must be 'gaussian' or 'merge', got {method!r}.")
    merge = method == "merge"
    if merge and (tl_scores is None or br_scores is None):
        raise ValueError("soft_nms(method='merge') needs tl_scores and br_scores.")
    boxes = tf.cast(boxes, tf.float32)
    scores = tf.cast(scores, tf.float32)
    classes = tf.cast(classes, tf.int32)
    batch = tf.shape(scores)[0]
    n = tf.shape(scores)[1]
    if merge:
        tl_scores = tf.cast(tl_scores, tf.float32)
        br_scores = tf.cast(br_scores, tf.float32)
    else:
        tl_scores = br_scores = tf.zeros_like(scores)

    active0 = scores >= score_threshold
    out_boxes0 = tf.zeros([batch, max_detections, 4], tf.float32)
    out_scores0 = tf.zeros([batch, max_detections], tf.float32)
    out_classes0 = tf.zeros([batch, max_detections], tf.int32)
    count0 = tf.zeros([batch], tf.int32)
    neg_inf = tf.constant(float("-inf"), tf.float32)

    def cond(i, active, current, out_boxes, out_scores, out_classes, count):
        return (i < max_detections) & tf.reduce_any(active)

    def body(i, active, current, out_boxes, out_scores, out_classes, count):
        has = tf.reduce_any(active, axis=1)  # (batch,)
        # top_k(k=1) picks the lowest index among equal maxima.
        best_score, best = tf.math.top_k(tf.where(active, current, neg_inf), k=1)
        best_score, best = best_score[:, 0], best[:, 0]  # (batch,)
        best_box = tf.gather(boxes, best, batch_dims=1)  # (batch, 4)
        best_class = tf.gather(classes, best, batch_dims=1)
        is_best = tf.one_hot(best, n, on_value=True, off_value=False, dtype=tf.bool)
        iou = box_iou(best_box, boxes, inclusive)  # (batch, n)
        same = active & ~is_best & tf.equal(classes, best_class[:, None])
        weight = tf.exp(-(iou * iou) / sigma)
        if merge:
            mw = tf.where(same & (iou > 0.0), tf.pow(1.0 - weight, weight_exp), 0.0)
            tw = tl_scores * mw  # (batch, n)
            bw = br_scores * mw
            best_tl = tf.gather(tl_scores, best, batch_dims=1)
            best_br = tf.gather(br_scores, best, batch_dims=1)
            bx1, by1, bx2, by2 = tf.unstack(best_box, axis=-1)
            x1, y1, x2, y2 = tf.unstack(boxes, axis=-1)
            mts = best_tl + tf.reduce_sum(tw, axis=1)
            mbs = best_br + tf.reduce_sum(bw, axis=1)
            merged = tf.stack(
                [
                    (bx1 * best_tl + tf.reduce_sum(x1 * tw, axis=1)) / mts,
                    (by1 * best_tl + tf.reduce_sum(y1 * tw, axis=1)) / mts,
                    (bx2 * best_br + tf.reduce_sum(x2 * bw, axis=1)) / mbs,
                    (by2 * best_br + tf.reduce_sum(y2 * bw, axis=1)) / mbs,
                ],
                axis=-1,
            )
            ok = (mts > 0.0) & (mbs > 0.0)
            best_box = tf.where(ok[:, None], merged, best_box)
        current = tf.where(same, current * weight, current)
        active = active & ~is_best & (current >= score_threshold)

        slot = tf.one_hot(i, max_detections, on_value=True, off_value=False, dtype=tf.bool)
        write = slot[None, :] & has[:, None]  # (batch, max_detections)
        out_boxes = tf.where(write[..., None], best_box[:, None, :], out_boxes)
        out_scores = tf.where(write, best_score[:, None], out_scores)
        out_classes = tf.where(write, best_class[:, None], out_classes)
        count = count + tf.cast(has, tf.int32)
        return i + 1, active, current, out_boxes, out_scores, out_classes, count

    _, _, _, out_boxes, out_scores, out_classes, count = tf.while_loop(
        cond,
        body,
        (tf.constant(0), active0, scores, out_boxes0, out_scores0, out_classes0, count0),
        maximum_iterations=max_detections,
    )
    return {
        "boxes": out_boxes,
        "scores": out_scores,
        "classes": out_classes,
        "num_detections": count,
    }


def soft_nms_with_tf_op(
    boxes: tf.Tensor,
    scores: tf.Tensor,
    classes: tf.Tensor,
    max_detections: int = 100,
    sigma: float = 0.5,
    score_threshold: float = 0.001,
) -> Dict[str, tf.Tensor]:
    """Per-class Gaussian soft-NMS of one image with TF's built-in kernel.

    An alternative to `soft_nms` (which `decode_detections` uses), kept for
    comparison and for runtimes that prefer the fused kernel. TensorFlow's
    `non_max_suppression_with_scores` weighs by ``exp(-0.5 / soft_nms_sigma *
    IoU^2)`` (`non_max_suppression_op.cc`: ``scale = -0.5 / soft_nms_sigma``)
    = ``exp(-IoU^2 / (2 soft_nms_sigma))``, so ``soft_nms_sigma = sigma / 2``
    reproduces the releases' ``exp(-IoU^2 / sigma)``; `iou_threshold` = 1 so
    that no box is hard-suppressed (older kernels zero the weight above it).
    Differences from `soft_nms`: IoU with exclusive areas (no +1), boxes at
    exactly `score_threshold` are dropped (the kernel keeps ``> threshold``).
    Classes are separated by shifting each class's boxes by
    ``class * (max coordinate + 1)`` along both axes.

    Args:
        boxes: float32 tensor `(n, 4)` ``[x1, y1, x2, y2]``, image pixels.
        scores: float32 tensor `(n,)`.
        classes: int32 tensor `(n,)`.
        max_detections: int. Defaults to `100`.
        sigma: float. Release-form Gaussian parameter. Defaults to `0.5`.
        score_threshold: float. Defaults to `0.001`.

    Returns:
        dict with ``boxes`` `(max_detections, 4)`, ``scores``, ``classes``,
        ``num_detections`` (scalar int32), zero-padded.
    """
    boxes = tf.cast(boxes, tf.float32)
    shift = tf.reduce_max(tf.abs(boxes)) + 1.0
    offset = tf.cast(classes, tf.float32)[:, None] * shift
    # TF's kernel takes [y1, x1, y2, x2]; the kernel is symmetric in x and y.
    shifted = tf.gather(boxes, [1, 0, 3, 2], axis=1) + offset
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


def top_detections(
    boxes: tf.Tensor, scores: tf.Tensor, classes: tf.Tensor, max_detections: int = 100
) -> Dict[str, tf.Tensor]:
    """The `max_detections` best valid (score > -1) boxes, without NMS.

    Args:
        boxes: float32 tensor `(batch, n, 4)`.
        scores: float32 tensor `(batch, n)`.
        classes: int32 tensor `(batch, n)`.
        max_detections: int. Defaults to `100`.

    Returns:
        The dict of `soft_nms`.
    """
    n = scores.shape[1]
    k = max_detections if n is None else min(max_detections, n)
    valid = scores > INVALID_SCORE
    masked = tf.where(valid, scores, float("-inf"))
    top, inds = tf.math.top_k(masked, k=k)
    keep = tf.math.is_finite(top)
    pad = [[0, 0], [0, max_detections - k]]
    out_boxes = tf.where(keep[..., None], tf.gather(boxes, inds, batch_dims=1), 0.0)
    out_scores = tf.where(keep, top, 0.0)
    out_classes = tf.where(keep, tf.gather(classes, inds, batch_dims=1), 0)
    return {
        "boxes": tf.pad(out_boxes, pad + [[0, 0]]),
        "scores": tf.pad(out_scores, pad),
        "classes": tf.pad(out_classes, pad),
        "num_detections": tf.reduce_sum(tf.cast(keep, tf.int32), axis=1),
    }


# --------------------------------------------------------------------------
# The whole pipeline.
# --------------------------------------------------------------------------


def _as_float_dict(outputs) -> Dict[str, tf.Tensor]:
    if isinstance(outputs, (list, tuple)):
        # Training-mode models return one dict per stack: the last one decodes.
        outputs = outputs[-1]
    if not isinstance(outputs, dict):
        raise TypeError(
            f"Model outputs must be a dict of tensors, got {type(outputs).__name__}."
        )
    return {key: tf.cast(value, tf.float32) for key, value in outputs.items()}


def decode_detections(
    outputs: Union[Dict[str, tf.Tensor], Sequence[Dict[str, tf.Tensor]]],
    geometry: Union[ScaleGeometry, Sequence[ScaleGeometry]],
    config: Optional[DecodeConfig] = None,
    use_centers: bool = True,
    flip_test: Optional[bool] = None,
) -> Dict[str, tf.Tensor]:
    """Model outputs of every test scale -> final detections (SPEC §7).

    For each scale: keypoints and corner pairs per network input
    (`decode_outputs`); with `flip_test`, the second half of the batch holds
    the horizontally flipped inputs, whose boxes and centers are mirrored
    back (`mirror_boxes`) and concatenated after the unflipped ones; all are
    mapped to original-image pixels (`boxes_to_image`). Then, over all
    scales: the central-region filter with the centers of scale 1 (both
    flips, unflipped first) when `use_centers`; per-class soft-NMS and the
    best ``max_detections`` (`soft_nms`, or `top_detections` for
    ``nms="none"``).

    Args:
        outputs: dict, or list with one dict per scale (in the order of
            `geometry`), of float tensors `(batch', H_out, W_out, channels)`
            with ``batch' = 2 * batch`` under `flip_test` (unflipped images
            first) else ``batch``: ``tl_heatmap``/``br_heatmap`` (logits,
            `num_classes` channels), ``tl_embedding``/``br_embedding`` (1),
            ``tl_offset``/``br_offset`` (2: x, y in cells) and, when
            `use_centers`, ``ct_heatmap`` and ``ct_offset``. A list of such
            dicts (one per hourglass stack) decodes its last entry.
        geometry: `ScaleGeometry`, or a list with one per scale.
        config: `DecodeConfig`. Defaults to `DecodeConfig()`.
        use_centers: bool. Apply the central-region filter (CenterNet).
            Defaults to `True`.
        flip_test: bool or None. Whether the batch holds flipped copies.
            Defaults to ``config.flip_test``.

    Returns:
        dict with
        - ``boxes``: float32 `(batch, max_detections, 4)`, ``[x1, y1, x2,
          y2]`` in original-image pixels.
        - ``scores``: float32 `(batch, max_detections)`.
        - ``classes``: int32 `(batch, max_detections)`, 0-based.
        - ``num_detections``: int32 `(batch,)`.
        Rows past ``num_detections`` are zero.

    Raises:
        ValueError: mismatched lists, centers requested without a scale 1,
            or an unknown ``config.nms``.
        KeyError: a required model output is missing.
    """
    config = config or DecodeConfig()
    flip = config.flip_test if flip_test is None else bool(flip_test)
    if isinstance(outputs, dict) or (
        isinstance(outputs, (list, tuple)) and isinstance(geometry, ScaleGeometry)
    ):
        outputs = [outputs]
    if isinstance(geometry, ScaleGeometry):
        geometry = [geometry]
    if len(outputs) != len(geometry):
        raise ValueError(
            f"Got {len(outputs)} model outputs for {len(geometry)} scales."
        )
    if config.nms not in ("gaussian", "merge", "none"):
        raise ValueError(
            f"decode.nms must be 'gaussian', 'merge' or 'none', got {config.nms!r}."
        )
    center_scale = None
    if use_centers:
        matches = [i for i, g in enumerate(geometry) if float(g.scale) == 1.0]
        if not matches:
            raise ValueError(
                "The central-region filter uses the centers of scale 1 (SPEC "
                f"§7.4), but the test scales are {[g.scale for g in geometry]}."
            )
        center_scale = matches[0]

    keys = ("boxes", "scores", "tl_scores", "br_scores", "classes")
    parts: Dict[str, List[tf.Tensor]] = {key: [] for key in keys}
    centers = center_scores = center_classes = None
    for index, (out, geo) in enumerate(zip(outputs, geometry)):
        out = _as_float_dict(out)
        with_centers = index == center_scale
        dets = decode_outputs(out, config, use_centers=with_centers)
        if flip:
            out_width = tf.cast(tf.shape(out["tl_heatmap"])[2], tf.float32)
            total = tf.shape(dets["scores"])[0]
            tf.debugging.assert_equal(
                total % 2, 0,
                message="flip_test expects a batch of [images, flipped images].",
            )
            half = total // 2

            def merge_halves(t, mirror=None):
                first, second = t[:half], t[half:]
                if mirror is not None:
                    second = mirror(second, out_width)
                return tf.concat([first, second], axis=1)

            dets = {
                key: merge_halves(value, mirror_boxes if key == "boxes" else None)
                if key in keys else value
                for key, value in dets.items()
            }
            if with_centers:
                dets["centers"] = merge_halves(dets["centers"], mirror_points)
                dets["center_scores"] = merge_halves(dets["center_scores"])
                dets["center_classes"] = merge_halves(dets["center_classes"])
        boxes, scores = boxes_to_image(
            dets["boxes"], dets["scores"], geo, config.border_tolerance
        )
        parts["boxes"].append(boxes)
        parts["scores"].append(scores)
        for key in ("tl_scores", "br_scores", "classes"):
            parts[key].append(dets[key])
        if with_centers:
            centers = points_to_image(dets["centers"], geo)
            center_scores = dets["center_scores"]
            center_classes = dets["center_classes"]

    # (batch, scales * flips * num_dets, ...)
    merged = {key: tf.concat(value, axis=1) for key, value in parts.items()}
    scores = merged["scores"]
    if use_centers:
        scores = central_region_filter(
            merged["boxes"], scores, merged["classes"],
            centers, center_scores, center_classes,
            small_region_n=config.small_region_n,
            large_region_n=config.large_region_n,
            region_area_threshold=config.region_area_threshold,
        )
    if config.nms == "none":
        return top_detections(
            merged["boxes"], scores, merged["classes"], config.max_detections
        )
    return soft_nms(
        merged["boxes"], scores, merged["classes"],
        max_detections=config.max_detections,
        sigma=config.soft_nms_sigma,
        score_threshold=config.score_threshold,
        method=config.nms,
        tl_scores=merged["tl_scores"],
        br_scores=merged["br_scores"],
        weight_exp=config.merge_weight_exp,
    )
