"""Steps 6-7 of decoding: per-class soft-NMS and the best detections.

Bodla et al., "Soft-NMS" (2017), in the releases' form; see docs/reference.md,
"Soft-NMS".
"""

from __future__ import annotations

from typing import Dict, Optional

import tensorflow as tf

from tf_centernet.config import CHOICES, DecodeConfig, check_choice
from tf_centernet.decode.geometry import INVALID_SCORE
from tf_centernet.decode.soft_nms_parallel import class_grid, class_parallel_soft_nms, columns

_DEFAULTS = DecodeConfig()
SOFT_NMS_IMPLS = CHOICES["decode.soft_nms_impl"]


@tf.autograph.experimental.do_not_convert  # plain Python, run while tracing
def resolve_soft_nms_impl(impl: str = "auto", static_shapes: bool = False) -> str:
    """The soft-NMS `impl` stands for here and now: "custom" or "loop".

    ``"auto"`` is the compiled op (`tf_centernet.ops.custom.soft_nms`) where
    it loads, except with `static_shapes`, inside an XLA-compiled function,
    `tf.saved_model.save` or `tf_centernet.ops.scan_only` (graphs that must
    run without our library: exports); there, and where the library cannot
    be built or loaded (one `CustomOpsFallbackWarning` per process), the
    TensorFlow loop.

    Args:
        impl: str. "auto", "custom" or "loop". Defaults to "auto".
        static_shapes: bool. As `soft_nms`. Defaults to False.

    Returns:
        str. "custom" or "loop".

    Raises:
        ValueError: unknown `impl`, or "custom" under XLA.
        CustomOpsUnavailable: "custom" and the library cannot be loaded.
    """
    check_choice("decode.soft_nms_impl", impl)
    if impl == "loop":
        return "loop"
    from tf_centernet.ops import custom, pooling

    if impl == "custom":
        if pooling.in_xla_context():
            raise ValueError(
                "soft_nms impl='custom' cannot run inside an XLA-compiled function "
                "(jit_compile=True): XLA has no kernel for it. Use 'auto' or 'loop'."
            )
        custom.load()
        return "custom"
    if static_shapes or pooling.in_portable_context():
        return "loop"
    try:
        custom.load()
    except custom.CustomOpsUnavailable as error:
        custom.warn_fallback(custom.short_reason(error), what="soft_nms")
        return "loop"
    return "custom"


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


def _compact(valid: tf.Tensor, static_shapes: bool) -> tf.Tensor:
    """Indices `(batch, m)` of the valid candidates first, in their original order.

    ``m`` is the largest number of valid candidates in an image (all ``n``
    with `static_shapes`, for XLA); later columns of an image point at
    invalid candidates. The original order is kept so that ties between
    equal scores resolve to the same candidate as over the full arrays.
    """
    order = tf.argsort(tf.cast(~valid, tf.int32), axis=1, stable=True)
    if static_shapes:
        return order
    m = tf.reduce_max(tf.reduce_sum(tf.cast(valid, tf.int32), axis=1))
    return order[:, :m]


