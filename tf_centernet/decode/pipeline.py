"""The whole decoding: model outputs of every test scale -> detections.

See docs/reference.md, "Decoding".
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Union

import tensorflow as tf

from tf_centernet.config import DecodeConfig, check_choice
from tf_centernet.decode.central_region import central_region_filter
from tf_centernet.decode.geometry import (
    ScaleGeometry,
    boxes_to_image,
    mirror_boxes,
    mirror_points,
    points_to_image,
)
from tf_centernet.decode.pairing import decode_outputs
from tf_centernet.decode.soft_nms import soft_nms, top_detections
from tf_centernet.decode.soft_nms_tf import soft_nms_tf


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
    static_shapes: Optional[bool] = None,
) -> Dict[str, tf.Tensor]:
    """Model outputs of every test scale -> final detections (docs/reference.md §7).

    For each scale: keypoints and corner pairs per network input
    (`decode_outputs`); with `flip_test`, the second half of the batch holds
    the horizontally flipped inputs, whose boxes and centers are mirrored
    back (`mirror_boxes`) and concatenated after the unflipped ones; all are
    mapped to original-image pixels (`boxes_to_image`). Then, over all
    scales: the central-region filter with the centers of scale ``config.center_scale`` (1; both
    flips, unflipped first) when `use_centers`; per-class soft-NMS and the
    best ``max_detections`` (`soft_nms`; `soft_nms_tf` for ``nms="tf"``,
    TF's fused kernel, not bit-exact; `top_detections` for ``nms="none"``).

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
        static_shapes: bool. Keep every intermediate shape static (soft-NMS
            over all candidates rather than the valid ones), as XLA needs;
            same results. Defaults to ``config.jit_compile``.

    Returns:
        dict with
        - ``boxes``: float32 `(batch, max_detections, 4)`, ``[x1, y1, x2,
          y2]`` in original-image pixels.
        - ``scores``: float32 `(batch, max_detections)`.
        - ``classes``: int32 `(batch, max_detections)`, 0-based.
        - ``num_detections``: int32 `(batch,)`.
        Rows past ``num_detections`` are zero.

    Raises:
        ValueError: mismatched lists, centers requested without the scale
            ``config.center_scale``,
            or an unknown ``config.nms`` or ``config.soft_nms_impl``.
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
    check_choice("decode.nms", config.nms)
    check_choice("decode.soft_nms_impl", config.soft_nms_impl)
    if static_shapes is None:
        static_shapes = bool(config.jit_compile)
    center_scale = None
    if use_centers:
        wanted = float(config.center_scale)
        matches = [i for i, g in enumerate(geometry) if float(g.scale) == wanted]
        if not matches:
            raise ValueError(
                f"The central-region filter uses the centers of scale {wanted:g} (decode.center_scale; docs/"
                f"reference.md §7.4), but the test scales are {[g.scale for g in geometry]}."
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
    if config.nms == "tf":
        return soft_nms_tf(
            merged["boxes"], scores, merged["classes"],
            max_detections=config.max_detections,
            sigma=config.soft_nms_sigma,
            score_threshold=config.score_threshold,
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
        static_shapes=static_shapes,
        impl=config.soft_nms_impl,
    )
