"""Training losses of CornerNet and CenterNet (docs/reference.md §5).

All functions take NHWC head outputs and the padded targets built by
`tf_centernet.targets.encode_targets` (batched):

* heatmaps: (batch, height, width, num_classes), targets in [0, 1] with
  exactly 1 at object cells;
* per-object slots: indices (batch, max_objects) int32 = y * width + x,
  offsets (batch, max_objects, 2) in output cells, mask (batch,
  max_objects) float32 (1 for a real object).

Normalisation happens in one place, `_normalise`: a sum divided by
max(1, count). For an integer count this equals the releases' rules exactly
(focal: "divide by the number of positives, or by 1 if there are none"),
and replaces their ``count + 1e-4`` denominators (offset, pull, push) by the
exact count, so an image without objects contributes exactly 0.
"""

from __future__ import annotations

import tensorflow as tf

from tf_centernet.gaussians import draw_heatmaps
from tf_centernet.ops.gather import gather_cells as gather_at

HEATMAP_CLAMP = 1e-4  # sigmoid outputs clamped to [1e-4, 1 - 1e-4] (docs/reference.md §5)


def _normalise(total, count):
    """total / max(1, count): the single normalisation rule of this module."""
    return total / tf.maximum(tf.cast(count, total.dtype), 1.0)


def focal_loss_elements(logits, target, alpha=2.0, beta=4.0):
    """Per-cell terms of the penalty-reduced focal loss (CornerNet eq. 1).

    p = clip(sigmoid(logits), 1e-4, 1 - 1e-4). Positive cells (target == 1)
    give -(1 - p)^alpha log p; others -(1 - y)^beta p^alpha log(1 - p).

    Args:
        logits: float32 (batch, height, width, classes), pre-sigmoid.
        target: float32, same shape, penalty-reduced Gaussian heatmap.
        alpha, beta: float. Focusing exponents. Defaults 2 and 4.

    Returns:
        (loss, positive): float32 tensors of `logits`' shape; `positive` is
        1.0 at cells where target == 1.
    """
    logits = tf.cast(logits, tf.float32)
    target = tf.cast(target, tf.float32)
    p = tf.clip_by_value(tf.sigmoid(logits), HEATMAP_CLAMP, 1.0 - HEATMAP_CLAMP)
    positive = tf.cast(tf.equal(target, 1.0), tf.float32)
    pos_term = -tf.math.log(p) * tf.pow(1.0 - p, alpha)
    neg_term = -tf.math.log(1.0 - p) * tf.pow(p, alpha) * tf.pow(1.0 - target, beta)
    return positive * pos_term + (1.0 - positive) * neg_term, positive


def focal_loss(logits, target, alpha=2.0, beta=4.0):
    """Penalty-reduced focal loss over a batch (docs/reference.md §5, CornerNet eq. 1).

    Sum over all cells and images divided by the number of positive cells of
    the whole batch (as the releases do), or by 1 when there are none. The
    terms of `focal_loss_elements`, summed in one pass with their derivative
    in closed form (`focal_sum`).

    Args:
        logits: float (batch, height, width, classes), any float dtype.
        target: float (batch, height, width, classes).
        alpha, beta: float. Defaults 2 and 4.

    Returns:
        float32 scalar.
    """
    positive, negative_weight, count = focal_target(target, beta)
    return _normalise(focal_sum(logits, positive, negative_weight, alpha), count)


def _power(x, exponent):
    """x ** exponent, as multiplications for the usual small whole exponents (2 and 4)."""
    if exponent == 1:
        return x
    if exponent == 2:
        return tf.square(x)
    if exponent == 4:
        return tf.square(tf.square(x))
    return tf.pow(x, exponent)


def focal_target(target, beta=4.0):
    """What the focal loss needs of a target heatmap, computed once for every stack.

    Args:
        target: float (batch, height, width, classes) penalty-reduced heatmap.
        beta: float. The negative cells' exponent.

    Returns:
        (positive, negative_weight, count): bool, cells where target == 1;
        float32 (1 - target) ** beta (0 at positive cells); float32 scalar,
        the number of positive cells.
    """
    target = tf.cast(target, tf.float32)
    positive = tf.equal(target, 1.0)
    return positive, _power(1.0 - target, beta), tf.reduce_sum(tf.cast(positive, tf.float32))


