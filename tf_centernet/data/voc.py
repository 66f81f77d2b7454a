"""Pascal VOC detection datasets (LabelImg, CVAT and Roboflow exports).

Three layouts are read, found by `detect_voc_layout` (which logs its choice):

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

import collections
import logging
import os
import xml.etree.ElementTree as ElementTree
from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from tf_centernet.config import check_choice
from tf_centernet.data.coco import CocoRecord
from tf_centernet.data.paths import display_path, printable
from tf_centernet.data.records import RecordList, problem_counters, image_size, log_skipped, sanitize_box

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".JPG", ".JPEG", ".PNG")


class VocError(ValueError):
    """A malformed VOC file; the message names the file and the field."""


def read_class_file(path: str) -> List[str]:
    """Class names, one per line (blank lines and ``#`` comments ignored).

    Raises:
        FileNotFoundError: no such file.
        ValueError: no names, or a name listed twice.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Class list file not found: {path}")
    with open(path, encoding="utf-8") as handle:
        names = [line.strip() for line in handle]
    names = [n for n in names if n and not n.startswith("#")]
    if not names:
        raise ValueError(f"{path}: the class list is empty.")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{path}: class names listed twice: {duplicates}.")
    return names


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


class VocLayout(NamedTuple):
    """Where the files of a VOC split are (see `detect_voc_layout`).

    Attributes:
        kind: str. ``"voc"`` (``Annotations/`` + ``JPEGImages/``),
            ``"folder"`` (XML with the images beside them) or
            ``"side_by_side"`` (``annotations/`` + ``images/``).
        root: str. The folder holding the layout.
        xml_dir: str. The folder of the XML files.
        image_dir: str. The image folder (`images` when given).
        image_set: str or None. The image-set file, None: every XML of
            `xml_dir`.
    """

    kind: str
    root: str
    xml_dir: str
    image_dir: str
    image_set: Optional[str]


LAYOUT_NAMES = {
    "voc": "VOC layout (ROOT/Annotations/ + ROOT/JPEGImages/)",
    "folder": "plain folder of XML files with the images beside them",
    "side_by_side": "ROOT/{images}/ + ROOT/{annotations}/ side by side, XML in {annotations}/",
}


def _has_xml(folder: str) -> bool:
    """True when `folder` holds at least one ``*.xml`` file (any case)."""
    return any(name.lower().endswith(".xml") for name in os.listdir(folder))


def _describe_folder(folder: str, limit: int = 8) -> str:
    """What a folder holds, for an error message: its subfolders and its
    files counted by extension (``no entries`` when empty)."""
    try:
        names = sorted(os.listdir(folder))
    except OSError as error:
        return f"cannot be listed ({error.strerror})"
    dirs = [n for n in names if os.path.isdir(os.path.join(folder, n))]
    counts = collections.Counter(
        os.path.splitext(n)[1].lower() or "(no extension)" for n in names if n not in dirs
    )
    parts = []
    if dirs:
        shown = ", ".join(printable(d) + "/" for d in dirs[:limit])
        parts.append(f"folders {shown}" + (f" and {len(dirs) - limit} more" if len(dirs) > limit else ""))
    if counts:
        parts.append("files " + ", ".join(f"{n} {ext}" for ext, n in sorted(counts.items())))
    return "; ".join(parts) or "no entries"


def detect_voc_layout(
    annotations: str,
    images: str = "",
    split: str = "",
    annotations_dir: str = "annotations",
    images_dir: str = "images",
) -> VocLayout:
    """Finds which of the three VOC layouts `annotations` points at.

    Tried in this order (the first that matches wins, and one INFO line
    names it):

    1. ``voc``: `annotations` is an image-set file
       ``ROOT/ImageSets/Main/NAME.txt`` (ROOT is three folders up), or a
       ROOT folder, holding ``Annotations/`` (images in ``JPEGImages/``, or
       in ``Annotations/`` itself when there is no ``JPEGImages/``, as
       before), or is the ``Annotations/`` folder itself beside
       ``../JPEGImages/``.
    2. ``side_by_side`` (LabelImg, Roboflow exports): ROOT holds
       ``{annotations_dir}/`` and ``{images_dir}/``, where ROOT is the
       folder given, the parent of a folder named `annotations_dir`, or the
       root of an image-set file.
    3. ``folder``: a folder holding ``*.xml`` files, images beside them.

    Args:
        annotations: str. An image-set file or a folder (see above).
        images: str. Image folder; when given it is the image folder of any
            layout (``train_data.images`` / ``validation_data.images``). Defaults
            to ``""`` (the layout's own).
        split: str. Image-set name (``ROOT/ImageSets/Main/{split}.txt``)
            when `annotations` is a folder; empty: every XML of the XML
            folder. Defaults to ``""``.
        annotations_dir: str. Name of the XML folder of the side-by-side
            layout. Defaults to ``"annotations"``.
        images_dir: str. Name of its image folder. Defaults to ``"images"``.

    Returns:
        `VocLayout`.

    Raises:
        FileNotFoundError: `annotations` does not exist; a `split` image-set
            file is missing; or no layout matches: the message lists the
            three layouts looked for and what the folder holds.
    """
    given = annotations
    if os.path.isfile(annotations):
        image_set = annotations
        folder = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(annotations))))
    elif os.path.isdir(annotations):
        image_set, folder = None, annotations
    else:
        raise FileNotFoundError(f"VOC annotations not found: {display_path(annotations)} (give an image-set "
                                "file, a VOC root or a folder of XML files).")

    pairs = (("voc", "Annotations", "JPEGImages"), ("side_by_side", annotations_dir, images_dir))
    found = None
    for kind, xml_name, image_name in pairs:
        # A COCO root also has an annotations/ folder: side by side needs XML in it.
        needs_xml = kind == "side_by_side" and image_set is None
        if os.path.isdir(os.path.join(folder, xml_name)) and not (
            needs_xml and not _has_xml(os.path.join(folder, xml_name))
        ):
            root = folder
        elif image_set is None and os.path.basename(os.path.abspath(folder)) == xml_name:
            # The XML folder itself was given: its layout needs the sibling image folder.
            root = os.path.dirname(os.path.abspath(folder))
            if not (images or os.path.isdir(os.path.join(root, image_name))):
                continue
        else:
            continue
        xml_dir = os.path.join(root, xml_name)
        image_dir = os.path.join(root, image_name)
        if kind == "voc" and not os.path.isdir(image_dir):
            image_dir = xml_dir  # VOC root without JPEGImages/: images beside the XML, as before
        if kind == "side_by_side" and not images and not os.path.isdir(image_dir):
            raise FileNotFoundError(
                f"{display_path(given)}: found {xml_name}/ but no {image_name}/ beside it in "
                f"{display_path(root)}; give the image folder (images=..., train_data.images / "
                "validation_data.images) or name it (images_dir=...)."
            )
        found = (kind, root, xml_dir, image_dir)
        break
    if found is None and image_set is None and _has_xml(folder):
        found = ("folder", folder, folder, folder)
    if found is None:
        where = folder if image_set is None else f"{folder} (the root of image-set file {image_set})"
        layouts = "; ".join(
            f"({n}) " + text.format(images=images_dir, annotations=annotations_dir)
            for n, text in enumerate(LAYOUT_NAMES.values(), 1)
        )
        raise FileNotFoundError(
            f"{display_path(given)}: no Pascal VOC layout found in {display_path(where)}, which holds "
            f"{_describe_folder(folder)}. Looked for {layouts}. Point train_data.annotations / validation_data.annotations at one of them "
            "(or set train_data.format / validation_data.format to the data's format)."
        )
    kind, root, xml_dir, image_dir = found
    if split and image_set is None:
        image_set = os.path.join(root, "ImageSets", "Main", split + ".txt")
        if not os.path.isfile(image_set):
            raise FileNotFoundError(f"VOC image-set file not found: {display_path(image_set)} (split={split!r}).")
    layout = VocLayout(kind, root, xml_dir, images or image_dir, image_set)
    logger.info(
        "%s: Pascal VOC layout %r (%s): XML files in %s, images in %s%s", display_path(given), kind,
        LAYOUT_NAMES[kind].format(images=images_dir, annotations=annotations_dir), display_path(layout.xml_dir),
        display_path(layout.image_dir), " (given)" if images else "",
    )
    return layout


