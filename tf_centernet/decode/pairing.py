"""Step 2 of decoding: corner pairs (CornerNet section 3.5).

See docs/reference.md, "Decoding".
"""

from __future__ import annotations

from typing import Dict

import tensorflow as tf

from tf_centernet.config import DecodeConfig
from tf_centernet.decode.geometry import INVALID_SCORE
from tf_centernet.decode.keypoints import decode_keypoints
from tf_centernet.ops.gather import gather_cells

_DEFAULTS = DecodeConfig()


def pair_corners(
    tl: Dict[str, tf.Tensor],
    br: Dict[str, tf.Tensor],
    tl_embedding: tf.Tensor,
    br_embedding: tf.Tensor,
    ae_threshold: float = _DEFAULTS.ae_threshold,
    num_dets: int = _DEFAULTS.num_dets,
) -> Dict[str, tf.Tensor]:
    """Boxes from all (top-left, bottom-right) pairs (docs/reference.md §7.3).

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
            ``DecodeConfig.ae_threshold``.
        num_dets: int. Pairs kept. Defaults to ``DecodeConfig.num_dets``.

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
    """Steps 1-2 of docs/reference.md §7 for every image of a model output batch.

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
