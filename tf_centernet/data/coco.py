"""COCO-format detection datasets (read with pycocotools).

`CocoDataset` turns an annotation file and an image folder into a list of
`CocoRecord`s with boxes ``[x1, y1, x2, y2]`` in pixels and 0-based,
contiguous class indices (COCO category ids sorted ascending, as the
releases' `coco.py` maps them). `load_image` reads one image as RGB uint8.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import io
import json
import logging
import math
import os
from typing import Dict, List, Optional

import numpy as np
from pycocotools.coco import COCO

from tf_centernet.config import CHOICES, check_choice
from tf_centernet.data.records import RecordList, log_skipped

logger = logging.getLogger(__name__)

CROWD_MODES = CHOICES["data.crowd"]


@dataclasses.dataclass
class CocoRecord:
    """One image and its objects.

    Attributes:
        image_id: int. COCO image id.
        file_name: str. Full path of the image file.
        height: int. Image height in pixels (from the annotation file).
        width: int. Image width in pixels (from the annotation file).
        boxes: float32 ``(num_objects, 4)``. ``[x1, y1, x2, y2]`` pixels,
            ``x2 = x + w`` as in the releases.
        classes: int32 ``(num_objects,)``. 0-based class indices.
        encoded: bytes or None. The encoded image (TFRecord inputs), read
            instead of `file_name` when set.
        source: str or None. Where an in-memory record came from, e.g.
            ``"data/train-00000-of-00002.tfrecord record 17"``; messages
            name it with `file_name`.
    """

    image_id: int
    file_name: str
    height: int
    width: int
    boxes: np.ndarray
    classes: np.ndarray
    encoded: Optional[bytes] = None
    source: Optional[str] = None

    @property
    def num_objects(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def display_name(self) -> str:
        """The record for messages: ``SOURCE (file_name)`` for TFRecord
        records, else the file name, printable even when it is not UTF-8."""
        from tf_centernet.data.paths import display_path

        name = display_path(self.file_name)
        return f"{self.source} ({name})" if self.source else name


def load_image(path: str) -> np.ndarray:
    """Reads an image file as RGB uint8 (see `tf_centernet.data.images.load_image`).

    EXIF orientation is ignored (stored pixels), truncated JPEGs rejected.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file cannot be used (names the file and the reason).
    """
    from tf_centernet.data.images import load_image as load

    return load(path)


def leaves_folder(file_name: str) -> bool:
    """True when a relative `file_name` would lead outside its folder: absolute, or ``..`` after normalising.

    ``a/../b.jpg`` stays inside; ``../b.jpg`` and ``/data/b.jpg`` do not.
    """
    normal = os.path.normpath(file_name)
    return os.path.isabs(normal) or normal == os.pardir or normal.startswith(os.pardir + os.sep)


def _json_size(info):
    """(height, width) of an ``images`` entry; 0 for a missing or bad value."""
    size = []
    for key in ("height", "width"):
        value = info.get(key, 0)
        size.append(int(value) if isinstance(value, (int, float)) and math.isfinite(value) and value > 0 else 0)
    return tuple(size)


def _file_size(path):
    """(height, width) from the image header, or None when it cannot be read."""
    from tf_centernet.data.images import ImageError, check_image_file

    try:
        return check_image_file(path)
    except ImageError:
        return None  # an unusable file: training's check counts and names it


class CocoDataset(RecordList):
    """A COCO-format detection dataset: annotations plus an image folder.

    The JSON is checked field by field first (`tf_centernet.data.coco_schema`:
    missing ids / file names / category ids, null, non-numeric or
    beyond-float32 coordinates, duplicate image ids, id type mismatches,
    annotations of missing images). Skipped, counted in `skipped` (reason ->
    count) and reported in one `logging.warning` with one line per item
    (file, image id, annotation index; all in `problems`): those, NaN/inf
    values, degenerate boxes (width or height <= 0), boxes entirely outside
    the image, annotations of an unknown category, images whose file is
    missing (with all their annotations), and images whose ``file_name``
    leads outside `image_dir` (``../x.jpg`` or an absolute path:
    ``unsafe_file_name``, refused with their annotations). A JSON width/height that differs
    from the image file's header is replaced by the file's (counted in
    `repaired["size_from_image"]`). Images without any
    object are kept (they contribute negatives to the heatmap losses).

    Crowd annotations (``iscrowd=1``): ``crowd="drop"`` (default) removes
    them (counted as ``skipped["crowd"]``, logged at INFO level: it is not an
    error); ``crowd="keep"`` keeps them as ordinary objects, which is what the
    releases do.

    Attributes:
        records: list of `CocoRecord`, sorted by image id.
        category_ids: list of int. Class index -> COCO category id (sorted).
        class_names: list of str. Class index -> category name.
        num_classes: int.
        skipped: dict str -> int. Reason -> number of skipped items.
        coco: the `pycocotools.coco.COCO` object (for evaluation).
        annotation_file: str. image_dir: str.

    Args:
        annotation_file: str. COCO instances JSON.
        image_dir: str. Folder holding the ``file_name``s of the JSON.
        crowd: str. ``"drop"`` or ``"keep"``. Defaults to ``"drop"``.
        check_files: bool. Skip records whose image file is missing. Defaults
            to True.

    Raises:
        FileNotFoundError: missing annotation file or image folder.
        ValueError: unreadable JSON, missing ``images`` / ``annotations`` /
            ``categories`` lists, or an unknown `crowd` mode.
    """

    format = "coco"

    def __init__(
        self,
        annotation_file: str,
        image_dir: str,
        crowd: str = "drop",
        check_files: bool = True,
    ):
        check_choice("data.crowd", crowd)
        if not os.path.isfile(annotation_file):
            raise FileNotFoundError(f"COCO annotation file not found: {annotation_file}")
        if not os.path.isdir(image_dir):
            raise FileNotFoundError(f"Image folder not found: {image_dir}")
        self.annotation_file = annotation_file
        self.image_dir = image_dir
        self.crowd = crowd

        try:
            with open(annotation_file, "r", encoding="utf-8") as handle:
                content = json.load(handle)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(
                f"Cannot parse COCO annotation file {annotation_file}: {error}"
            ) from error
        if not isinstance(content, dict):
            raise ValueError(f"{annotation_file}: expected a JSON object at top level.")
        for key in ("images", "annotations", "categories"):
            if not isinstance(content.get(key), list):
                raise ValueError(
                    f"{annotation_file}: missing or malformed {key!r} list; not a "
                    "COCO instances file."
                )
        from tf_centernet.data.coco_schema import clean_coco

        content, schema_skips, problems = clean_coco(annotation_file, content)
        self.coco = COCO()
        self.coco.dataset = content
        with contextlib.redirect_stdout(io.StringIO()):  # "creating index..."
            self.coco.createIndex()

        self.category_ids: List[int] = sorted(self.coco.getCatIds())
        self.class_names: List[str] = [
            self.coco.cats[cid]["name"] for cid in self.category_ids
        ]
        self.num_classes = len(self.category_ids)
        class_of = {cid: index for index, cid in enumerate(self.category_ids)}

        skipped: Dict[str, int] = collections.Counter(schema_skips)
        repaired: Dict[str, int] = collections.Counter()
        self.records: List[CocoRecord] = []
        for image_id in sorted(self.coco.getImgIds()):
            info = self.coco.imgs[image_id]
            path = os.path.join(image_dir, info["file_name"])
            where = f"{annotation_file}: image id {image_id} ({info['file_name']})"
            if leaves_folder(info["file_name"]):
                skipped["unsafe_file_name"] += 1
                problems.append(f"{where}: file_name leads outside the image folder {image_dir} "
                                "(unsafe_file_name); image skipped with its annotations")
                continue
            height, width = _json_size(info)
            if check_files:
                if not os.path.isfile(path):
                    skipped["missing_image"] += 1
                    problems.append(f"{where}: image file not found in {image_dir} (missing_image)")
                    continue
                file_size = _file_size(path)
                if file_size is not None and (height, width) != file_size:
                    repaired["size_from_image"] += 1
                    problems.append(
                        f"{where}: JSON width x height {width}x{height} differs from the file's "
                        f"{file_size[1]}x{file_size[0]}; using the file's (size_from_image)"
                    )
                    height, width = file_size
            boxes, classes = [], []
            for ann in self.coco.imgToAnns.get(image_id, []):
                x, y, w, h = (float(v) for v in ann["bbox"])
                reason = None
                if w <= 0 or h <= 0:
                    reason = "degenerate_box"
                elif ann["category_id"] not in class_of:
                    reason = "unknown_category"
                elif width and height and (x >= width or y >= height or x + w <= 0 or y + h <= 0):
                    reason = "outside_image"
                elif ann.get("iscrowd", 0) and crowd == "drop":
                    skipped["crowd"] += 1
                    continue
                if reason:
                    skipped[reason] += 1
                    problems.append(f"{where}: annotation id {ann.get('id')} bbox {ann['bbox']} "
                                    f"category {ann['category_id']} ({reason})")
                    continue
                boxes.append([x, y, x + w, y + h])
                classes.append(class_of[ann["category_id"]])
            self.records.append(
                CocoRecord(
                    image_id=int(image_id),
                    file_name=path,
                    height=height,
                    width=width,
                    boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
                    classes=np.asarray(classes, np.int32).reshape(-1),
                )
            )
        self.skipped = dict(skipped)
        self.repaired = dict(repaired)
        self.problems = problems
        listed = problems[:20] + ([f"... {len(problems) - 20} more"] if len(problems) > 20 else [])
        log_skipped(logger, f"{annotation_file} (images in {image_dir})", self.skipped, self.repaired, listed)