def resolve_voc_paths(
    annotations: str,
    images: str = "",
    split: str = "",
    annotations_dir: str = "annotations",
    images_dir: str = "images",
) -> Tuple[List[str], str, Optional[str]]:
    """The XML files, image folder and image-set file of a VOC split.

    Args:
        annotations, images, split, annotations_dir, images_dir: see
            `detect_voc_layout`, which picks the layout.

    Returns:
        (xml paths, image folder, image-set file or None). Without an
        image-set file the XML files are those of the XML folder, sorted by
        name. Ids of the image-set file are file names, decoded as the file
        system decodes them (`os.fsdecode`: bytes that are not UTF-8
        round-trip).

    Raises:
        FileNotFoundError: a missing path or image-set file, or no layout
            found (see `detect_voc_layout`).
    """
    layout = detect_voc_layout(annotations, images, split, annotations_dir, images_dir)
    return _xml_paths(layout), layout.image_dir, layout.image_set


def _xml_paths(layout: VocLayout) -> List[str]:
    """The XML files of a layout: those its image-set file lists, else
    every ``*.xml`` of its XML folder sorted by name."""
    if layout.image_set:
        # Ids are file names: read as bytes and decoded as the file system
        # does (os.fsdecode), so an id that is not UTF-8 names its file.
        with open(layout.image_set, "rb") as handle:
            # VOC image sets may carry a second column (+1/-1 per class files).
            stems = [os.fsdecode(line.split()[0]) for line in handle if line.strip()]
        return [os.path.join(layout.xml_dir, stem + ".xml") for stem in stems]
    return sorted(
        os.path.join(layout.xml_dir, name) for name in os.listdir(layout.xml_dir) if name.lower().endswith(".xml")
    )


