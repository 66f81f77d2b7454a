"""Decoding of CornerNet / CenterNet head outputs into detections.

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

The pipeline, as `decode_detections` runs it (docs/reference.md §7 steps):

1. `decode_keypoints`: sigmoid, 3x3 max-pool NMS (`heatmap_nms`), top-K over
   (class, y, x) (`topk_keypoints`), offsets added.
2. `pair_corners`: all K x K (top-left, bottom-right) pairs, rejected on class,
   embedding distance and orientation; the best ``num_dets`` kept.
3. `mirror_boxes` / `mirror_points`: flipped-image detections mirrored back.
4. `boxes_to_image` / `points_to_image`: output-grid cells -> image pixels,
   border rejection, clipping, division by the test scale.
5. `central_region_filter` (CenterNet, eq. 1 of the paper).
6. `soft_nms`: per-class Gaussian soft-NMS (or the weighted "merge"
   variant) that also keeps the best ``max_detections`` (docs/reference.md §7.6-7.7);
   It runs as the compiled op of ``custom_ops/`` where that loads and the
   graph is not exported (``soft_nms_impl="auto"``), else as a TensorFlow
   loop; same detections. ``nms="tf"`` uses TF's fused kernel instead
   (`soft_nms_tf`, not bit-exact).

``DecodeConfig.jit_compile`` makes the `Decoder` run the decoding XLA-compiled.

The modules, in pipeline order: `keypoints`, `pairing`, `geometry`,
`central_region`, `soft_nms` (`soft_nms_tf`: TF's kernel), `pipeline` (`decode_detections`) and `decoder`
(the `Decoder` Keras layer that `KeypointDetector.predict_step` runs).
Every default comes from `tf_centernet.config.DecodeConfig`; the behaviour and
its sources are described in docs/reference.md, "Decoding".
"""

from tf_centernet.decode.central_region import central_region_filter
from tf_centernet.decode.decoder import PAD_CLASS, Decoder
from tf_centernet.decode.geometry import (
    INVALID_SCORE,
    ScaleGeometry,
    boxes_to_image,
    input_geometry,
    mirror_boxes,
    mirror_points,
    points_to_image,
)
from tf_centernet.decode.keypoints import decode_keypoints, heatmap_nms, topk_keypoints
from tf_centernet.decode.pairing import decode_outputs, pair_corners
from tf_centernet.decode.pipeline import decode_detections
from tf_centernet.decode.soft_nms import box_iou, resolve_soft_nms_impl, soft_nms, top_detections
from tf_centernet.decode.soft_nms_tf import soft_nms_tf, soft_nms_with_tf_op
from tf_centernet.ops.gather import gather_cells

__all__ = [
    "Decoder",
    "PAD_CLASS",
    "input_geometry",
    "INVALID_SCORE",
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
    "resolve_soft_nms_impl",
    "soft_nms",
    "soft_nms_tf",
    "soft_nms_with_tf_op",
    "top_detections",
    "decode_detections",
]
