"""Soft-NMS with all classes advancing together (the loop `soft_nms` runs by default).

Classes never interact in per-class soft-NMS (docs/reference.md §7.6), so
each loop iteration selects the best remaining box of *every* class at once
and decays each box by its own class's selection. Each class's selections
come out exactly as in the one-selection-per-iteration loop (same
multiplications in the same order, so bit-identical scores); merging the
per-class sequences by (score descending, position ascending) gives that
loop's global selection order, ties included: within a class, an
equal-score box selected later always has the higher position (it was
tied with the earlier one, and the lowest position wins a tie).

The candidates are arranged once in a `(batch, classes, K)` grid (K: the
largest per-class count, `class_grid`), so an iteration is a few dense
reductions over K: no gathers and no segment ops (which tf2onnx cannot
convert inside a loop). The loop needs at most as many iterations as the busiest class has
selections (capped at ``max_detections``), and stops as soon as every
image holds ``max_detections`` selections scoring above every remaining
box. Shapes depend on the number of classes present, so this loop is not
for XLA; `soft_nms` falls back to its sequential loop there.
"""

from __future__ import annotations

from typing import Dict, Optional

import tensorflow as tf


def columns(boxes: tf.Tensor):
    """``x1, y1, x2, y2`` of boxes `(..., 4)`, by slicing (tf2onnx cannot
    unstack tensors of unknown shape inside a `tf.cond` branch)."""
    return [boxes[..., k] for k in range(4)]


def class_grid(scores: tf.Tensor, classes: tf.Tensor, score_threshold: float):
    """Candidates at or above `score_threshold` arranged by class.

    Args:
        scores: float32 tensor `(batch, m)`; the last column below the threshold.
        classes: int32 tensor `(batch, m)`, >= 0 where the score is at or above
            the threshold.
        score_threshold: float.

    Returns:
        ``(grid, num_classes, per_class)``: int32 `(batch, classes, K)` with the
        column of each class's candidates in increasing order (``m - 1``, the
        padding column, past the end; ``K`` the largest per-class count, at
        least 1), the scalar number of classes and the int32 counts
        `(batch, classes)`.
    """
    batch, m = tf.shape(scores)[0], tf.shape(scores)[1]
    active = scores >= score_threshold
    num_classes = tf.reduce_max(tf.where(active, classes, 0)) + 1
    key = tf.where(active, classes, num_classes)  # inactive sort last
    order = tf.argsort(key, axis=1, stable=True)
    sorted_key = tf.gather(key, order, batch_dims=1)
    counts = tf.reduce_sum(tf.one_hot(key, num_classes + 1, dtype=tf.int32), axis=1)
    starts = tf.cumsum(counts, axis=1, exclusive=True)
    rank = tf.range(m)[None, :] - tf.gather(starts, sorted_key, batch_dims=1)
    per_class = counts[:, :-1]
    k = tf.maximum(tf.reduce_max(per_class), 1)
    slots = batch * num_classes * k
    flat = (tf.range(batch)[:, None] * num_classes + sorted_key) * k + rank
    flat = tf.where(sorted_key < num_classes, flat, slots)  # inactive: a spare slot
    grid = tf.tensor_scatter_nd_update(
        tf.fill([slots + 1], m - 1), tf.reshape(flat, [-1, 1]), tf.reshape(order, [-1])
    )
    return tf.reshape(grid[:slots], [batch, num_classes, k]), num_classes, per_class