class VocDataset(RecordList):
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
        records: list of `CocoRecord` (image ids 1, 2, ... in split order).
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
        check_choice("data.difficult", difficult)
        self.layout = detect_voc_layout(annotations, images, split, annotations_dir, images_dir)
        paths, image_dir, image_set = _xml_paths(self.layout), self.layout.image_dir, self.layout.image_set
        self.annotation_file = image_set or annotations
        self.image_dir = image_dir
        skipped, repaired, self.problems, problem = problem_counters()

        parsed = []
        for path in paths:
            if not os.path.isfile(path):
                problem("missing_xml", f"{path} is listed in {image_set} but does not exist")
                continue
            try:
                parsed.append((path, parse_voc_xml(path)))
            except VocError as error:
                problem("bad_xml", str(error))

        if isinstance(classes, str) and classes:
            names = read_class_file(classes)
        elif classes and not isinstance(classes, str):
            names = list(classes)
        else:
            names = sorted({o["name"] for _, info in parsed for o in info["objects"]})
            logger.info("%s: classes from the XML names (sorted): %s", self.annotation_file, names)
        if not names:
            raise ValueError(f"{self.annotation_file}: no object class found (no <object><name>).")
        self.class_names = names
        self.category_ids = list(range(1, len(names) + 1))
        self.num_classes = len(names)
        class_of = {name: index for index, name in enumerate(names)}

        self.records: List[CocoRecord] = []
        self.ignored: Dict[int, np.ndarray] = {}
        for path, info in parsed:
            stem = os.path.splitext(os.path.basename(path))[0]
            image_path = _find_image(image_dir, stem, info["filename"])
            if check_files and not os.path.isfile(image_path):
                problem("missing_image", f"{path}: <filename> {image_path} does not exist")
                continue
            width, height = info["width"], info["height"]
            if check_files and (width is None or height is None):
                height, width = image_size(image_path)
                repaired["size_from_image"] += 1
            boxes, labels, ignore = [], [], []
            for number, obj in enumerate(info["objects"]):
                where = f"{path} (object {number}, <name>{obj['name']}</name>)"
                if obj["name"] not in class_of:
                    problem("unknown_class", f"{where}: class not in the class list {names}")
                    continue
                box, reason = sanitize_box(obj["box"], width, height)
                if reason == "clipped_box":
                    repaired[reason] += 1
                elif reason:
                    problem(reason, f"{where}: <bndbox> {obj['box']} ({reason})")
                    continue
                if obj["difficult"] and difficult != "keep":
                    skipped["difficult"] += 1
                    if difficult == "ignore":
                        ignore.append((box, class_of[obj["name"]]))
                    continue
                boxes.append(box)
                labels.append(class_of[obj["name"]])
            image_id = len(self.records) + 1
            self._append(image_id, image_path, int(height or 0), int(width or 0), boxes, labels, ignore)
        self.skipped = dict(skipped)
        self.repaired = dict(repaired)
        log_skipped(logger, self.annotation_file, self.skipped, self.repaired, self.problems)