def soft_nms(
    boxes: tf.Tensor, scores: tf.Tensor, classes: tf.Tensor,
    max_detections: int = _DEFAULTS.max_detections,
    sigma: float = _DEFAULTS.soft_nms_sigma,
    score_threshold: float = _DEFAULTS.score_threshold,
    method: str = "gaussian",
    tl_scores: Optional[tf.Tensor] = None,
    br_scores: Optional[tf.Tensor] = None,
    weight_exp: float = _DEFAULTS.merge_weight_exp,
    inclusive: bool = True,
    static_shapes: bool = False,
    loop: str = "auto",
    impl: str = "auto",
) -> Dict[str, tf.Tensor]:
    """Per-class Gaussian soft-NMS that keeps the best `max_detections` (docs/reference.md §7.6-7.7).

    Greedy, as Bodla et al. and the releases' `soft_nms`: repeatedly select
    the remaining box with the highest current score; every remaining box of
    the same class is multiplied by ``exp(-IoU^2 / sigma)`` (IoU with the
    selected box, pixel-inclusive areas when `inclusive`), and boxes whose
    score is then below `score_threshold` are removed. Classes never
    interact, so one loop over all classes gives the per-class result; and
    since the remaining scores only decrease, the selections come out in
    non-increasing score order, so the first `max_detections` selections are
    exactly the best `max_detections` per image after per-class soft-NMS. The
    loop therefore stops after `max_detections` selections, or when no box
    is left. It runs over the candidates at or above `score_threshold` only
    (gathered once, in their original order so that ties resolve to the
    same box). When the classes are spread enough, every iteration selects
    the best box of every class at once (`class_parallel_soft_nms`, same
    selections and scores); otherwise, and with `static_shapes` (XLA, then
    over all `n`), one selection per iteration.

    Two implementations give these selections: the compiled op
    (`tf_centernet.ops.custom.soft_nms`: a max-heap over the classes, each
    selection one vectorised pass over its class; about 0.5 ms per image
    for 2000 candidates against 2-5 ms for the loops, benchmarks/soft_nms.py)
    and the TensorFlow loops described above (portable: XLA, SavedModel,
    TFLite, ONNX). ``impl="auto"`` picks the compiled op where it loads and
    the graph may depend on it (see `resolve_soft_nms_impl`). Both select
    the same boxes in the same order with the same float32 arithmetic:
    scores agree to the last bit on the test cases (at most one unit in the
    last place where only one side takes `exp`'s scalar path), merged boxes
    to float rounding.

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
        max_detections: int. Selections per image. Defaults to ``DecodeConfig.max_detections``.
        sigma: float. Gaussian parameter (release form exp(-IoU^2/sigma)).
            Defaults to ``DecodeConfig.soft_nms_sigma``.
        score_threshold: float. Defaults to ``DecodeConfig.score_threshold``.
        method: str. ``"gaussian"`` or ``"merge"``. Defaults to
            `"gaussian"`.
        tl_scores: float32 tensor `(batch, n)` or None. Needed for "merge".
        br_scores: float32 tensor `(batch, n)` or None. Needed for "merge".
        weight_exp: float. Exponent of the merge weights. Defaults to ``DecodeConfig.merge_weight_exp``.
        inclusive: bool. Pixel-inclusive IoU (`box_iou`). Defaults to `True`.
        static_shapes: bool. One selection per iteration over all `n`
            candidates instead of the class-parallel loop over the valid
            ones, so that every shape is static (needed under XLA,
            ``jit_compile=True``). Same results (merged boxes within float
            rounding). Defaults to `False`.
        loop: str. Without `static_shapes`: ``"classes"`` (all classes per
            iteration), ``"sequential"`` (one selection per iteration) or
            ``"auto"`` (whichever needs fewer steps; see the code). Same
            results. Defaults to `"auto"`.
        impl: str. ``"auto"``, ``"custom"`` (the compiled op) or ``"loop"``
            (the TensorFlow loops); see `resolve_soft_nms_impl`. Defaults to
            `"auto"`.

    Returns:
        dict with ``boxes`` float32 `(batch, max_detections, 4)`, ``scores``
        float32 `(batch, max_detections)` (score at selection),
        ``classes`` int32 `(batch, max_detections)`, ``num_detections``
        int32 `(batch,)`; rows past ``num_detections`` are zero.

    Raises:
        ValueError: unknown `method`, `loop` or `impl`, "merge" without
            corner scores, or ``impl="custom"`` under XLA.
        CustomOpsUnavailable: ``impl="custom"`` and the compiled op cannot be
            built or loaded.
    """
    if method not in ("gaussian", "merge"):
        raise ValueError(f"soft_nms method must be 'gaussian' or 'merge', got {method!r}.")
    if loop not in ("auto", "classes", "sequential"):
        raise ValueError(f"soft_nms loop must be 'auto', 'classes' or 'sequential', got {loop!r}.")
    merge = method == "merge"
    if merge and (tl_scores is None or br_scores is None):
        raise ValueError("soft_nms(method='merge') needs tl_scores and br_scores.")
    if resolve_soft_nms_impl(impl, static_shapes) == "custom":
        from tf_centernet.ops import custom

        return custom.soft_nms(
            boxes, scores, classes, max_detections, sigma, score_threshold,
            inclusive=inclusive, tl_scores=tl_scores if merge else None,
            br_scores=br_scores if merge else None, weight_exp=weight_exp,
        )
    scores = tf.cast(scores, tf.float32)
    # Only candidates at or above the threshold ever enter: the loop runs
    # over those (in their original order), not over all n.
    order = _compact(scores >= score_threshold, static_shapes)

    def take(t, dtype, pad_value=0):
        # One extra never-active column keeps every gather in range (m = 0).
        t = tf.gather(tf.cast(t, dtype), order, batch_dims=1)
        pad = [[0, 0], [0, 1]] + [[0, 0]] * (len(t.shape) - 2)
        return tf.pad(t, pad, constant_values=pad_value)

    boxes = take(boxes, tf.float32)
    scores = take(scores, tf.float32, float("-inf"))
    classes = take(classes, tf.int32)
    if merge:
        tl_scores = take(tl_scores, tf.float32)
        br_scores = take(br_scores, tf.float32)
    grid = None
    if loop != "sequential" and not static_shapes:
        grid = class_grid(scores, classes, score_threshold)
    loops = {
        "classes": lambda enabled=True: class_parallel_soft_nms(
            boxes, scores, classes, max_detections, sigma, score_threshold,
            inclusive=inclusive, merge=merge, tl_scores=tl_scores, br_scores=br_scores,
            weight_exp=weight_exp, enabled=enabled, grid=grid,
        ),
        "sequential": lambda enabled=True: _sequential_soft_nms(
            boxes, scores, classes, max_detections, sigma, score_threshold,
            inclusive, merge, tl_scores, br_scores, weight_exp, enabled,
        ),
    }
    if static_shapes or loop != "auto":
        return loops["sequential" if static_shapes else loop]()
    # Same results either way. A class-parallel iteration costs about 3
    # sequential ones (while its grid is at most 4 times the candidates),
    # and it needs about as many as the busiest class has selections among
    # the best `max_detections` (estimated as its share of the candidates).
    per_class = grid[2]
    busiest = tf.reduce_max(per_class)
    total = tf.maximum(tf.reduce_max(tf.reduce_sum(per_class, axis=1)), 1)
    share = tf.minimum(busiest, max_detections * busiest // total + 1)
    selections = tf.minimum(total, max_detections)
    grid_size = grid[1] * tf.shape(grid[0])[2]
    use_classes = (3 * share <= selections) & (grid_size <= 4 * tf.shape(scores)[1])
    # Both loops sit in the graph and only the chosen one iterates (no
    # `tf.cond`: tf2onnx loses the shapes inside its branches).
    by_class = loops["classes"](use_classes)
    one_by_one = loops["sequential"](~use_classes)
    return {key: tf.where(use_classes, by_class[key], one_by_one[key]) for key in by_class}


def _sequential_soft_nms(
    boxes, scores, classes, max_detections, sigma, score_threshold,
    inclusive, merge, tl_scores, br_scores, weight_exp, enabled=True,
):
    """`soft_nms`'s one-selection-per-iteration loop over gathered candidates."""
    batch = tf.shape(scores)[0]
    m = tf.shape(scores)[1]
    one = 1.0 if inclusive else 0.0
    x1, y1, x2, y2 = columns(boxes)  # (batch, m) each
    areas = (x2 - x1 + one) * (y2 - y1 + one)
    positions = tf.range(m)[None, :]

    active0 = scores >= score_threshold
    # Selections are recorded time-major, (max_detections, batch, ...).
    picks0 = tf.zeros([max_detections, batch], tf.int32)
    picked_scores0 = tf.zeros([max_detections, batch], tf.float32)
    merged0 = tf.zeros([max_detections if merge else 0, batch, 4], tf.float32)
    count0 = tf.zeros([batch], tf.int32)
    neg_inf = tf.constant(float("-inf"), tf.float32)

    def cond(i, active, current, picks, picked_scores, merged_boxes, count):
        return enabled & (i < max_detections) & tf.reduce_any(active)

    def body(i, active, current, picks, picked_scores, merged_boxes, count):
        has = tf.reduce_any(active, axis=1)  # (batch,)
        # top_k(k=1) picks the lowest index among equal maxima.
        best_score, best = tf.math.top_k(tf.where(active, current, neg_inf), k=1)
        best_score, best = best_score[:, 0], best[:, 0]  # (batch,)
        best_box = tf.gather(boxes, best, batch_dims=1)  # (batch, 4)
        best_class = tf.gather(classes, best, batch_dims=1)
        bx1, by1, bx2, by2 = [t[:, None] for t in columns(best_box)]
        # `box_iou` with the areas computed once.
        iw = tf.maximum(tf.minimum(bx2, x2) - tf.maximum(bx1, x1) + one, 0.0)
        ih = tf.maximum(tf.minimum(by2, y2) - tf.maximum(by1, y1) + one, 0.0)
        inter = iw * ih
        best_area = tf.gather(areas, best, batch_dims=1)[:, None]
        iou = tf.math.divide_no_nan(inter, best_area + areas - inter)  # (batch, m)
        not_best = tf.not_equal(positions, best[:, None])
        same = active & not_best & tf.equal(classes, best_class[:, None])
        weight = tf.exp(-(iou * iou) / sigma)
        if merge:
            mw = tf.where(same & (iou > 0.0), tf.pow(1.0 - weight, weight_exp), 0.0)
            tw = tl_scores * mw  # (batch, m)
            bw = br_scores * mw
            best_tl = tf.gather(tl_scores, best, batch_dims=1)
            best_br = tf.gather(br_scores, best, batch_dims=1)
            mts = best_tl + tf.reduce_sum(tw, axis=1)
            mbs = best_br + tf.reduce_sum(bw, axis=1)
            fused = tf.stack(
                [
                    (bx1[:, 0] * best_tl + tf.reduce_sum(x1 * tw, axis=1)) / mts,
                    (by1[:, 0] * best_tl + tf.reduce_sum(y1 * tw, axis=1)) / mts,
                    (bx2[:, 0] * best_br + tf.reduce_sum(x2 * bw, axis=1)) / mbs,
                    (by2[:, 0] * best_br + tf.reduce_sum(y2 * bw, axis=1)) / mbs,
                ],
                axis=-1,
            )
            ok = (mts > 0.0) & (mbs > 0.0)
            best_box = tf.where(ok[:, None], fused, best_box)
            merged_boxes = tf.tensor_scatter_nd_update(merged_boxes, [[i]], best_box[None])
        current = tf.where(same, current * weight, current)
        active = active & not_best & (current >= score_threshold)
        # Rows of an image after its last selection are masked below.
        picks = tf.tensor_scatter_nd_update(picks, [[i]], best[None])
        picked_scores = tf.tensor_scatter_nd_update(picked_scores, [[i]], best_score[None])
        count = count + tf.cast(has, tf.int32)
        return i + 1, active, current, picks, picked_scores, merged_boxes, count

    _, _, _, picks, picked_scores, merged_boxes, count = tf.while_loop(
        cond,
        body,
        (tf.constant(0), active0, scores, picks0, picked_scores0, merged0, count0),
        maximum_iterations=max_detections,
    )
    picks = tf.transpose(picks)  # (batch, max_detections)
    keep = tf.range(max_detections)[None, :] < count[:, None]
    if merge:
        out_boxes = tf.transpose(merged_boxes, [1, 0, 2])
    else:
        out_boxes = tf.gather(boxes, picks, batch_dims=1)
    return {
        "boxes": tf.where(keep[..., None], out_boxes, 0.0),
        "scores": tf.where(keep, tf.transpose(picked_scores), 0.0),
        "classes": tf.where(keep, tf.gather(classes, picks, batch_dims=1), 0),
        "num_detections": count,
    }


def top_detections(
    boxes: tf.Tensor, scores: tf.Tensor, classes: tf.Tensor, max_detections: int = 100
) -> Dict[str, tf.Tensor]:
    """The `max_detections` best valid (score > -1) boxes, without NMS.

    Args:
        boxes: float32 tensor `(batch, n, 4)`.
        scores: float32 tensor `(batch, n)`.
        classes: int32 tensor `(batch, n)`.
        max_detections: int. Defaults to ``DecodeConfig.max_detections``.

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
