"""Field-by-field checks of a COCO instances file, before pycocotools sees it.

`clean_coco` returns a copy of the JSON content holding only valid images
and annotations; every dropped item is counted by reason and described in a
message naming the file, the image id and the annotation index. Problems
that make the whole file unusable (categories) raise `ValueError`.

Image reasons: ``missing_file_name``, ``bad_image_id`` (not an integer),
``duplicate_image_id`` (every image sharing the id is dropped: their
annotations cannot be told apart). Annotation reasons:
``missing_image_id``, ``bad_image_id``, ``annotation_of_missing_image``,
``missing_category_id``, ``malformed_box`` (missing, null or non-numeric
coordinates), ``coordinate_out_of_range`` (beyond float32), ``nan_box``.
"""

from __future__ import annotations

import collections
import math
from typing import Dict, List, Tuple

FLOAT32_MAX = 3.4028234663852886e38


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value):
    """The float of a JSON number, else None (null, strings, booleans)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def check_categories(source: str, categories: list) -> None:
    """Raises ValueError naming the category index for a bad entry."""
    seen = set()
    for index, cat in enumerate(categories):
        if not isinstance(cat, dict) or not _is_int(cat.get("id")) or "name" not in cat:
            raise ValueError(f"{source}: categories[{index}] needs an integer 'id' and a 'name', got {cat!r}.")
        if cat["id"] in seen:
            raise ValueError(f"{source}: categories[{index}]: duplicate category id {cat['id']}.")
        seen.add(cat["id"])


def clean_coco(source: str, content: dict) -> Tuple[dict, Dict[str, int], List[str]]:
    """Valid images and annotations of a COCO instances JSON object.

    Args:
        source: str. The file (named in messages).
        content: dict with ``images``, ``annotations`` and ``categories`` lists.

    Returns:
        (content, skipped, problems): the cleaned copy, reason -> count and
        one message per dropped item.

    Raises:
        ValueError: a malformed category list (see `check_categories`).
    """
    check_categories(source, content["categories"])
    skipped: Dict[str, int] = collections.Counter()
    problems: List[str] = []

    def skip(reason, message):
        skipped[reason] += 1
        problems.append(f"{source}: {message} ({reason})")

    id_count = collections.Counter(
        img.get("id") for img in content["images"] if isinstance(img, dict) and _is_int(img.get("id"))
    )
    images = []
    for index, img in enumerate(content["images"]):
        image_id = img.get("id") if isinstance(img, dict) else None
        if not _is_int(image_id):
            skip("bad_image_id", f"images[{index}]: id {image_id!r} is not an integer")
        elif not isinstance(img.get("file_name"), str) or not img["file_name"]:
            skip("missing_file_name", f"images[{index}] (image id {image_id}): no 'file_name'")
        elif id_count[image_id] > 1:
            skip("duplicate_image_id", f"images[{index}] ({img['file_name']}): image id {image_id} "
                 f"used by {id_count[image_id]} images")
        else:
            images.append(img)
    kept_ids = {img["id"] for img in images}
    all_ids = set(id_count)

    annotations = []
    for index, ann in enumerate(content["annotations"]):
        where = f"annotations[{index}]"
        if not isinstance(ann, dict):
            skip("malformed_annotation", f"{where}: not an object")
            continue
        image_id = ann.get("image_id")
        where = f"{where} (image id {image_id!r})"
        if image_id is None:
            skip("missing_image_id", f"{where}: no 'image_id'")
            continue
        if not _is_int(image_id):
            skip("bad_image_id", f"{where}: image_id {image_id!r} is not an integer "
                 f"({type(image_id).__name__}; image ids are integers)")
            continue
        if image_id not in all_ids:
            skip("annotation_of_missing_image", f"{where}: no image has this id")
            continue
        if image_id not in kept_ids:
            continue  # its image was skipped (counted there)
        if ann.get("category_id") is None:
            skip("missing_category_id", f"{where}: no 'category_id'")
            continue
        bbox = ann.get("bbox")
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
            skip("malformed_box", f"{where}: 'bbox' must be 4 numbers [x, y, w, h], got {bbox!r}")
            continue
        values = [_number(v) for v in bbox]
        if any(v is None for v in values):
            skip("malformed_box", f"{where}: 'bbox' has a null or non-numeric coordinate: {bbox!r}")
            continue
        if not all(math.isfinite(v) for v in values):
            skip("nan_box", f"{where}: 'bbox' has a NaN/inf coordinate: {bbox!r}")
            continue
        if any(abs(v) > FLOAT32_MAX for v in values) or abs(values[0] + values[2]) > FLOAT32_MAX \
                or abs(values[1] + values[3]) > FLOAT32_MAX:
            skip("coordinate_out_of_range", f"{where}: 'bbox' {bbox!r} is beyond float32 range")
            continue
        annotations.append(ann)
    cleaned = dict(content, images=images, annotations=annotations)
    return cleaned, dict(skipped), problems
