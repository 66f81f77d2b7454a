"""Class labels of converted snapshots.

The releases train on COCO with heatmap channel ``i`` standing for the
``i``-th COCO category id in ascending order (their ``_cat_ids`` list); the
names are COCO's. Other snapshots take names from a file or get generic ones.
"""

from __future__ import annotations

import os
from typing import List, Optional, Tuple

__all__ = ["COCO_CATEGORIES", "snapshot_labels"]

# (COCO category id, name) by heatmap channel, as in the releases.
COCO_CATEGORIES = (
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"), (6, "bus"),
    (7, "train"), (8, "truck"), (9, "boat"), (10, "traffic light"), (11, "fire hydrant"),
    (13, "stop sign"), (14, "parking meter"), (15, "bench"), (16, "bird"), (17, "cat"), (18, "dog"),
    (19, "horse"), (20, "sheep"), (21, "cow"), (22, "elephant"), (23, "bear"), (24, "zebra"),
    (25, "giraffe"), (27, "backpack"), (28, "umbrella"), (31, "handbag"), (32, "tie"),
    (33, "suitcase"), (34, "frisbee"), (35, "skis"), (36, "snowboard"), (37, "sports ball"),
    (38, "kite"), (39, "baseball bat"), (40, "baseball glove"), (41, "skateboard"),
    (42, "surfboard"), (43, "tennis racket"), (44, "bottle"), (46, "wine glass"), (47, "cup"),
    (48, "fork"), (49, "knife"), (50, "spoon"), (51, "bowl"), (52, "banana"), (53, "apple"),
    (54, "sandwich"), (55, "orange"), (56, "broccoli"), (57, "carrot"), (58, "hot dog"),
    (59, "pizza"), (60, "donut"), (61, "cake"), (62, "chair"), (63, "couch"), (64, "potted plant"),
    (65, "bed"), (67, "dining table"), (70, "toilet"), (72, "tv"), (73, "laptop"), (74, "mouse"),
    (75, "remote"), (76, "keyboard"), (77, "cell phone"), (78, "microwave"), (79, "oven"),
    (80, "toaster"), (81, "sink"), (82, "refrigerator"), (84, "book"), (85, "clock"), (86, "vase"),
    (87, "scissors"), (88, "teddy bear"), (89, "hair drier"), (90, "toothbrush"),
)


def snapshot_labels(num_classes: int, classes_file: Optional[str] = None) -> Tuple[List[int], List[str]]:
    """Category ids and names by class index for a converted snapshot.

    Args:
        num_classes: int. The model's classes.
        classes_file: str or None. A text file with one class name per line
            (blank lines ignored); ids are then ``1 .. num_classes``.

    Returns:
        (category_ids, names). Without a file: COCO's categories in the
        releases' order for 80 classes, else ids ``1 .. N`` named by their
        number (the project's fallback, as `class_labels` gives).

    Raises:
        FileNotFoundError: `classes_file` does not exist.
        ValueError: the file lists another number of names than
            `num_classes` (the message names the file).
    """
    if classes_file:
        if not os.path.isfile(classes_file):
            raise FileNotFoundError(f"Classes file not found: {classes_file}")
        with open(classes_file, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
        if len(names) != num_classes:
            raise ValueError(
                f"{classes_file} lists {len(names)} class names but the model has {num_classes} classes."
            )
        return list(range(1, num_classes + 1)), names
    if num_classes == len(COCO_CATEGORIES):
        return [c for c, _ in COCO_CATEGORIES], [n for _, n in COCO_CATEGORIES]
    return list(range(1, num_classes + 1)), [str(i) for i in range(1, num_classes + 1)]
