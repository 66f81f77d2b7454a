"""Pascal VOC detection datasets (LabelImg, CVAT and Roboflow exports).

Three layouts are read, found by `tf_centernet.data.voc_layout.detect_voc_layout`
(which logs its choice):

* the VOC layout: ``ROOT/Annotations/*.xml``, ``ROOT/JPEGImages/`` and
  ``ROOT/ImageSets/Main/{train,val,test,...}.txt``; a split is named by its
  image-set file (``.../ImageSets/Main/train.txt``) or, with ``split=``, by
  its name; without either, every XML of ``Annotations/`` is read;
* a plain folder holding XML files with the images beside them: every XML
  of the folder is read;
* ``ROOT/images/`` + ``ROOT/annotations/`` side by side (LabelImg, Roboflow
  exports), given as ROOT or as its ``annotations/`` folder; the folder
  names are the ``images_dir`` / ``annotations_dir`` arguments. Image-set
  files in ``ROOT/ImageSets/Main/`` work as in the VOC layout.

In every layout an image folder given (``train_data.images``) replaces the
layout's own.

The XML is parsed with the standard library's `xml.etree.ElementTree`
(which resolves no external entities). Boxes are VOC's 1-based inclusive
pixel corners and are kept as they are, ``[xmin, ymin, xmax, ymax]``, the
convention the TF OD API and most VOC loaders use (no +1 / -1 shift).

Class indices are 0-based in the order of the class list: the lines of a
``classes`` file when given, else the sorted set of ``<name>`` values of the
split read (logged, so a run can be reproduced with a classes file). The
COCO category id of class index i is ``i + 1``.
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ElementTree
from typing import List, Optional, Tuple

from tf_centernet.config import check_choice
from tf_centernet.data.base import (
    Reader,
    given_classes,
    log_skipped,
    make_record,
    problem_counters,
    sanitize_box,
)
from tf_centernet.data.classes import class_list, read_class_file  # noqa: F401 (read_class_file re-exported)
from tf_centernet.data.voc_layout import (  # noqa: F401 (re-exported)
    LAYOUT_NAMES,
    VocLayout,
    detect_voc_layout,
    looks_like_voc,
    resolve_voc_paths,
    xml_paths,
)

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".JPG", ".JPEG", ".PNG")


class VocError(ValueError):
    """A malformed VOC file; the message names the file and the field."""


def _text(element, field: str, path: str, required: bool = True) -> Optional[str]:
    child = element.find(field)
    if child is None or child.text is None or not child.text.strip():
        if required:
            raise VocError(f"{path}: missing <{field}>.")
        return None
    return child.text.strip()


def _number(element, field: str, path: str) -> float:
    text = _text(element, field, path)
    try:
        return float(text)
    except ValueError:
        raise VocError(f"{path}: <{field}> is not a number: {text!r}.") from None


def parse_voc_xml(path: str) -> dict:
    """Reads one VOC annotation file.

    Args:
        path: str. The XML file.

    Returns:
        dict with ``filename`` (str or None), ``width``/``height`` (int or
        None when ``<size>`` is absent or zero) and ``objects``: a list of
        dicts ``name`` (str), ``box`` (4 floats ``[xmin, ymin, xmax, ymax]``,
        pixels), ``difficult`` (bool), ``truncated`` (bool).

    Raises:
        VocError: unparsable XML, or an ``<object>`` without ``<name>`` or
            with a missing / non-numeric ``<bndbox>`` field (the message
            names the file, the object number and the field).
    """
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as error:
        raise VocError(f"{path}: not well-formed XML ({error}).") from None
    if root.tag != "annotation":
        raise VocError(f"{path}: root element is <{root.tag}>, expected <annotation>.")
    width = height = None
    size = root.find("size")
    if size is not None:
        try:
            width = int(float(_text(size, "width", path)))
            height = int(float(_text(size, "height", path)))
        except (VocError, ValueError):
            width = height = None
    objects = []
    for number, obj in enumerate(root.findall("object")):
        where = f"{path} (object {number})"
        name = _text(obj, "name", where)
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise VocError(f"{where}: missing <bndbox>.")
        box = [_number(bndbox, key, where) for key in ("xmin", "ymin", "xmax", "ymax")]
        flags = {}
        for key in ("difficult", "truncated"):
            text = _text(obj, key, where, required=False)
            flags[key] = text not in (None, "0", "false", "False")
        objects.append(dict(name=name, box=box, **flags))
    return dict(
        filename=_text(root, "filename", path, required=False),
        width=width or None,
        height=height or None,
        objects=objects,
    )


def _find_image(image_dir: str, stem: str, filename: Optional[str]) -> str:
    if filename:
        candidate = os.path.join(image_dir, os.path.basename(filename))
        if os.path.isfile(candidate):
            return candidate
    for ext in IMAGE_EXTENSIONS:
        candidate = os.path.join(image_dir, stem + ext)
        if os.path.isfile(candidate):
            return candidate
    return os.path.join(image_dir, os.path.basename(filename) if filename else stem + ".jpg")


class VocDataset(Reader):
    """A Pascal VOC detection split, with the attributes of `CocoDataset`.

    Counted in `skipped` and reported in one warning (never silent):
    unreadable or malformed XML files (``bad_xml``, their image dropped),
    listed XML files that do not exist (``missing_xml``), images whose file
    is missing (``missing_image``), objects of a class outside the class
    file (``unknown_class``), degenerate or fully out-of-image boxes and
    NaN boxes (see `sanitize_box`). Boxes sticking out of the image are
    clipped to it and counted in `repaired` (``clipped_box``).

    ``difficult`` objects: ``"drop"`` removes them, ``"ignore"`` removes them
    from training but keeps them in the evaluation ground truth as crowd
    regions (a detection on one is neither a true nor a false positive, as
    COCO treats ``iscrowd``), ``"keep"`` trains on them as ordinary objects.

    Attributes:
        records: list of `Record` (image ids 1, 2, ... in split order).
        layout: `VocLayout`, the layout found (its kind is logged).
        class_names: list of str. category_ids: list of int (``1..n``).
        num_classes: int. skipped, repaired: dict reason -> count.
        ignored: dict image id -> (float32 ``(m, 4)`` boxes, int32 ``(m,)``
            classes) of the ignore regions.
        problems: list of str, the first messages of each skipped kind.

    Args:
        annotations: str. See `resolve_voc_paths`.
        images: str. Image folder (see `resolve_voc_paths`).
        classes: str or sequence of str. A class list file or the names.
            Empty: the sorted names found in the split.
        difficult: str. ``"drop"``, ``"ignore"`` (default) or ``"keep"``.
        split: str. Image-set name when `annotations` is a folder.
        check_files: bool. Skip images whose file is missing. Default True.
        annotations_dir, images_dir: str. Folder names of the side-by-side
            layout. Default ``"annotations"`` and ``"images"`` (see
            `detect_voc_layout`).

    Raises:
        FileNotFoundError: missing folders / image-set / class files, or no
            VOC layout found (the message lists the layouts looked for).
        ValueError: unknown `difficult` mode, or no object class at all.
    """

    format = "voc"

    def __init__(
        self,
        annotations: str,
        images: str = "",
        classes="",
        difficult: str = "ignore",
        split: str = "",
        check_files: bool = True,
        annotations_dir: str = "annotations",
        images_dir: str = "images",
    ):
        super().__init__()
        check_choice("data.difficult", difficult)
        self.layout = detect_voc_layout(annotations, images, split, annotations_dir, images_dir)
        self.annotation_file = self.layout.image_set or annotations
        self.image_dir = self.layout.image_dir
        self.classes, self.difficult, self.check_files = classes, difficult, check_files
        self.read()

    detect = staticmethod(looks_like_voc)  # Reader.detect: True when the path looks like this format

    @classmethod
    def from_config(cls, source, data, class_names=None) -> "VocDataset":
        """The reader of a split (`Reader.from_config`): ``source.classes``, else `class_names`."""
        return cls(source.annotations, source.images, classes=given_classes(source, class_names),
                   difficult=data.difficult)

    def read(self) -> None:
        """Parses the XML files, sets the classes, then one record per image (see the class docstring)."""
        self._skipped, self._repaired, self.problems, self._problem = problem_counters()
        parsed = self._parse_all()
        names = class_list(self.classes)
        if not names:
            names = sorted({o["name"] for _, info in parsed for o in info["objects"]})
            logger.info("%s: classes from the XML names (sorted): %s", self.annotation_file, names)
        if not names:
            raise ValueError(f"{self.annotation_file}: no object class found (no <object><name>).")
        self._set_classes(names, range(1, len(names) + 1))
        self._class_of = {name: index for index, name in enumerate(names)}
        for path, info in parsed:
            self._add_image(path, info)
        self.skipped, self.repaired = dict(self._skipped), dict(self._repaired)
        log_skipped(logger, self.annotation_file, self.skipped, self.repaired, self.problems)

    def _parse_all(self) -> List[tuple]:
        """(path, `parse_voc_xml` result) of every readable XML file of the split."""
        parsed = []
        for path in xml_paths(self.layout):
            if not os.path.isfile(path):
                self._problem("missing_xml", f"{path} is listed in {self.layout.image_set} but does not exist")
                continue
            try:
                parsed.append((path, parse_voc_xml(path)))
            except VocError as error:
                self._problem("bad_xml", str(error))
        return parsed

    def _add_image(self, path: str, info: dict) -> None:
        """Adds the record of one parsed XML file (skipped, counted, when its image is missing)."""
        stem = os.path.splitext(os.path.basename(path))[0]
        image_path = _find_image(self.image_dir, stem, info["filename"])
        if self.check_files and not os.path.isfile(image_path):
            self._problem("missing_image", f"{path}: <filename> {image_path} does not exist")
            return
        width, height = info["width"], info["height"]
        if self.check_files and (width is None or height is None):
            height, width = _image_size(image_path)
            self._repaired["size_from_image"] += 1
        boxes, labels, ignore = [], [], []
        for number, obj in enumerate(info["objects"]):
            kept = self._check_object(f"{path} (object {number}, <name>{obj['name']}</name>)", obj, width, height)
            if kept is None:
                continue
            box, cls = kept
            if obj["difficult"] and self.difficult != "keep":
                self._skipped["difficult"] += 1
                if self.difficult == "ignore":
                    ignore.append((box, cls))
                continue
            boxes.append(box)
            labels.append(cls)
        record = make_record(len(self.records) + 1, image_path, height, width, boxes, labels)
        self._append(record, ignore)

    def _check_object(self, where: str, obj: dict, width, height) -> Optional[Tuple[list, int]]:
        """(box, class index) of an object, its box clipped (counted); None for a counted skip."""
        if obj["name"] not in self._class_of:
            self._problem("unknown_class", f"{where}: class not in the class list {self.class_names}")
            return None
        box, reason = sanitize_box(obj["box"], width, height)
        if reason == "clipped_box":
            self._repaired[reason] += 1
        elif reason:
            self._problem(reason, f"{where}: <bndbox> {obj['box']} ({reason})")
            return None
        return box, self._class_of[obj["name"]]


def _image_size(path: str) -> Tuple[int, int]:
    """(height, width) of an image file in pixels (decoded).

    Raises:
        ValueError: the file cannot be decoded.
    """
    from tf_centernet.data.images import load_image

    image = load_image(path)
    return int(image.shape[0]), int(image.shape[1])