def class_parallel_soft_nms(
    boxes: tf.Tensor, scores: tf.Tensor, classes: tf.Tensor,
    max_detections: int, sigma: float, score_threshold: float,
    inclusive: bool = True, merge: bool = False,
    tl_scores: Optional[tf.Tensor] = None, br_scores: Optional[tf.Tensor] = None,
    weight_exp: float = 8.0,
    enabled=True,
    grid=None,
) -> Dict[str, tf.Tensor]:
    """Per-class soft-NMS, all classes per iteration (see the module docstring).

    Args:
        boxes: float32 tensor `(batch, m, 4)`, image pixels.
        scores: float32 tensor `(batch, m)`. The last column must be below
            `score_threshold` in every image (a padding column).
        classes: int32 tensor `(batch, m)`, >= 0 where the score is at or
            above `score_threshold`.
        max_detections, sigma, score_threshold, inclusive, merge, tl_scores,
        br_scores, weight_exp: as `soft_nms` (``merge`` for ``method="merge"``).
        enabled: bool or scalar bool tensor. When false the loop makes no
            iteration (no detections): lets a graph hold two loops and run
            one without `tf.cond`, which tf2onnx cannot convert here.
        grid: the `class_grid` of `scores` and `classes`, or None.

    Returns:
        The dict of `soft_nms`.
    """
    if grid is None:
        grid = class_grid(scores, classes, score_threshold)
    grid, num_classes, _ = grid
    batch = tf.shape(scores)[0]
    k = tf.shape(grid)[2]
    one = 1.0 if inclusive else 0.0
    x1, y1, x2, y2 = columns(boxes)
    areas = (x2 - x1 + one) * (y2 - y1 + one)
    fields = [x1, y1, x2, y2, areas] + ([tl_scores, br_scores] if merge else [])
    flat_grid = tf.reshape(grid, [batch, -1])

    def arrange(t):
        return tf.reshape(tf.gather(t, flat_grid, batch_dims=1), tf.shape(grid))

    table = tf.stack([arrange(t) for t in fields], axis=-1)  # (batch, classes, K, f)
    gx1, gy1, gx2, gy2, g_area = [table[..., j] for j in range(5)]
    g_scores = arrange(scores)
    slot = tf.range(k)[None, None, :]
    neg_inf = tf.constant(float("-inf"), tf.float32)

    # (tf.expand_dims, not [..., None]: TFLite has no StridedSlice adding
    # axes to tensors of unknown shape.)
    # Selections (slot in the grid, score), time-major (max_detections, batch, classes).
    picks0 = tf.zeros([max_detections, batch, num_classes], tf.int32)
    picked0 = tf.fill([max_detections, batch, num_classes], neg_inf)
    fused0 = tf.zeros([max_detections if merge else 0, batch, num_classes, 4])

    def cond(i, active, current, picks, picked, fused):
        best_left = tf.reduce_max(tf.where(active, current, neg_inf), axis=[1, 2])  # (batch,)
        above = tf.reduce_sum(
            tf.cast(picked > tf.reshape(best_left, [1, -1, 1]), tf.int32), axis=[0, 2]
        )
        return enabled & (i < max_detections) & tf.reduce_any(
            tf.reduce_any(active, axis=[1, 2]) & (above < max_detections)
        )

    def body(i, active, current, picks, picked, fused):
        masked = tf.where(active, current, neg_inf)
        best = tf.reduce_max(masked, axis=2)  # (batch, classes)
        tied = active & tf.equal(masked, tf.expand_dims(best, -1))
        # Lowest slot (= lowest position) among a class's maxima: top_k's tie rule.
        head = tf.reduce_min(tf.where(tied, slot, k), axis=2)
        has = head < k
        is_head = tf.equal(slot, tf.expand_dims(head, -1))  # (batch, classes, K)
        # The head's fields; exact, as every other term is zero.
        h = tf.reduce_sum(tf.where(tf.expand_dims(is_head, -1), table, 0.0), axis=2)
        hx1, hy1, hx2, hy2, h_area = [h[..., j : j + 1] for j in range(5)]
        iw = tf.maximum(tf.minimum(hx2, gx2) - tf.maximum(hx1, gx1) + one, 0.0)
        ih = tf.maximum(tf.minimum(hy2, gy2) - tf.maximum(hy1, gy1) + one, 0.0)
        inter = iw * ih
        iou = tf.math.divide_no_nan(inter, h_area + g_area - inter)
        same = active & ~is_head
        weight = tf.exp(-(iou * iou) / sigma)
        if merge:
            mw = tf.where(same & (iou > 0.0), tf.pow(1.0 - weight, weight_exp), 0.0)
            tw, bw = table[..., 5] * mw, table[..., 6] * mw
            sums = tf.reduce_sum(
                tf.stack([tw, bw, gx1 * tw, gy1 * tw, gx2 * bw, gy2 * bw], axis=-1), axis=2
            )
            h_tl, h_br = h[..., 5], h[..., 6]
            mts, mbs = h_tl + sums[..., 0], h_br + sums[..., 1]
            merged = tf.stack(
                [
                    (h[..., 0] * h_tl + sums[..., 2]) / mts,
                    (h[..., 1] * h_tl + sums[..., 3]) / mts,
                    (h[..., 2] * h_br + sums[..., 4]) / mbs,
                    (h[..., 3] * h_br + sums[..., 5]) / mbs,
                ],
                axis=-1,
            )
            ok = (mts > 0.0) & (mbs > 0.0)
            fused = tf.tensor_scatter_nd_update(
                fused, [[i]],
                tf.expand_dims(tf.where(tf.expand_dims(ok, -1), merged, h[..., :4]), 0),
            )
        current = tf.where(same, current * weight, current)
        active = active & ~is_head & (current >= score_threshold)
        head_slot = tf.expand_dims(tf.minimum(head, k - 1), 0)
        picks = tf.tensor_scatter_nd_update(picks, [[i]], head_slot)
        head_score = tf.expand_dims(tf.where(has, best, neg_inf), 0)
        picked = tf.tensor_scatter_nd_update(picked, [[i]], head_score)
        return i + 1, active, current, picks, picked, fused

    _, _, _, picks, picked, fused = tf.while_loop(
        cond, body,
        (tf.constant(0), g_scores >= score_threshold, g_scores, picks0, picked0, fused0),
        maximum_iterations=max_detections,
    )
    # Grid slots -> columns; (batch, classes * max_detections), then sort by
    # (score descending, column ascending).
    picks = tf.gather(grid, tf.transpose(picks, [1, 2, 0]), batch_dims=2)
    picks = tf.reshape(picks, [batch, -1])
    picked = tf.reshape(tf.transpose(picked, [1, 2, 0]), [batch, -1])
    by_position = tf.argsort(picks, axis=1, stable=True)
    by_score = tf.argsort(
        tf.gather(picked, by_position, batch_dims=1), axis=1, direction="DESCENDING", stable=True
    )
    order = tf.gather(by_position, by_score, batch_dims=1)[:, :max_detections]
    best = tf.gather(picks, order, batch_dims=1)
    best_scores = tf.gather(picked, order, batch_dims=1)
    keep = best_scores > neg_inf
    if merge:
        flat = tf.reshape(tf.transpose(fused, [1, 2, 0, 3]), [batch, -1, 4])
        out_boxes = tf.gather(flat, order, batch_dims=1)
    else:
        out_boxes = tf.gather(boxes, best, batch_dims=1)
    return {
        "boxes": tf.where(tf.expand_dims(keep, -1), out_boxes, 0.0),
        "scores": tf.where(keep, best_scores, 0.0),
        "classes": tf.where(keep, tf.gather(classes, best, batch_dims=1), 0),
        "num_detections": tf.reduce_sum(tf.cast(keep, tf.int32), axis=1),
    }
