"""One dataset interface over the COCO, Pascal VOC and TFRecord readers.

Every reader (`CocoDataset`, `VocDataset`, `TfRecordDataset`) gives the same
attributes: ``records`` (list of `CocoRecord`: boxes ``[x1, y1, x2, y2]`` in
pixels, 0-based class indices), ``class_names``, ``category_ids`` (COCO id
of each class index), ``num_classes``, ``skipped`` and ``repaired``
(reason -> count). `open_dataset` picks the reader from the split's ``format`` or
from the path (`detect_format`); `coco_ground_truth` builds the
pycocotools ground truth in memory, so every format is scored by the same
COCO evaluation.
"""

from __future__ import annotations

import collections
import contextlib
import glob
import io
import math
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from tf_centernet.config import CHOICES, check_choice, input_config

FORMATS = tuple(f for f in CHOICES["train_data.format"] if f)  # "" is "detect it"
DIFFICULT_MODES = CHOICES["data.difficult"]
TFRECORD_MARKERS = (".tfrecord", ".record", ".tfrec")


def sanitize_box(box: Sequence[float], width: Optional[int], height: Optional[int]) -> Tuple[list, Optional[str]]:
    """Checks and repairs one ``[x1, y1, x2, y2]`` pixel box.

    Args:
        box: 4 numbers, pixels.
        width, height: int or None. Image size in pixels; None: not clipped.

    Returns:
        (box, reason): reason is None for a valid box, ``"clipped_box"`` for
        a box clipped to the image (returned clipped: a repair), or the skip
        reason ``"nan_box"``, ``"degenerate_box"`` (x2 <= x1 or y2 <= y1) or
        ``"outside_image"`` (nothing left after clipping).
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        return [x1, y1, x2, y2], "nan_box"
    if x2 <= x1 or y2 <= y1:
        return [x1, y1, x2, y2], "degenerate_box"
    if not width or not height:
        return [x1, y1, x2, y2], None
    clipped = [min(max(x1, 0.0), width), min(max(y1, 0.0), height), min(max(x2, 0.0), width), min(max(y2, 0.0), height)]
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        return [x1, y1, x2, y2], "outside_image"
    return clipped, ("clipped_box" if clipped != [x1, y1, x2, y2] else None)


def problem_counters(per_reason: int = 5):
    """Counters a reader fills while it skips or repairs items.

    Returns:
        (skipped, repaired, problems, problem): two `collections.Counter`
        (reason -> count), the list of messages kept for the log, and
        ``problem(reason, message)``, which counts a skip and keeps the
        first `per_reason` messages of each reason.
    """
    skipped: Dict[str, int] = collections.Counter()
    repaired: Dict[str, int] = collections.Counter()
    problems: List[str] = []

    def problem(reason, message):
        skipped[reason] += 1
        if sum(1 for p in problems if p.startswith(reason + ":")) < per_reason:
            problems.append(f"{reason}: {message}")

    return skipped, repaired, problems, problem


class RecordList:
    """What every dataset of this package shares: ``records`` as a sequence.

    Subclasses (`CocoDataset`, `VocDataset`, `TfRecordDataset`) set
    ``records`` (a list of `tf_centernet.data.coco.CocoRecord`),
    ``annotation_file`` and ``num_classes``.
    """

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        return self.records[index]

    @property
    def num_objects(self) -> int:
        """Total number of kept objects."""
        return sum(record.num_objects for record in self.records)

    def _append(self, image_id, file_name, height, width, boxes, labels, ignore, encoded=None, source=None):
        """Adds one image: its kept ``boxes`` / ``labels`` (pixels, class
        indices) as a record, its ``ignore`` list of (box, class) as ignore
        regions in ``self.ignored``; `source` names where an in-memory
        record came from (``FILE record N``)."""
        from tf_centernet.data.coco import CocoRecord

        if ignore:
            self.ignored[image_id] = (
                np.asarray([b for b, _ in ignore], np.float32).reshape(-1, 4),
                np.asarray([c for _, c in ignore], np.int32),
            )
        self.records.append(
            CocoRecord(
                image_id=image_id, file_name=file_name, height=height, width=width,
                boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
                classes=np.asarray(labels, np.int32).reshape(-1),
                encoded=encoded,
                source=source,
            )
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.annotation_file!r}, images={len(self)}, "
            f"objects={self.num_objects}, classes={self.num_classes})"
        )


def log_skipped(logger, source: str, skipped: Dict[str, int], repaired: Dict[str, int], problems: Sequence[str] = ()):
    """One warning: a line with every skip and repair count, then the examples.

    The examples are lines of the same log record, so a log filter or
    handler sees the counts and the items they count together.
    Difficult / crowd objects handled as configured are reported at INFO.
    """
    from tf_centernet.data.paths import printable

    expected = {"difficult", "crowd"}
    bad = {k: v for k, v in skipped.items() if k not in expected and v}
    if bad or repaired:
        logger.warning(
            "%s: skipped %s; repaired %s." + "\n  %s" * len(problems),
            printable(source),
            ", ".join(f"{v} {k}" for k, v in sorted(bad.items())) or "nothing",
            ", ".join(f"{v} {k}" for k, v in sorted(repaired.items())) or "nothing",
            *(printable(p) for p in problems),
        )
    for key in sorted(expected & set(skipped)):
        logger.info("%s: %d %s objects not trained on (as configured).", source, skipped[key], key)


def image_size(path: str) -> Tuple[int, int]:
    """(height, width) of an image file in pixels.

    Raises:
        ValueError: the file cannot be decoded.
    """
    from tf_centernet.data.coco import load_image

    image = load_image(path)
    return int(image.shape[0]), int(image.shape[1])


def is_tfrecord_path(path: str) -> bool:
    """True for a TFRecord file, shard pattern or folder of TFRecord files."""
    if any(ch in path for ch in "*?["):
        return True
    name = os.path.basename(path.rstrip("/")).lower()
    if any(marker in name for marker in TFRECORD_MARKERS) or "-of-" in name:
        return True
    if os.path.isdir(path):
        return any(any(m in f.lower() for m in TFRECORD_MARKERS) for f in os.listdir(path))
    return False


def detect_format(path: str) -> str:
    """The data format of an annotations path: ``coco``, ``voc`` or ``tfrecord``.

    ``*.json`` -> coco; an image-set ``*.txt``, a folder with
    ``Annotations/``, holding ``*.xml`` or with ``annotations/*.xml``
    (images/ + annotations/ side by side) -> voc; ``*.tfrecord*``,
    ``*.record*``, ``*-of-*``, a glob pattern or a folder of those ->
    tfrecord.

    Raises:
        ValueError: none of these (the message names the path).
    """
    lower = path.lower()
    if lower.endswith(".json"):
        return "coco"
    if lower.endswith(".txt"):
        return "voc"
    if os.path.isdir(path):
        if os.path.isdir(os.path.join(path, "Annotations")):
            return "voc"
        if any(f.lower().endswith(".xml") for f in os.listdir(path)):
            return "voc"
        side = os.path.join(path, "annotations")  # LabelImg / Roboflow: images/ + annotations/*.xml
        if os.path.isdir(side) and any(f.lower().endswith(".xml") for f in os.listdir(side)):
            return "voc"
    if is_tfrecord_path(path):
        return "tfrecord"
    if not path:
        raise ValueError("No annotations path given (train_data.annotations / validation_data.annotations).")
    raise ValueError(
        f"Cannot tell the data format of {path!r}: expected a COCO .json, a VOC root / XML folder / "
        "ImageSets .txt, or TFRecord files; set train_data.format / validation_data.format=coco|voc|tfrecord."
    )


def open_dataset(config, split: str = "train", class_names: Optional[Sequence[str]] = None):
    """The dataset of a split with the configured reader.

    Args:
        config: `Config`. Uses the split's input section
            (`tf_centernet.config.input_config`: ``train_data`` or
            ``validation_data``: annotations, images, format, classes) and
            ``data.difficult``, ``data.crowd``.
        split: str. ``"train"``, ``"val"`` or ``"validation"``.
        class_names: sequence of str or None. Class list of the trained model
            (VOC / TFRecord class names are then mapped to it), used when
            the split's ``classes`` is empty. Kept as the dataset's
            ``requested_class_names``, which `tf_centernet.evaluation`
            compares with the categories of a COCO file.

    Returns:
        `CocoDataset`, `VocDataset` or `TfRecordDataset`.

    Raises:
        FileNotFoundError, ValueError: from the reader, naming the file.
    """
    data = config.data
    source = input_config(config, split)
    annotations, images = source.annotations, source.images
    fmt = source.format or detect_format(annotations)
    check_choice("train_data.format", fmt)
    classes = source.classes or (list(class_names) if class_names else "")
    # Class names of a trained model (its classes.json) keep a validation
    # split's class indices those of training.
    if fmt == "coco":
        from tf_centernet.data.coco import CocoDataset

        dataset = CocoDataset(annotations, images, crowd=data.crowd)
    elif fmt == "voc":
        from tf_centernet.data.voc import VocDataset

        dataset = VocDataset(annotations, images, classes=classes, difficult=data.difficult)
    else:
        from tf_centernet.data.tfrecord import TfRecordDataset

        dataset = TfRecordDataset(annotations, classes=classes, crowd=data.crowd)
    # COCO files carry their own categories: evaluation compares them with these.
    dataset.requested_class_names = list(class_names) if class_names else None
    return dataset


def tfrecord_files(pattern: str) -> List[str]:
    """The files of a TFRecord path: a file, a glob pattern, a comma list or a folder.

    Raises:
        FileNotFoundError: nothing matches.
    """
    files: List[str] = []
    for part in [p for p in pattern.split(",") if p]:
        if os.path.isdir(part):
            files += sorted(
                os.path.join(part, f) for f in os.listdir(part) if any(m in f.lower() for m in TFRECORD_MARKERS)
            )
        else:
            files += sorted(glob.glob(part))
    if not files:
        raise FileNotFoundError(f"No TFRecord file matches {pattern!r}.")
    return files


def coco_ground_truth(dataset):
    """The pycocotools `COCO` ground truth of a dataset, built in memory.

    A `CocoDataset` gives its own annotation file's object (crowd regions
    included, so numbers equal those of the file). Other readers give one
    image per record (their ``image_id``), one annotation per kept box
    (``bbox = [x1, y1, x2 - x1, y2 - y1]``, ``area = w * h``, ``iscrowd 0``)
    and one ``iscrowd 1`` annotation per ignore region (VOC ``difficult``
    with ``difficult=ignore``, TFRecord ``is_crowd``) of its class.
    """
    from pycocotools.coco import COCO

    if getattr(dataset, "coco", None) is not None:
        return dataset.coco
    ignored = getattr(dataset, "ignored", {})
    images, annotations = [], []
    for record in dataset.records:
        images.append(
            dict(id=int(record.image_id), file_name=os.path.basename(record.file_name),
                 height=int(record.height), width=int(record.width))
        )
        rows = [(b, int(c), 0) for b, c in zip(record.boxes, record.classes)]
        if record.image_id in ignored:
            boxes, classes = ignored[record.image_id]
            rows += [(b, int(c), 1) for b, c in zip(boxes, classes)]
        for box, cls, crowd in rows:
            x1, y1, x2, y2 = (float(v) for v in box)
            annotations.append(
                dict(id=len(annotations) + 1, image_id=int(record.image_id),
                     category_id=int(dataset.category_ids[cls]),
                     bbox=[x1, y1, x2 - x1, y2 - y1], area=(x2 - x1) * (y2 - y1), iscrowd=crowd)
            )
    coco = COCO()
    coco.dataset = dict(
        images=images,
        annotations=annotations,
        categories=[dict(id=int(i), name=str(n)) for i, n in zip(dataset.category_ids, dataset.class_names)],
    )
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco
