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

The loop needs at most as many iterations as the busiest class has
selections (capped at ``max_detections``), and stops as soon as every
image holds ``max_detections`` selections scoring above every remaining
box. Shapes depend on the number of classes present, so this loop is not
for XLA; `soft_nms` falls back to its sequential loop there.
"""

from __future__ import annotations

from typing import Dict, Optional

import tensorflow as tf


def class_parallel_soft_nms(
    boxes: tf.Tensor, scores: tf.Tensor, classes: tf.Tensor,
    max_detections: int, sigma: float, score_threshold: float,
    inclusive: bool = True, merge: bool = False,
    tl_scores: Optional[tf.Tensor] = None, br_scores: Optional[tf.Tensor] = None,
    weight_exp: float = 8.0,
) -> Dict[str, tf.Tensor]:
    """Per-class soft-NMS, all classes per iteration (see the module docstring).

    Args:
        boxes: float32 tensor `(batch, m, 4)`, image pixels.
        scores: float32 tensor `(batch, m)`. The last column must be below
            `score_threshold` in every image (a padding column: "no
            selection" points at it).
        classes: int32 tensor `(batch, m)`, >= 0 where the score is at or
            above `score_threshold`.
        max_detections, sigma, score_threshold, inclusive, merge, tl_scores,
        br_scores, weight_exp: as `soft_nms` (``merge`` for ``method="merge"``).

    Returns:
        The dict of `soft_nms`.
    """
    batch, m = tf.shape(scores)[0], tf.shape(scores)[1]
    none = m - 1  # the padding column
    active0 = scores >= score_threshold
    cls = tf.where(active0, classes, 0)
    num_classes = tf.reduce_max(cls) + 1
    segments = tf.range(batch)[:, None] * num_classes + cls  # (batch, m)
    num_segments = batch * num_classes
    positions = tf.range(m)[None, :]
    one = 1.0 if inclusive else 0.0
    x1, y1, x2, y2 = tf.unstack(boxes, axis=-1)
    areas = (x2 - x1 + one) * (y2 - y1 + one)
    neg_inf = tf.constant(float("-inf"), tf.float32)

    # Selections, time-major (max_detections, batch, classes).
    picks0 = tf.fill([max_detections, batch, num_classes], none)
    picked0 = tf.fill([max_detections, batch, num_classes], neg_inf)
    fused0 = tf.zeros([max_detections if merge else 0, batch, num_classes, 4])

    def cond(i, active, current, picks, picked, fused):
        best_left = tf.reduce_max(tf.where(active, current, neg_inf), axis=1)  # (batch,)
        above = tf.reduce_sum(
            tf.cast(picked > best_left[None, :, None], tf.int32), axis=[0, 2]
        )
        return (i < max_detections) & tf.reduce_any(
            tf.reduce_any(active, axis=1) & (above < max_detections)
        )

    def body(i, active, current, picks, picked, fused):
        masked = tf.where(active, current, neg_inf)
        class_best = tf.math.unsorted_segment_max(masked, segments, num_segments)
        tied = active & tf.equal(masked, tf.gather(class_best, segments))
        # Lowest position among a class's maxima (top_k's tie rule).
        head = tf.math.unsorted_segment_min(
            tf.where(tied, positions, none), segments, num_segments
        )
        head = tf.minimum(head, none)  # empty segments give the int maximum
        head_of = tf.gather(head, segments)  # (batch, m): own class's selection
        is_head = tf.equal(positions, head_of)
        hx1, hy1, hx2, hy2, h_area = [
            tf.gather(t, head_of, batch_dims=1) for t in (x1, y1, x2, y2, areas)
        ]
        iw = tf.maximum(tf.minimum(hx2, x2) - tf.maximum(hx1, x1) + one, 0.0)
        ih = tf.maximum(tf.minimum(hy2, y2) - tf.maximum(hy1, y1) + one, 0.0)
        inter = iw * ih
        iou = tf.math.divide_no_nan(inter, h_area + areas - inter)
        same = active & ~is_head
        weight = tf.exp(-(iou * iou) / sigma)
        head = tf.reshape(head, [batch, num_classes])
        has = head < none
        head_score = tf.where(has, tf.gather(current, head, batch_dims=1), neg_inf)
        if merge:
            mw = tf.where(same & (iou > 0.0), tf.pow(1.0 - weight, weight_exp), 0.0)
            tw, bw = tl_scores * mw, br_scores * mw
            sums = tf.math.unsorted_segment_sum(
                tf.stack([tw, bw, x1 * tw, y1 * tw, x2 * bw, y2 * bw], axis=-1),
                segments, num_segments,
            )
            sums = tf.reshape(sums, [batch, num_classes, 6])
            head_box = tf.gather(boxes, head, batch_dims=1)  # (batch, classes, 4)
            h_tl = tf.gather(tl_scores, head, batch_dims=1)
            h_br = tf.gather(br_scores, head, batch_dims=1)
            mts, mbs = h_tl + sums[..., 0], h_br + sums[..., 1]
            bx1, by1, bx2, by2 = tf.unstack(head_box, axis=-1)
            merged = tf.stack(
                [
                    (bx1 * h_tl + sums[..., 2]) / mts,
                    (by1 * h_tl + sums[..., 3]) / mts,
                    (bx2 * h_br + sums[..., 4]) / mbs,
                    (by2 * h_br + sums[..., 5]) / mbs,
                ],
                axis=-1,
            )
            ok = (mts > 0.0) & (mbs > 0.0)
            fused = tf.tensor_scatter_nd_update(
                fused, [[i]], tf.where(ok[..., None], merged, head_box)[None]
            )
        current = tf.where(same, current * weight, current)
        active = active & ~is_head & (current >= score_threshold)
        picks = tf.tensor_scatter_nd_update(picks, [[i]], head[None])
        picked = tf.tensor_scatter_nd_update(picked, [[i]], head_score[None])
        return i + 1, active, current, picks, picked, fused

    _, _, _, picks, picked, fused = tf.while_loop(
        cond, body, (tf.constant(0), active0, scores, picks0, picked0, fused0),
        maximum_iterations=max_detections,
    )
    # (batch, max_detections * classes), then (score desc, position asc).
    picks = tf.reshape(tf.transpose(picks, [1, 0, 2]), [batch, -1])
    picked = tf.reshape(tf.transpose(picked, [1, 0, 2]), [batch, -1])
    by_position = tf.argsort(picks, axis=1, stable=True)
    by_score = tf.argsort(
        tf.gather(picked, by_position, batch_dims=1), axis=1, direction="DESCENDING", stable=True
    )
    order = tf.gather(by_position, by_score, batch_dims=1)[:, :max_detections]
    best = tf.gather(picks, order, batch_dims=1)
    best_scores = tf.gather(picked, order, batch_dims=1)
    keep = best_scores > neg_inf
    if merge:
        flat = tf.reshape(tf.transpose(fused, [1, 0, 2, 3]), [batch, -1, 4])
        out_boxes = tf.gather(flat, order, batch_dims=1)
    else:
        out_boxes = tf.gather(boxes, best, batch_dims=1)
    return {
        "boxes": tf.where(keep[..., None], out_boxes, 0.0),
        "scores": tf.where(keep, best_scores, 0.0),
        "classes": tf.where(keep, tf.gather(classes, best, batch_dims=1), 0),
        "num_detections": tf.reduce_sum(tf.cast(keep, tf.int32), axis=1),
    }
