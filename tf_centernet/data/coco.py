"""COCO-format detection datasets (read with pycocotools).

`CocoDataset` turns an annotation file and an image folder into a list of
`tf_centernet.data.base.Record`s with boxes ``[x1, y1, x2, y2]`` in pixels and 0-based,
contiguous class indices (COCO category ids sorted ascending, as the
releases' `coco.py` maps them). `load_image` reads one image as RGB uint8.
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import logging
import math
import os
from typing import Dict, Optional

import numpy as np
from pycocotools.coco import COCO

from tf_centernet.config import CHOICES, check_choice
from tf_centernet.data.base import CocoRecord, Reader, Record, log_skipped, make_record  # noqa: F401 (CocoRecord re-exported)

logger = logging.getLogger(__name__)

CROWD_MODES = CHOICES["data.crowd"]


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


class CocoDataset(Reader):
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
        records: list of `Record`, sorted by image id.
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
        super().__init__()
        check_choice("data.crowd", crowd)
        if not os.path.isfile(annotation_file):
            raise FileNotFoundError(f"COCO annotation file not found: {annotation_file}")
        if not os.path.isdir(image_dir):
            raise FileNotFoundError(f"Image folder not found: {image_dir}")
        self.annotation_file = annotation_file
        self.image_dir = image_dir
        self.crowd = crowd
        self.check_files = check_files
        self.read()

    @staticmethod
    def detect(path: str) -> bool:
        """True for a ``*.json`` path."""
        return path.lower().endswith(".json")

    @classmethod
    def from_config(cls, source, data, class_names=None) -> "CocoDataset":
        """The reader of a split (`Reader.from_config`); the file's categories are the classes."""
        return cls(source.annotations, source.images, crowd=data.crowd)

    def read(self) -> None:
        """Reads and checks the JSON, then one record per image (see the class docstring)."""
        content = self._load_json()
        from tf_centernet.data.coco_schema import clean_coco

        content, schema_skips, self.problems = clean_coco(self.annotation_file, content)
        self.coco = COCO()
        self.coco.dataset = content
        with contextlib.redirect_stdout(io.StringIO()):  # "creating index..."
            self.coco.createIndex()
        ids = sorted(self.coco.getCatIds())
        self._set_classes([self.coco.cats[cid]["name"] for cid in ids], ids)
        self._class_of = {cid: index for index, cid in enumerate(ids)}
        self._skipped: Dict[str, int] = collections.Counter(schema_skips)
        self._repaired: Dict[str, int] = collections.Counter()
        for image_id in sorted(self.coco.getImgIds()):
            record = self._image_record(image_id)
            if record is not None:
                self.records.append(record)
        self.skipped, self.repaired = dict(self._skipped), dict(self._repaired)
        problems = self.problems
        listed = problems[:20] + ([f"... {len(problems) - 20} more"] if len(problems) > 20 else [])
        log_skipped(logger, f"{self.annotation_file} (images in {self.image_dir})", self.skipped, self.repaired, listed)

    def _load_json(self) -> dict:
        """The annotation file's top-level object, with its three lists checked."""
        annotation_file = self.annotation_file
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
        return content

    def _image_size(self, info: dict, path: str, where: str):
        """(height, width) of an image: the JSON's, or the file header's when
        they differ (a counted repair); None when the file is missing (a counted skip)."""
        height, width = _json_size(info)
        if not self.check_files:
            return height, width
        if not os.path.isfile(path):
            self._skipped["missing_image"] += 1
            self.problems.append(f"{where}: image file not found in {self.image_dir} (missing_image)")
            return None
        file_size = _file_size(path)
        if file_size is not None and (height, width) != file_size:
            self._repaired["size_from_image"] += 1
            self.problems.append(
                f"{where}: JSON width x height {width}x{height} differs from the file's "
                f"{file_size[1]}x{file_size[0]}; using the file's (size_from_image)"
            )
            return file_size
        return height, width

    def _image_record(self, image_id: int) -> Optional[Record]:
        """The record of one image id, or None when the image is skipped (counted)."""
        info = self.coco.imgs[image_id]
        path = os.path.join(self.image_dir, info["file_name"])
        where = f"{self.annotation_file}: image id {image_id} ({info['file_name']})"
        if leaves_folder(info["file_name"]):
            self._skipped["unsafe_file_name"] += 1
            self.problems.append(f"{where}: file_name leads outside the image folder {self.image_dir} "
                                 "(unsafe_file_name); image skipped with its annotations")
            return None
        size = self._image_size(info, path, where)
        if size is None:
            return None
        height, width = size
        boxes, classes = [], []
        for ann in self.coco.imgToAnns.get(image_id, []):
            reason = self._object_problem(ann, width, height)
            if reason == "crowd":
                self._skipped["crowd"] += 1
                continue
            if reason:
                self._skipped[reason] += 1
                self.problems.append(f"{where}: annotation id {ann.get('id')} bbox {ann['bbox']} "
                                     f"category {ann['category_id']} ({reason})")
                continue
            x, y, w, h = (float(v) for v in ann["bbox"])
            boxes.append([x, y, x + w, y + h])
            classes.append(self._class_of[ann["category_id"]])
        return make_record(image_id, path, height, width, boxes, classes)

    def _object_problem(self, ann: dict, width: int, height: int) -> Optional[str]:
        """Why an annotation is not trained on (a skip reason, or ``"crowd"``), else None."""
        x, y, w, h = (float(v) for v in ann["bbox"])
        if w <= 0 or h <= 0:
            return "degenerate_box"
        if ann["category_id"] not in self._class_of:
            return "unknown_category"
        if width and height and (x >= width or y >= height or x + w <= 0 or y + h <= 0):
            return "outside_image"
        if ann.get("iscrowd", 0) and self.crowd == "drop":
            return "crowd"
        return None
