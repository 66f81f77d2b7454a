"""Where the files of a Pascal VOC split are: the three layouts and their detection.

* ``voc``: ``ROOT/Annotations/*.xml``, ``ROOT/JPEGImages/`` and
  ``ROOT/ImageSets/Main/{train,val,test,...}.txt``;
* ``folder``: a plain folder holding XML files with the images beside them;
* ``side_by_side``: ``ROOT/images/`` + ``ROOT/annotations/`` (LabelImg,
  Roboflow exports); the folder names are arguments.

`detect_voc_layout` picks one (and logs it), `looks_like_voc` is the cheap
test of `tf_centernet.data.voc.VocDataset.detect`.
"""

from __future__ import annotations

import collections
import logging
import os
from typing import List, NamedTuple, Optional, Tuple

from tf_centernet.data.paths import display_path, printable

logger = logging.getLogger(__name__)


def looks_like_voc(path: str) -> bool:
    """True for an image-set ``*.txt``, a folder with ``Annotations/``,
    holding ``*.xml``, or with ``annotations/*.xml`` (images/ + annotations/
    side by side). Nothing is parsed."""
    if path.lower().endswith(".txt"):
        return True
    if not os.path.isdir(path):
        return False
    if os.path.isdir(os.path.join(path, "Annotations")) or _has_xml(path):
        return True
    side = os.path.join(path, "annotations")  # LabelImg / Roboflow: images/ + annotations/*.xml
    return os.path.isdir(side) and _has_xml(side)


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


def resolve_voc_paths(*args, **kwargs) -> Tuple[List[str], str, Optional[str]]:
    """The XML files, image folder and image-set file of a VOC split.

    Args:
        *args, **kwargs: the arguments of `detect_voc_layout` (annotations,
            images, split, annotations_dir, images_dir), which picks the layout.

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
    layout = detect_voc_layout(*args, **kwargs)
    return xml_paths(layout), layout.image_dir, layout.image_set


def xml_paths(layout: VocLayout) -> List[str]:
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
