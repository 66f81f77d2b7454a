"""TFRecord detection data in the TF Object Detection API / Model Garden layout.

Each record is a `tf.train.Example` with the keys

* ``image/encoded`` (bytes), ``image/format`` (bytes, e.g. ``jpeg``),
  ``image/height``, ``image/width`` (int64, pixels),
  ``image/source_id`` and ``image/filename`` (bytes);
* ``image/object/bbox/{xmin,ymin,xmax,ymax}`` (float, normalised to [0, 1]
  by the image width / height);
* ``image/object/class/label`` (int64, the label-map id, 1-based by the TF
  OD API convention), ``image/object/class/text`` (bytes, optional),
  ``image/object/is_crowd`` (int64, optional).

`TfRecordDataset` reads the annotations of every record once (boxes,
classes, the record's byte offset; never the images, which stay in the
files: `TfRecordRecord.encoded` reads one on access), so memory does not
grow with the images. Training streams the files
(`tf_centernet.data.tfrecord_stream`); evaluation and ``check-data`` use the
records. A record that does not parse, or whose fields are inconsistent,
is skipped and counted, with a message naming the file, the record number
and the field. A record whose bytes are corrupt (checksum mismatch) is
skipped and counted too, and the intact records after it are still read
(`tf_centernet.data.tfrecord_format.read_records`). `write_tfrecords`
writes the same layout from any dataset of this package.
"""

from __future__ import annotations

import glob
import logging
import os
from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf

from tf_centernet.config import check_choice
from tf_centernet.data.base import (
    Reader,
    Record,
    given_classes,
    log_skipped,
    make_record,
    problem_counters,
    sanitize_box,
)
from tf_centernet.data.classes import class_list, write_class_file  # noqa: F401 (write_class_file re-exported)
from tf_centernet.data.tfrecord_format import (  # noqa: F401 (re-exported)
    BOX_KEYS,
    FEATURES,
    RecordError,
    masked_crc32c,
    parse_example,
    read_image_at,
    read_records,
)
from tf_centernet.data.tfrecord_write import make_example, write_tfrecords  # noqa: F401 (re-exported)

logger = logging.getLogger(__name__)

TFRECORD_MARKERS = (".tfrecord", ".record", ".tfrec")


def is_tfrecord_path(path: str) -> bool:
    """True for a TFRecord file, shard pattern or folder of TFRecord files (nothing is read)."""
    if any(ch in path for ch in "*?["):
        return True
    name = os.path.basename(path.rstrip("/")).lower()
    if any(marker in name for marker in TFRECORD_MARKERS) or "-of-" in name:
        return True
    if os.path.isdir(path):
        return any(any(m in f.lower() for m in TFRECORD_MARKERS) for f in os.listdir(path))
    return False


