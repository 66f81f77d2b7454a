"""The reader registry and one dataset interface over the COCO, Pascal VOC and TFRecord readers.

Every reader (`CocoDataset`, `VocDataset`, `TfRecordDataset`) follows the
protocol of `tf_centernet.data.base.Reader`: ``records`` (list of
`Record`: boxes ``[x1, y1, x2, y2]`` in pixels, 0-based class indices),
``class_names``, ``category_ids`` (COCO id of each class index),
``num_classes``, ``skipped`` and ``repaired`` (reason -> count).
`READERS` maps each format name to its reader class; `open_dataset` picks
the reader from the split's ``format`` or from the path (`detect_format`:
each reader's own ``detect``); `coco_ground_truth` builds the pycocotools
ground truth in memory, so every format is scored by the same COCO
evaluation.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from typing import Dict, Optional, Sequence, Type

from tf_centernet.config import CHOICES, check_choice, input_config
from tf_centernet.data.base import Reader, log_skipped, problem_counters, sanitize_box  # noqa: F401 (re-exported)
from tf_centernet.data.coco import CocoDataset
from tf_centernet.data.holdout import holdout_split
from tf_centernet.data.tfrecord import (  # noqa: F401
    TFRECORD_MARKERS,
    TfRecordDataset,
    is_tfrecord_path,
    tfrecord_files,
)
from tf_centernet.data.voc import VocDataset

FORMATS = tuple(f for f in CHOICES["train_data.format"] if f)  # "" is "detect it"
DIFFICULT_MODES = CHOICES["data.difficult"]
RecordList = Reader  # the name of earlier releases

logger = logging.getLogger(__name__)

# Format name -> reader class, in the order `detect_format` asks them.
READERS: Dict[str, Type[Reader]] = {reader.format: reader for reader in (CocoDataset, VocDataset, TfRecordDataset)}


def detect_format(path: str) -> str:
    """The data format of an annotations path: the first reader of `READERS` whose ``detect`` accepts it.

    ``*.json`` -> coco; an image-set ``*.txt``, a folder with
    ``Annotations/``, holding ``*.xml`` or with ``annotations/*.xml``
    (images/ + annotations/ side by side) -> voc; ``*.tfrecord*``,
    ``*.record*``, ``*-of-*``, a glob pattern or a folder of those ->
    tfrecord.

    Returns:
        str, a key of `READERS`.

    Raises:
        ValueError: none of these (the message names the path).
    """
    for name, reader in READERS.items():
        if path and reader.detect(path):
            return name
    if not path:
        raise ValueError("No annotations path given (train_data.annotations / validation_data.annotations).")
    raise ValueError(
        f"Cannot tell the data format of {path!r}: expected a COCO .json, a VOC root / XML folder / "
        "ImageSets .txt, or TFRecord files; set train_data.format / validation_data.format=coco|voc|tfrecord."
    )


def open_dataset(config, split: str = "train", class_names: Optional[Sequence[str]] = None) -> Reader:
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

    With ``data.validation_split`` > 0 (and no ``validation_data``) both
    splits read ``train_data`` and keep their share of its images
    (`tf_centernet.data.holdout.holdout_split`).

    Returns:
        `CocoDataset`, `VocDataset` or `TfRecordDataset` (the `READERS` entry).

    Raises:
        FileNotFoundError, ValueError: from the reader, naming the file.
    """
    source = input_config(config, split)
    fraction = float(config.data.validation_split)
    validation = split in ("val", "validation")
    fmt = source.format or detect_format(source.annotations)
    check_choice("train_data.format", fmt)
    if fraction > 0 and fmt == "tfrecord":
        raise ValueError(
            "data.validation_split needs COCO or VOC training data (TFRecord training data streams from its "
            "files); write the splits as separate TFRecord files (tf-centernet convert-data) instead."
        )
    # Class names of a trained model (its classes.json) keep a validation
    # split's class indices those of training.
    dataset = READERS[fmt].from_config(source, config.data, class_names)
    if fraction > 0:
        total = len(dataset.records)
        train, held = holdout_split(dataset.records, fraction, config.data.split_seed)
        dataset.records = held if validation else train
        logger.info(
            "data.validation_split=%g (seed %d): %d of %d images for %s.", fraction, config.data.split_seed,
            len(dataset.records), total, "validation" if validation else "training",
        )
    # COCO files carry their own categories: evaluation compares them with these.
    dataset.requested_class_names = list(class_names) if class_names else None
    return dataset


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