def focal_sum(logits, positive, negative_weight, alpha=2.0):
    """Sum of the focal loss terms over all cells, with a closed-form gradient.

    The value is that of `focal_loss_elements` summed. The derivative with
    respect to the logits x, where p = sigmoid(x) lies inside the clamp
    [1e-4, 1 - 1e-4] (zero outside, as the clamp's), is
    (1 - p)^alpha (alpha p log p - (1 - p)) at positive cells and
    w p^alpha (p - alpha (1 - p) log(1 - p)) elsewhere, w = (1 - y)^beta:
    a few element-wise ops instead of differentiating each op of the
    forward pass (those were a large share of a small hourglass's training
    step on a CPU: docs/speed.md).

    Args:
        logits: float (batch, height, width, classes), any float dtype.
        positive, negative_weight: from `focal_target`.
        alpha: float.

    Returns:
        float32 scalar; its gradient flows to `logits` only.
    """

    @tf.custom_gradient
    def total(x):
        s = tf.sigmoid(x)
        p = tf.clip_by_value(s, HEATMAP_CLAMP, 1.0 - HEATMAP_CLAMP)
        q = 1.0 - p
        log_p, log_q = tf.math.log(p), tf.math.log(q)
        p_alpha, q_alpha = _power(p, alpha), _power(q, alpha)
        value = tf.reduce_sum(tf.where(positive, -log_p * q_alpha, -log_q * p_alpha * negative_weight))

        def grad(upstream):
            slope = tf.where(positive, q_alpha * (alpha * p * log_p - q), negative_weight * p_alpha * (p - alpha * q * log_q))
            inside = tf.logical_and(s >= HEATMAP_CLAMP, s <= 1.0 - HEATMAP_CLAMP)
            return upstream * tf.where(inside, slope, 0.0)

        return value, grad

    return total(tf.cast(logits, tf.float32))


def embedding_loss(tl_embedding, br_embedding, mask):
    """Pull and push losses of the associative embedding (CornerNet eqs. 4-5).

    Per image with N objects, e_k = (e_tl,k + e_br,k) / 2:
    pull = sum_k [(e_tl,k - e_k)^2 + (e_br,k - e_k)^2] / N and
    push = sum_{j != k} max(0, 1 - |e_k - e_j|) / (N (N - 1)).
    An image with no object gives 0 for both, with one object push = 0.
    The batch value is the mean over images (the releases sum over the
    images of each GPU's share of the batch, which ties the weight of
    these terms to the per-GPU batch size; the mean does not).

    Args:
        tl_embedding: float32 (batch, max_objects) embeddings gathered at the
            top-left corners (or (batch, max_objects, 1)).
        br_embedding: same, at the bottom-right corners.
        mask: float32 (batch, max_objects), 1 for real objects.

    Returns:
        (pull, push): float32 scalars.
    """
    tl = tf.cast(tf.reshape(tl_embedding, tf.shape(mask)), tf.float32)
    br = tf.cast(tf.reshape(br_embedding, tf.shape(mask)), tf.float32)
    mask = tf.cast(mask, tf.float32)
    num = tf.reduce_sum(mask, axis=1)  # (batch,)
    mean = (tl + br) / 2.0
    pull = tf.reduce_sum(((tl - mean) ** 2 + (br - mean) ** 2) * mask, axis=1)
    pull = pull / tf.maximum(num, 1.0)
    # (batch, k, k): pairs of real, distinct objects.
    pair_mask = mask[:, :, None] * mask[:, None, :]
    pair_mask *= 1.0 - tf.eye(tf.shape(mask)[1], batch_shape=[1])
    margin = tf.nn.relu(1.0 - tf.abs(mean[:, :, None] - mean[:, None, :]))
    push = tf.reduce_sum(margin * pair_mask, axis=[1, 2])
    push = push / tf.maximum(num * (num - 1.0), 1.0)
    return tf.reduce_mean(pull), tf.reduce_mean(push)


def offset_loss(predicted, target, mask):
    """Smooth-L1 (beta 1) offset loss (CornerNet eq. 2, docs/reference.md §5).

    Summed over real objects and both axes, divided by the number of real
    objects in the batch (0 when there are none).

    Args:
        predicted: float32 (batch, max_objects, 2) gathered offsets.
        target: float32 (batch, max_objects, 2), in output cells.
        mask: float32 (batch, max_objects).

    Returns:
        float32 scalar.
    """
    diff = tf.abs(tf.cast(predicted, tf.float32) - tf.cast(target, tf.float32))
    smooth = tf.where(diff < 1.0, 0.5 * diff * diff, diff - 0.5)
    mask = tf.cast(mask, tf.float32)
    return _normalise(tf.reduce_sum(smooth * mask[..., None]), tf.reduce_sum(mask))


