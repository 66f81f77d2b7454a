"""The TF Object Detection API outputs of every export."""

from __future__ import annotations

from typing import Dict, Sequence

import tensorflow as tf

DETECTION_KEYS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")


def to_detection_api(
    detections: Dict[str, tf.Tensor], image_sizes: tf.Tensor, category_ids: Sequence[int]
) -> Dict[str, tf.Tensor]:
    """`Predictor` detections -> the TF Object Detection API outputs.

    Args:
        detections: dict from `Predictor.predict` / `decode_detections`:
            ``boxes`` `(batch, N, 4)` ``[x1, y1, x2, y2]`` pixels, ``scores``
            `(batch, N)`, ``classes`` int32 `(batch, N)` 0-based,
            ``num_detections`` int32 `(batch,)`.
        image_sizes: int or float tensor `(batch, 2)`. ``(height, width)`` of
            each original image in pixels.
        category_ids: sequence of ints. Class index -> category id.

    Returns:
        dict with ``detection_boxes`` float32 `(batch, N, 4)` ``[ymin, xmin,
        ymax, xmax]`` normalised, ``detection_scores`` float32 `(batch, N)`,
        ``detection_classes`` float32 `(batch, N)` (category ids),
        ``num_detections`` float32 `(batch,)`; rows past ``num_detections``
        are zero.
    """
    sizes = tf.cast(image_sizes, tf.float32)
    height, width = sizes[:, 0:1], sizes[:, 1:2]  # (batch, 1)
    x1, y1, x2, y2 = tf.unstack(tf.cast(detections["boxes"], tf.float32), axis=-1)
    boxes = tf.stack([y1 / height, x1 / width, y2 / height, x2 / width], axis=-1)
    count = tf.cast(detections["num_detections"], tf.int32)
    scores = tf.cast(detections["scores"], tf.float32)
    # (batch, N): rows holding a detection.
    valid = tf.range(tf.shape(scores)[1])[None, :] < count[:, None]
    # Padding rows may hold class -1 (`Decoder`): gather a valid index there.
    classes = tf.maximum(tf.cast(detections["classes"], tf.int32), 0)
    ids = tf.gather(tf.constant(list(category_ids), tf.float32), classes)
    return {
        "detection_boxes": tf.where(valid[..., None], boxes, 0.0),
        "detection_scores": tf.where(valid, scores, 0.0),
        "detection_classes": tf.where(valid, ids, 0.0),
        "num_detections": tf.cast(count, tf.float32),
    }
