"""What every dataset reader of this package shares: `Record`, `Reader`, problem counters.

The bottom of ``tf_centernet.data``'s readers: ``base <- coco / voc /
tfrecord (readers) <- records (registry, `open_dataset`) <- pipeline /
check``. This module imports no reader.

A reader (`tf_centernet.data.coco.CocoDataset`, `...voc.VocDataset`,
`...tfrecord.TfRecordDataset`) keeps its arguments in ``__init__`` and
reads in `Reader.read`; afterwards it gives

* ``records``: list of `Record` (boxes ``[x1, y1, x2, y2]`` in pixels,
  0-based class indices);
* ``class_names`` (class index -> name), ``category_ids`` (class index ->
  COCO category id), ``num_classes``;
* ``skipped`` and ``repaired``: dict reason -> count (`problem_counters`,
  `log_skipped`), ``problems``: the first messages of each reason;
* ``ignored``: dict image id -> (boxes, classes) of ignore regions
  (evaluation's crowd regions);
* ``annotation_file``: the path read, for messages.

and, as a class, ``format`` (its registry name) and ``detect(path)``.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["Record", "CocoRecord", "Reader", "problem_counters", "log_skipped", "sanitize_box"]


@dataclasses.dataclass
class Record:
    """One image and its objects, whatever the data format.

    Attributes:
        image_id: int. Image id (COCO's, or 1, 2, ... in reading order).
        file_name: str. Full path of the image file (TFRecord: the
            ``image/filename`` stored, for messages only).
        height: int. Image height in pixels (0: unknown).
        width: int. Image width in pixels (0: unknown).
        boxes: float32 ``(num_objects, 4)``. ``[x1, y1, x2, y2]`` pixels,
            ``x2 = x + w`` as in the releases.
        classes: int32 ``(num_objects,)``. 0-based class indices.
        encoded: bytes or None. The encoded image, read instead of
            `file_name` when set (`tf_centernet.data.tfrecord.TfRecordRecord`
            reads it from its TFRecord file on access).
        source: str or None. Where a record of a container file came from,
            e.g. ``"data/train-00000-of-00002.tfrecord record 17"``;
            messages name it with `file_name`. None for image files.
    """

    image_id: int
    file_name: str
    height: int
    width: int
    boxes: np.ndarray
    classes: np.ndarray
    encoded: Optional[bytes] = dataclasses.field(default=None, repr=False)
    source: Optional[str] = None

    @property
    def num_objects(self) -> int:
        """Number of kept objects."""
        return int(self.boxes.shape[0])

    @property
    def display_name(self) -> str:
        """The record for messages: ``SOURCE (file_name)`` for records of a
        container file, else the file name, printable even when it is not UTF-8."""
        from tf_centernet.data.paths import display_path

        name = display_path(self.file_name)
        return f"{self.source} ({name})" if self.source else name


CocoRecord = Record  # the name of earlier releases, kept for importers


def sanitize_box(box: Sequence[float], width: Optional[int], height: Optional[int]) -> Tuple[list, Optional[str]]:
    """Checks and repairs one ``[x1, y1, x2, y2]`` pixel box.

    `tf_centernet.data.tfrecord_stream.check_objects` is the in-graph twin
    (same reasons, same order of checks).

    Args:
        box: 4 numbers, pixels.
        width, height: int or None. Image size in pixels; None or 0: not clipped.

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


def problem_counters(per_reason: int = 5) -> Tuple[collections.Counter, collections.Counter, List[str], Callable]:
    """Counters a reader fills while it skips or repairs items.

    Args:
        per_reason: int. Messages kept per reason. Defaults to 5.

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


def log_skipped(logger, source: str, skipped: Dict[str, int], repaired: Dict[str, int], problems: Sequence[str] = ()):
    """One warning: a line with every skip and repair count, then the examples.

    The examples are lines of the same log record, so a log filter or
    handler sees the counts and the items they count together.
    Difficult / crowd objects handled as configured are reported at INFO.

    Args:
        logger: `logging.Logger`.
        source: str. What was read (a path), named first.
        skipped, repaired: dict reason -> count.
        problems: sequence of str. Example messages.
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
        if skipped[key]:
            logger.info("%s: %d %s objects not trained on (as configured).", source, skipped[key], key)


class Reader:
    """Base of the dataset readers: the reader protocol and a sequence of `Record`.

    A subclass sets ``format`` (its registry name), implements
    ``detect(path)`` (a staticmethod: True when `path` looks like its
    format), ``from_config(source, data, class_names)`` (a classmethod: the
    reader of a split's `InputConfig` and `DataConfig`) and ``read()``,
    which fills the attributes listed in the module docstring. ``__init__``
    checks and keeps the arguments, then calls ``read()``.
    """

    format = ""
    annotation_file = ""
    num_classes = 0

    def __init__(self):
        self.records: List[Record] = []
        self.ignored: Dict[int, tuple] = {}
        self.class_names: List[str] = []
        self.category_ids: List[int] = []
        self.skipped: Dict[str, int] = {}
        self.repaired: Dict[str, int] = {}
        self.problems: List[str] = []
        self.hints: List[str] = []

    @staticmethod
    def detect(path: str) -> bool:
        """True when `path` looks like this reader's format (no file is parsed)."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, source, data, class_names: Optional[Sequence[str]] = None) -> "Reader":
        """The reader of one split.

        Args:
            source: `tf_centernet.config.InputConfig` (annotations, images,
                classes).
            data: `tf_centernet.config.DataConfig` (difficult, crowd).
            class_names: sequence of str or None. Class list of a trained
                model, used when ``source.classes`` is empty.
        """
        raise NotImplementedError

    def read(self) -> None:
        """Reads the data into the attributes of the module docstring."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Record:
        return self.records[index]

    @property
    def num_objects(self) -> int:
        """Total number of kept objects."""
        return sum(record.num_objects for record in self.records)

    def _set_classes(self, names: Sequence[str], category_ids: Sequence[int]) -> None:
        """Sets ``class_names``, ``category_ids`` and ``num_classes``."""
        self.class_names, self.category_ids = list(names), [int(i) for i in category_ids]
        self.num_classes = len(self.class_names)

    def _append(self, record: Record, ignore=()) -> None:
        """Adds one record, and its ``ignore`` list of (box, class index)
        as ignore regions in ``self.ignored``."""
        if ignore:
            self.ignored[record.image_id] = (
                np.asarray([b for b, _ in ignore], np.float32).reshape(-1, 4),
                np.asarray([c for _, c in ignore], np.int32),
            )
        self.records.append(record)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.annotation_file!r}, images={len(self)}, "
            f"objects={self.num_objects}, classes={self.num_classes})"
        )


def make_record(image_id, file_name, height, width, boxes, labels, cls=Record, **extra) -> Record:
    """A `Record` (or subclass `cls`) from Python lists of pixel boxes and class indices."""
    return cls(
        image_id=int(image_id), file_name=file_name, height=int(height or 0), width=int(width or 0),
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
        classes=np.asarray(labels, np.int32).reshape(-1),
        **extra,
    )


def given_classes(source, class_names: Optional[Sequence[str]] = None):
    """The classes a split names: ``source.classes`` (a class list file), else
    `class_names` (a trained model's), else ``""`` (found in the data)."""
    return source.classes or (list(class_names) if class_names else "")
