"""Data checks: the report of ``tf-centernet check-data`` and train's summary.

`check_dataset` looks at a dataset once (optionally decoding every image)
and returns a `DataReport`: counts per class, empty images, what the reader
skipped or repaired, duplicate image ids / files, the box size histogram in
output-grid cells (stride 4, at test scale 1), images with more objects than
``data.max_objects`` (the objects past it get no embedding / offset slot),
and the *errors*: findings that would make training wrong (no image, no
object left, a class count other than ``model.num_classes``, unreadable
images, objects past ``max_objects``). Records are named by file, or for
TFRecord inputs by TFRecord file and record number.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Dict, List, Optional

import numpy as np

from tf_centernet.data.paths import printable

# What training does with each kind of finding (shown in the report).
ACTIONS = {
    "missing_image": "image skipped with its objects",
    "missing_xml": "listed image skipped",
    "bad_xml": "image skipped",
    "bad_record": "record skipped",
    "unknown_class": "object skipped",
    "unknown_category": "object skipped",
    "degenerate_box": "object skipped",
    "outside_image": "object skipped",
    "nan_box": "object skipped",
    "malformed_box": "object skipped",
    "crowd": "not trained on (ignore region in evaluation)",
    "difficult": "as data.difficult says",
    "clipped_box": "box clipped to the image",
    "size_from_image": "image size read from the image",
    "unreadable_image": "training skips it (counted, file named): fix or remove the file",
    "over_max_objects": "objects past data.max_objects get no embedding/offset slot",
    "duplicate_id": "evaluation merges the images",
    "unsafe_file_name": "image skipped: its file_name leads outside the image folder (../ or absolute)",
}
SIZE_BINS = (0, 2, 4, 8, 16, 32, 64, np.inf)
# Reasons that drop an object (not the image); see ACTIONS.
_OBJECT_SKIPS = ("unknown_class", "unknown_category", "degenerate_box", "outside_image", "nan_box",
                 "malformed_box", "crowd", "difficult")


def _zero_objects_reason(records, counts, hints) -> str:
    """The error for a dataset whose images are all without objects."""
    dropped = {k: counts[k] for k in _OBJECT_SKIPS if counts.get(k)}
    text = f"no object left in {len(records)} images"
    if dropped:
        text += f": all {sum(dropped.values())} were skipped (" + ", ".join(
            f"{v} {k}" for k, v in sorted(dropped.items())) + ")"
    else:
        text += " (the annotations hold none)"
    return "; ".join([text, *hints])


@dataclasses.dataclass
class DataReport:
    """What `check_dataset` found.

    Attributes:
        name: str. The dataset (its annotations path).
        images: int. Readable records. objects: int.
        per_class: dict class name -> objects.
        empty_images: int. Records without objects.
        counts: dict finding -> count (reader skips and repairs plus
            ``unreadable_image``, ``over_max_objects``, ``duplicate_id``).
        size_histogram: dict bin label -> boxes, by ``sqrt(w * h) / 4``.
        errors: list of str. Findings that make training wrong.
        examples: list of str. First messages of the reader's skips.
    """

    name: str
    images: int
    objects: int
    per_class: Dict[str, int]
    empty_images: int
    counts: Dict[str, int]
    size_histogram: Dict[str, int]
    errors: List[str]
    examples: List[str]

    def summary(self) -> str:
        """One line: sizes, then every skip / repair count (never silent)."""
        handled = ", ".join(f"{v} {k}" for k, v in sorted(self.counts.items()) if v) or "nothing skipped or repaired"
        return printable(f"{self.name}: {self.images} images, {self.objects} objects; {handled}.")

    def zero_objects_reason(self) -> str:
        """Why no object is left: the skip counts and the reader's hints (for errors)."""
        return next((e for e in self.errors if e.startswith("no object left")), "no object left")

    def text(self) -> str:
        """The multi-line report of ``tf-centernet check-data``."""
        lines = [f"== {self.name}", f"images: {self.images} ({self.empty_images} without objects)",
                 f"objects: {self.objects}"]
        lines += [f"  {name}: {count}" for name, count in self.per_class.items()]
        lines.append("box size, sqrt(w*h) in output-grid cells (stride 4, scale 1):")
        lines += [f"  {label:>8}: {count}" for label, count in self.size_histogram.items()]
        if self.counts:
            lines.append("skipped / repaired (what training does):")
            lines += [f"  {k}: {v} -> {ACTIONS.get(k, 'skipped')}" for k, v in sorted(self.counts.items())]
        lines += [f"  e.g. {m}" for m in self.examples]
        lines += [f"ERROR: {e}" for e in self.errors]
        return printable("\n".join(lines))


