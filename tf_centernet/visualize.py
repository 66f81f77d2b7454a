"""Drawing detections on images (OpenCV)."""

from __future__ import annotations

import colorsys
from typing import Optional, Sequence, Tuple

import numpy as np

__all__ = ["class_color", "draw_detections"]


def class_color(class_index: int) -> Tuple[int, int, int]:
    """A fixed, well separated RGB colour for a class index.

    Hues step by the golden ratio, so neighbouring classes differ strongly;
    the same index always gives the same colour.

    Args:
        class_index: int. 0-based class.

    Returns:
        (r, g, b) ints in 0-255.
    """
    hue = (int(class_index) * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.95)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def draw_detections(
    image_rgb_uint8: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    class_names: Optional[Sequence[str]] = None,
    score_threshold: float = 0.3,
    thickness: int = 2,
) -> np.ndarray:
    """Draws boxes and ``"name score"`` labels on a copy of an image.

    Args:
        image_rgb_uint8: uint8 array `(height, width, 3)`, RGB.
        boxes: float array `(n, 4)` ``[x1, y1, x2, y2]``, image pixels.
        scores: float array `(n,)`.
        classes: int array `(n,)`, 0-based class indices.
        class_names: sequence of str or None. Names by class index; the
            index itself is printed when None or out of range.
        score_threshold: float. Detections below it are skipped. Defaults
            to `0.3`.
        thickness: int. Box line width in pixels. Defaults to `2`.

    Returns:
        uint8 array `(height, width, 3)`, RGB, with the drawings (the input
        is not modified).

    Raises:
        TypeError: the image is not uint8.
        ValueError: the image is not `(height, width, 3)` or the detection
            arrays disagree in length.
    """
    import cv2

    image = np.asarray(image_rgb_uint8)
    if image.dtype != np.uint8:
        raise TypeError(f"Expected a uint8 RGB image, got dtype {image.dtype}.")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"Expected an image (height, width, 3), got {image.shape}.")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    classes = np.asarray(classes).reshape(-1).astype(np.int64)
    if not len(boxes) == len(scores) == len(classes):
        raise ValueError(
            f"{len(boxes)} boxes, {len(scores)} scores and {len(classes)} classes."
        )
    canvas = np.ascontiguousarray(image.copy())
    height, width = canvas.shape[:2]
    font, font_scale = cv2.FONT_HERSHEY_SIMPLEX, 0.5
    # Lowest scores first, so the best boxes end up on top.
    for i in np.argsort(scores, kind="stable"):
        if scores[i] < score_threshold:
            continue
        cls = int(classes[i])
        color = class_color(cls)
        x1, y1, x2, y2 = (int(round(v)) for v in boxes[i])
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness)
        name = (
            class_names[cls]
            if class_names is not None and 0 <= cls < len(class_names)
            else str(cls)
        )
        label = f"{name} {scores[i]:.2f}"
        (tw, th), base = cv2.getTextSize(label, font, font_scale, 1)
        # Label above the box, or inside it when there is no room above.
        top = y1 - th - base - 2 if y1 - th - base - 2 >= 0 else y1
        top = min(max(top, 0), max(height - th - base - 2, 0))
        left = min(max(x1, 0), max(width - tw - 2, 0))
        cv2.rectangle(canvas, (left, top), (left + tw + 2, top + th + base + 2), color, -1)
        luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
        text_color = (0, 0, 0) if luminance > 128 else (255, 255, 255)
        cv2.putText(
            canvas, label, (left + 1, top + th + 1), font, font_scale, text_color, 1,
            cv2.LINE_AA,
        )
    return canvas
