"""Graph pieces of every export: static-size preprocessing and the OD API outputs."""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tf_centernet.decode import ScaleGeometry

DETECTION_KEYS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")


def static_preprocess(
    images: tf.Tensor, scale: float, mean: Sequence[float], std: Sequence[float]
) -> Tuple[tf.Tensor, ScaleGeometry]:
    """`tf_centernet.inference.preprocess_images` for one static image size.

    The same canvas, bit for bit, for a batch of images that all fill the
    batch's ``(height, width)``, but with every size a Python integer: the
    canvas ``(int(h * s) | 127, int(w * s) | 127)`` and the borders are
    constants, so the graph has static shapes and no bitwise or map ops
    (TFLite and ONNX friendly).

    Args:
        images: uint8 tensor `(batch, height, width, 3)` with static height
            and width.
        scale: float. Test scale.
        mean: three floats, RGB, for pixels in [0, 1].
        std: three floats, RGB.

    Returns:
        (canvas, geometry): float32 `(batch, Hc, Wc, 3)` and the batch's
        `ScaleGeometry`.

    Raises:
        ValueError: the height or width is not static, or the scaled image is
            empty.
    """
    height, width = images.shape[1], images.shape[2]
    if height is None or width is None:
        raise ValueError(f"static_preprocess needs a static image size, got {images.shape}.")
    hs, ws = int(height * float(scale)), int(width * float(scale))
    if hs < 1 or ws < 1:
        raise ValueError(f"A {height}x{width} image is smaller than one pixel at scale {scale}.")
    hc, wc = hs | 127, ws | 127
    top, left = hc // 2 - hs // 2, wc // 2 - ws // 2
    x = tf.cast(images, tf.float32)
    if float(scale) != 1.0:
        x = tf.image.resize(x, (hs, ws), method="bilinear")
        x = tf.clip_by_value(tf.round(x), 0.0, 255.0)
    x = tf.pad(x, [[0, 0], [top, hc - hs - top], [left, wc - ws - left], [0, 0]])
    canvas = (x / 255.0 - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)
    batch = tf.shape(images)[0]

    def rows(values):
        # (batch, len(values)) float32 constant rows.
        return tf.tile(tf.constant([values], tf.float32), [batch, 1])

    # Ratios in double, then float32, as `preprocess_images` computes them.
    ratios = [float(np.float32(((hc + 1) // 4) / hc)), float(np.float32(((wc + 1) // 4) / wc))]
    geometry = ScaleGeometry(
        scale=float(scale),
        borders=rows([top, top + hs, left, left + ws]),
        sizes=rows([hs, ws]),
        ratios=rows(ratios),
    )
    return canvas, geometry


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