def _decodable(record) -> Optional[str]:
    """None when the record's image decodes, else the reason naming it.

    Files are read as bytes by Python and decoded from memory, so a file
    name that is not UTF-8 (kept by Python as surrogate escapes) reaches the
    file system unchanged: OpenCV's own file functions cannot take one.
    """
    import cv2

    from tf_centernet.data.images import ImageError, check_image_bytes, check_image_file

    name = record.display_name
    if record.encoded is not None:
        try:  # the check training runs on encoded (TFRecord) images
            check_image_bytes(record.encoded, name)
        except ImageError as error:
            return str(error)
        data = record.encoded
    else:
        try:  # the check training runs (truncated JPEGs, size limit, signature)
            check_image_file(record.file_name)
        except ImageError as error:
            return str(error)
        try:
            with open(record.file_name, "rb") as handle:
                data = handle.read()
        except OSError as error:
            return f"{name}: cannot read the file ({error.strerror})"
    flags = cv2.IMREAD_REDUCED_COLOR_8 | cv2.IMREAD_IGNORE_ORIENTATION
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    return None if image is not None else f"{name}: cannot decode the image"


def check_dataset(dataset, config, decode_images: bool = True) -> DataReport:
    """Checks a dataset against a configuration.

    Args:
        dataset: a dataset of `tf_centernet.data.records`.
        config: `Config`. Uses ``model.num_classes`` and ``data.max_objects``.
        decode_images: bool. Decode every image (slow on large sets).

    Returns:
        `DataReport`.
    """
    counts = collections.Counter(getattr(dataset, "skipped", {}))
    counts.update(getattr(dataset, "repaired", {}))
    errors, examples = [], list(getattr(dataset, "problems", []))
    name = getattr(dataset, "annotation_file", repr(dataset))
    per_class = collections.Counter()
    sizes = []
    max_objects = int(config.data.max_objects)
    for record in dataset.records:
        per_class.update(int(c) for c in record.classes)
        if record.num_objects:
            w = record.boxes[:, 2] - record.boxes[:, 0]
            h = record.boxes[:, 3] - record.boxes[:, 1]
            sizes.append(np.sqrt(np.maximum(w * h, 0)) / 4.0)
        if record.num_objects > max_objects:
            counts["over_max_objects"] += 1
            if len(examples) < 20:
                examples.append(f"over_max_objects: {record.display_name} has {record.num_objects} objects")
        if decode_images:
            message = _decodable(record)
            if message:
                counts["unreadable_image"] += 1
                examples.append(f"unreadable_image: {message}")
    ids = collections.Counter(r.image_id for r in dataset.records)
    files = collections.Counter(r.file_name for r in dataset.records if r.source is None)  # image files only
    duplicates = sum(c - 1 for c in ids.values() if c > 1) + sum(c - 1 for c in files.values() if c > 1)
    if duplicates:
        counts["duplicate_id"] = duplicates
        errors.append(f"{duplicates} duplicate image ids or files")
    sizes = np.concatenate(sizes) if sizes else np.zeros(0)
    histogram = {}
    for low, high in zip(SIZE_BINS[:-1], SIZE_BINS[1:]):
        label = f"{low}-{high:g}" if np.isfinite(high) else f">={low}"
        histogram[label] = int(((sizes >= low) & (sizes < high)).sum())
    if not dataset.records:
        errors.append("no usable image")
    elif not per_class:
        errors.append(_zero_objects_reason(dataset.records, counts, getattr(dataset, "hints", ())))
    if dataset.num_classes != config.model.num_classes:
        errors.append(
            f"{dataset.num_classes} classes in the data but model.num_classes is {config.model.num_classes}"
        )
    if counts.get("unreadable_image"):
        errors.append(f"{counts['unreadable_image']} images cannot be decoded")
    if counts.get("over_max_objects"):
        errors.append(f"{counts['over_max_objects']} images have more than data.max_objects={max_objects} objects")
    return DataReport(
        name=name,
        images=len(dataset.records),
        objects=int(sum(per_class.values())),
        per_class={n: per_class.get(i, 0) for i, n in enumerate(dataset.class_names)},
        empty_images=sum(1 for r in dataset.records if not r.num_objects),
        counts=dict(counts),
        size_histogram=histogram,
        errors=errors,
        examples=examples,
    )