def detection_losses(outputs, targets, config, uses_centers):
    """All loss terms of a (multi-stack) prediction, and their total (docs/reference.md §5).

    total = focal(corners) + focal(center) + pull_weight * pull +
    push_weight * push + offset_weight * (offset(corners) + offset(center)),
    each term summed over stacks and divided by the number of stacks.
    CornerNet (uses_centers=False) has no center terms.

    Args:
        outputs: dict of head outputs; each value a tensor (one stack) or a
            list of tensors (one per stack): ``tl_heatmap``, ``br_heatmap``,
            ``tl_embedding``, ``br_embedding``, ``tl_offset``, ``br_offset``
            and, with centers, ``ct_heatmap``, ``ct_offset``.
        targets: dict from the data pipeline (see module docstring):
            ``tl_heatmap``, ``br_heatmap``, ``ct_heatmap``, ``tl_offset``,
            ``br_offset``, ``ct_offset``, ``tl_index``, ``br_index``,
            ``ct_index``, ``mask``; or, instead of the heatmaps, the sparse
            ``keypoint_*`` entries (`encode_targets(heatmaps="sparse")`),
            drawn here (`tf_centernet.gaussians.draw_heatmaps`).
        config: `tf_centernet.config.LossConfig`.
        uses_centers: bool.

    Returns:
        dict of float32 scalars: ``focal_corner``, ``focal_center``,
        ``pull``, ``push``, ``offset_corner``, ``offset_center`` (each already
        averaged over stacks, unweighted) and ``loss`` (the weighted total).
    """

    def stacks(key):
        value = outputs[key]
        return list(value) if isinstance(value, (list, tuple)) else [value]

    # Sparse targets (the training pipeline's): the heatmaps are drawn here,
    # on the device, from the keypoints (same values as the dense encoder).
    if "keypoint_cells" in targets:
        first = stacks("tl_heatmap")[0]
        size = [first.shape[i] if first.shape[i] is not None else tf.shape(first)[i] for i in (1, 2)]
        targets = draw_heatmaps(targets, size, int(first.shape[-1]))
    mask = targets["mask"]
    heatmaps = ("tl_heatmap", "br_heatmap") + (("ct_heatmap",) if uses_centers else ())
    focal = {key: focal_target(targets[key], config.focal_beta) for key in heatmaps}  # shared by the stacks

    def focal_loss_of(key, logits):
        positive, negative_weight, count = focal[key]
        return _normalise(focal_sum(logits, positive, negative_weight, config.focal_alpha), count)

    terms = {k: [] for k in ("focal_corner", "focal_center", "pull", "push", "offset_corner", "offset_center")}
    num_stacks = len(stacks("tl_heatmap"))
    for s in range(num_stacks):
        def out(key):
            return stacks(key)[s]

        terms["focal_corner"].append(
            focal_loss_of("tl_heatmap", out("tl_heatmap")) + focal_loss_of("br_heatmap", out("br_heatmap"))
        )
        pull, push = embedding_loss(
            gather_at(out("tl_embedding"), targets["tl_index"]),
            gather_at(out("br_embedding"), targets["br_index"]),
            mask,
        )
        terms["pull"].append(pull)
        terms["push"].append(push)
        terms["offset_corner"].append(
            offset_loss(gather_at(out("tl_offset"), targets["tl_index"]), targets["tl_offset"], mask)
            + offset_loss(gather_at(out("br_offset"), targets["br_index"]), targets["br_offset"], mask)
        )
        if uses_centers:
            terms["focal_center"].append(
                focal_loss_of("ct_heatmap", out("ct_heatmap"))
            )
            terms["offset_center"].append(
                offset_loss(gather_at(out("ct_offset"), targets["ct_index"]), targets["ct_offset"], mask)
            )
    result = {
        k: (tf.add_n(v) / float(num_stacks) if v else tf.constant(0.0))
        for k, v in terms.items()
    }
    result["loss"] = (
        result["focal_corner"]
        + result["focal_center"]
        + config.pull_weight * result["pull"]
        + config.push_weight * result["push"]
        + config.offset_weight * (result["offset_corner"] + result["offset_center"])
    )
    return result