def tfrecord_files(pattern: str) -> List[str]:
    """The files of a TFRecord path: a file, a glob pattern, a comma list or a folder.

    Returns:
        list of str, sorted within each part of the comma list.

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


class TfRecordRecord(Record):
    """A `Record` of a TFRecord file that holds the place of its image, not the image.

    ``encoded`` reads the image from ``path`` at byte ``offset`` on each
    access (`read_image_at`); ``file_index`` and ``number`` (the record's
    number in its file) are the keys `tf_centernet.data.tfrecord_stream`
    matches its stream against.
    """

    def __init__(self, *, path: str, offset: int, file_index: int, number: int, **fields):
        super().__init__(**fields)
        self.path, self.offset, self.file_index, self.number = path, int(offset), int(file_index), int(number)

    @property
    def encoded(self) -> bytes:  # noqa: D401 - a property of the dataclass field's name
        """bytes. The encoded image, read from the file (raises `RecordError` if it changed)."""
        return read_image_at(self.path, self.offset)

    @encoded.setter
    def encoded(self, value) -> None:
        if value is not None:
            raise AttributeError("TfRecordRecord.encoded is read from its file; it cannot be set.")


class TfRecordDataset(Reader):
    """TFRecord shards read into records (boxes and image places), with the attributes of `CocoDataset`.

    Class indices: with `classes` (a class list file or names), class index
    i is ``classes[i]``, matched by ``class/text`` when the records carry it
    (its label id kept as the category id), else label-map id ``i + 1``;
    without, the sorted distinct ``class/label`` ids found, named by
    ``class/text`` where given.

    Skipped and counted (one warning, with the first messages of each kind):
    records that do not parse or are corrupt (``bad_record``; the records
    after a corrupt one are still read), objects whose label is not
    in the class list (``unknown_class``), NaN, degenerate and out-of-image
    boxes; boxes clipped to the image and sizes read from the image are
    counted in `repaired`. ``is_crowd`` objects: ``crowd="drop"`` keeps them
    out of training and in the evaluation ground truth as ignore regions;
    ``"keep"`` trains on them. The training stream applies the same checks
    in the graph (`tf_centernet.data.tfrecord_stream.check_objects`).

    Args:
        pattern: str. A file, glob pattern, comma list or folder of shards.
        classes: str or sequence of str. See above.
        crowd: str. ``"drop"`` or ``"keep"``.

    Attributes (besides `CocoDataset`'s): ``files``; ``records`` are
    `TfRecordRecord` (``source`` ``FILE record N``); ``bad_keys``: list of
    (file index, record number) of the records skipped whole, and
    ``corrupt_files``: indices of files with corrupt stretches (both used
    by the stream); ``by_text``: bool, classes matched by ``class/text``;
    ``hints``: list of str, likely causes of skips (boxes in pixels
    instead of normalised), shown by the data check.

    Raises:
        FileNotFoundError: no file matches.
        ValueError: no class at all, or an unknown `crowd` mode.
    """

    format = "tfrecord"

    def __init__(self, pattern: str, classes="", crowd: str = "drop"):
        super().__init__()
        check_choice("data.crowd", crowd)
        self.files = tfrecord_files(pattern)
        self.annotation_file = pattern
        self.classes, self.crowd = classes, crowd
        self.read()

    detect = staticmethod(is_tfrecord_path)  # Reader.detect: True when the path looks like this format

    @classmethod
    def from_config(cls, source, data, class_names=None) -> "TfRecordDataset":
        """The reader of a split (`Reader.from_config`): ``source.classes``, else `class_names`."""
        return cls(source.annotations, classes=given_classes(source, class_names), crowd=data.crowd)

    def read(self) -> None:
        """Reads every record's annotations once, sets the classes, then the records."""
        self._skipped, self._repaired, self.problems, self._problem = problem_counters()
        self.bad_keys: List[tuple] = []
        self.corrupt_files: List[int] = []
        examples = self._scan()
        self._resolve_classes(examples)
        numeric = [e["source_id"] for e in examples]
        use_ids = all(s.isdigit() for s in numeric) and len(set(numeric)) == len(numeric)
        self._boxes_seen = self._boxes_over_one = 0
        for number, example in enumerate(examples):
            self._add_example(int(example["source_id"]) if use_ids else number + 1, number, example)
        self.skipped, self.repaired = dict(self._skipped), dict(self._repaired)
        log_skipped(logger, self.annotation_file, self.skipped, self.repaired, self.problems)
        if self._boxes_over_one and self._boxes_over_one * 2 >= self._boxes_seen:
            self.hints.append(
                f"{self._boxes_over_one} of {self._boxes_seen} boxes have coordinates above 1: image/object/bbox/* "
                "must be normalised to [0, 1] by the image width and height (these look like pixels)"
            )
            logger.warning("%s: %s.", self.annotation_file, self.hints[-1])

    def _scan(self) -> List[dict]:
        """`parse_example` of every intact record, without its image (``path``,
        ``offset``, ``file_index``, ``number`` added); bad ones counted."""
        examples = []
        for file_index, path in enumerate(self.files):

            def corrupt(number, reason, path=path, file_index=file_index):
                self._problem("bad_record", f"{path} record {number}: {reason}")
                if file_index not in self.corrupt_files:
                    self.corrupt_files.append(file_index)

            for number, offset, serialized in read_records(path, corrupt):
                try:
                    example = parse_example(serialized, f"{path} record {number}")
                except RecordError as error:
                    self._problem("bad_record", str(error))
                    self.bad_keys.append((file_index, number))
                    continue
                if not example["height"] or not example["width"]:
                    image = tf.io.decode_image(example["encoded"], channels=3, expand_animations=False)
                    example["height"], example["width"] = int(image.shape[0]), int(image.shape[1])
                    self._repaired["size_from_image"] += 1
                del example["encoded"]  # the image stays in the file
                examples.append(dict(example, path=path, offset=offset, file_index=file_index, number=number))
        return examples

    def _resolve_classes(self, examples: List[dict]) -> None:
        """Sets the classes (see the class docstring) and the label / text -> index maps."""
        names: Optional[List[str]] = class_list(self.classes) or None
        self.by_text = False
        if names is not None:
            # Named classes: objects are matched by class/text when the
            # records carry it (their label ids are kept as category ids),
            # else label id i + 1 is class i.
            self.by_text = bool(examples) and all(e["texts"] or not len(e["labels"]) for e in examples)
            id_of: Dict[str, int] = {}
            for e in examples:
                for label, text in zip(e["labels"], e["texts"]):
                    id_of.setdefault(text, int(label))
            ids = [id_of.get(n, i + 1) for i, n in enumerate(names)] if self.by_text else list(range(1, len(names) + 1))
        else:
            ids = sorted({int(label) for e in examples for label in e["labels"]})
            text_of: Dict[int, str] = {}
            for e in examples:
                for label, text in zip(e["labels"], e["texts"]):
                    text_of.setdefault(int(label), text)
            names = [text_of.get(i, str(i)) for i in ids]
            logger.info("%s: classes from the records' labels: %s", self.annotation_file, dict(zip(ids, names)))
        if not names:
            raise ValueError(f"{self.annotation_file}: no object class found (no image/object/class/label).")
        self._set_classes(names, ids)
        self._class_of_label = {cid: index for index, cid in enumerate(ids)}
        self._class_of_text = {n: i for i, n in enumerate(names)}

    def _add_example(self, image_id: int, number: int, e: dict) -> None:
        """Adds the record of one parsed example, its objects checked (counted)."""
        name = e["filename"] or e["source_id"] or f"record {number}"
        height, width = e["height"], e["width"]
        boxes, labels, ignore = [], [], []
        texts = e["texts"] or [None] * len(e["labels"])
        for index, (box, label, text, crowd_flag) in enumerate(zip(e["boxes"], e["labels"], texts, e["crowd"])):
            kept = self._check_object(f"{e['where']} ({name}) object {index}", box, label, text, width, height)
            if kept is None:
                continue
            if crowd_flag and self.crowd == "drop":
                self._skipped["crowd"] += 1
                ignore.append(kept)
                continue
            boxes.append(kept[0])
            labels.append(kept[1])
        record = make_record(
            image_id, name, height, width, boxes, labels, cls=TfRecordRecord, source=e["where"],
            path=e["path"], offset=e["offset"], file_index=e["file_index"], number=e["number"],
        )
        self._append(record, ignore)

    def _check_object(self, where: str, box, label, text, width: int, height: int):
        """(pixel box, class index) of one object, clipped (counted); None for a counted skip."""
        cls = self._class_of_text.get(text) if self.by_text else self._class_of_label.get(int(label))
        if cls is None:
            field = f"image/object/class/text {text!r}" if self.by_text else f"image/object/class/label {int(label)}"
            known = dict(zip(self.category_ids, self.class_names))
            self._problem("unknown_class", f"{where}: {field} not in the classes {known}")
            return None
        self._boxes_seen += 1
        self._boxes_over_one += bool(np.nanmax(box) > 1.0 + 1e-3) if np.isfinite(box).any() else 0
        pixels = [box[0] * width, box[1] * height, box[2] * width, box[3] * height]
        pixels, reason = sanitize_box(pixels, width, height)
        if reason == "clipped_box":
            self._repaired[reason] += 1
        elif reason:
            self._problem(reason, f"{where}: image/object/bbox {list(map(float, box))} ({reason})")
            return None
        return pixels, cls
