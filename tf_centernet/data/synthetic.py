"""A tiny synthetic COCO-format dataset of coloured shapes.

For the README demo and the tests: filled rectangles, ellipses and triangles
of a class-specific colour on a textured background, 1-4 objects per image,
some cut by the image border. Boxes are the tight pixel extent of each
shape's own mask (so partly hidden shapes keep their full box, as in COCO).
Deterministic for a given seed.
"""

from __future__ import annotations

import json
import os
from typing import Sequence, Tuple

import cv2
import numpy as np

SHAPES = ("rectangle", "ellipse", "triangle")

# Saturated RGB colours, one per class (cycled beyond 6 classes).
_PALETTE = (
    (220, 40, 40),
    (40, 200, 60),
    (40, 80, 230),
    (230, 200, 30),
    (200, 40, 210),
    (30, 200, 210),
)


def _class_name(index: int) -> str:
    shape = SHAPES[index % len(SHAPES)]
    return shape if index < len(SHAPES) else f"{shape}_{index // len(SHAPES)}"


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Gray stripes plus noise: texture without strong colour. uint8 RGB."""
    ys, xs = np.mgrid[0:height, 0:width]
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(8, 24)
    stripes = 20 * np.sin((xs * np.cos(angle) + ys * np.sin(angle)) * 2 * np.pi / period)
    base = rng.uniform(100, 150) + stripes
    noise = rng.normal(0, 8, size=(height, width, 3))
    image = base[..., None] + noise
    return np.clip(image, 0, 255).astype(np.uint8)


def _shape_mask(rng, kind: str, height: int, width: int) -> np.ndarray:
    """A filled shape's mask, possibly cut by the border. uint8 (H, W)."""
    mask = np.zeros((height, width), np.uint8)
    size_w = rng.uniform(0.15, 0.45) * width
    size_h = rng.uniform(0.15, 0.45) * height
    # Centers may sit slightly outside the image so some shapes touch/cross
    # the border.
    cx = rng.uniform(-0.1, 1.1) * width
    cy = rng.uniform(-0.1, 1.1) * height
    if kind == "rectangle":
        p1 = (int(round(cx - size_w / 2)), int(round(cy - size_h / 2)))
        p2 = (int(round(cx + size_w / 2)), int(round(cy + size_h / 2)))
        cv2.rectangle(mask, p1, p2, 1, thickness=-1)
    elif kind == "ellipse":
        axes = (max(2, int(round(size_w / 2))), max(2, int(round(size_h / 2))))
        cv2.ellipse(mask, (int(round(cx)), int(round(cy))), axes, 0, 0, 360, 1, -1)
    else:
        points = np.array(
            [
                [cx, cy - size_h / 2],
                [cx - size_w / 2, cy + size_h / 2],
                [cx + size_w / 2, cy + size_h / 2],
            ]
        )
        cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1)
    return mask


def make_synthetic_coco(
    out_dir: str,
    num_images: int = 16,
    image_size: Sequence[int] = (160, 200),
    num_classes: int = 3,
    seed: int = 0,
) -> Tuple[str, str]:
    """Writes a small COCO-format detection dataset of coloured shapes.

    Class c is shape ``SHAPES[c % 3]`` in colour ``_PALETTE[c % 6]``, named
    ``"rectangle"``, ``"ellipse"``, ``"triangle"`` (then ``"rectangle_1"``,
    ...). Category ids are ``1..num_classes``, image ids ``1..num_images``.
    Each image has 1-4 objects; a shape that would be smaller than 4x4
    visible pixels is redrawn.

    Args:
        out_dir: str. Created if needed; receives ``images/*.jpg`` and
            ``annotations.json``.
        num_images: int. Defaults to 16.
        image_size: ``(height, width)`` in pixels. Defaults to ``(160, 200)``.
        num_classes: int >= 1. Defaults to 3.
        seed: int. Defaults to 0.

    Returns:
        (image_dir, annotation_file) paths.

    Raises:
        ValueError: non-positive counts or an image smaller than 16x16.
    """
    height, width = (int(v) for v in image_size)
    if num_images <= 0 or num_classes <= 0:
        raise ValueError("num_images and num_classes must be positive.")
    if height < 16 or width < 16:
        raise ValueError(f"image_size must be at least 16x16, got {image_size}.")
    rng = np.random.default_rng(seed)
    image_dir = os.path.join(out_dir, "images")
    os.makedirs(image_dir, exist_ok=True)

    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        image = _background(rng, height, width)
        for _ in range(int(rng.integers(1, 5))):
            label = int(rng.integers(0, num_classes))
            while True:
                mask = _shape_mask(rng, SHAPES[label % len(SHAPES)], height, width)
                ys, xs = np.nonzero(mask)
                if len(xs) and xs.max() - xs.min() >= 3 and ys.max() - ys.min() >= 3:
                    break
            image[mask.astype(bool)] = _PALETTE[label % len(_PALETTE)]
            x1, y1 = int(xs.min()), int(ys.min())
            box_w, box_h = int(xs.max()) + 1 - x1, int(ys.max()) + 1 - y1
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": label + 1,
                    "bbox": [x1, y1, box_w, box_h],
                    "area": float(mask.sum()),
                    "iscrowd": 0,
                }
            )
        file_name = f"{image_id:06d}.jpg"
        cv2.imwrite(
            os.path.join(image_dir, file_name),
            cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
            [cv2.IMWRITE_JPEG_QUALITY, 95],
        )
        images.append(
            {"id": image_id, "file_name": file_name, "height": height, "width": width}
        )

    categories = [
        {"id": c + 1, "name": _class_name(c), "supercategory": "shape"}
        for c in range(num_classes)
    ]
    annotation_file = os.path.join(out_dir, "annotations.json")
    with open(annotation_file, "w", encoding="utf-8") as handle:
        json.dump(
            {
                "info": {"description": "tf-centernet synthetic shapes"},
                "images": images,
                "annotations": annotations,
                "categories": categories,
            },
            handle,
        )
    return image_dir, annotation_file
