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

Records are read with `tf.data.TFRecordDataset` and parsed with
`tf.io.parse_single_example` (no tf-models-official import). A record that
does not parse, or whose fields are inconsistent, is skipped and counted,
with a message naming the file, the record number and the field. A record
whose bytes are corrupt (checksum mismatch) is skipped and counted too, and
the intact records after it are still read (`read_records`).
`write_tfrecords` writes the same layout from any dataset of this package
(``tf-centernet convert-data``); the original image file bytes are stored
unchanged.
"""

from __future__ import annotations

import logging
import os
import struct
import uuid
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tf_centernet.config import check_choice
from tf_centernet.data.coco import CocoRecord
from tf_centernet.data.records import RecordList, log_skipped, problem_counters, sanitize_box, tfrecord_files

logger = logging.getLogger(__name__)

BOX_KEYS = tuple(f"image/object/bbox/{k}" for k in ("xmin", "ymin", "xmax", "ymax"))
FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "image/format": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "image/height": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    "image/width": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    "image/source_id": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "image/filename": tf.io.FixedLenFeature([], tf.string, default_value=""),
    **{key: tf.io.VarLenFeature(tf.float32) for key in BOX_KEYS},
    "image/object/class/label": tf.io.VarLenFeature(tf.int64),
    "image/object/class/text": tf.io.VarLenFeature(tf.string),
    "image/object/is_crowd": tf.io.VarLenFeature(tf.int64),
}
_KIND = {tf.string: "bytes_list", tf.float32: "float_list", tf.int64: "int64_list"}


class RecordError(ValueError):
    """A malformed record; the message names the file, record and field."""


def _diagnose(serialized: bytes, where: str) -> str:
    """Names the field that made `tf.io.parse_single_example` fail."""
    try:
        example = tf.train.Example.FromString(serialized)
    except Exception:  # noqa: BLE001 - any protobuf decoding error
        return f"{where}: not a tf.train.Example (undecodable protobuf)"
    for key, spec in FEATURES.items():
        if key in example.features.feature:
            kind = example.features.feature[key].WhichOneof("kind")
            expected = _KIND[spec.dtype]
            if kind != expected:
                return f"{where}: field {key!r} is a {kind}, expected a {expected}"
            if isinstance(spec, tf.io.FixedLenFeature):
                values = getattr(example.features.feature[key], kind).value
                if len(values) != 1:
                    return f"{where}: field {key!r} holds {len(values)} values, expected 1"
    return f"{where}: does not parse as a detection example"


# TFRecord framing: uint64 length, uint32 masked CRC-32C of the length,
# the data, uint32 masked CRC-32C of the data (all little-endian).
_HEADER_BYTES = 12
_FRAME_BYTES = 16


def _crc32c_table() -> List[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C = _crc32c_table()


def masked_crc32c(data: bytes) -> int:
    """The masked CRC-32C (Castagnoli) of `data`, as TFRecord headers hold it.

    Pure Python (about 1 MB/s): used on the 8-byte length fields only.
    """
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _record_length(blob: bytes, offset: int) -> Optional[int]:
    """The data length of the record at `offset` when its header checksum holds, else None."""
    if offset + _HEADER_BYTES > len(blob):
        return None
    (crc,) = struct.unpack_from("<I", blob, offset + 8)
    if masked_crc32c(blob[offset : offset + 8]) != crc:
        return None
    return struct.unpack_from("<Q", blob, offset)[0]


def _next_record(blob: bytes, offset: int) -> Tuple[Optional[int], str]:
    """Where reading resumes after the unreadable record at `offset`, and what was wrong.

    A record whose length header holds is skipped whole (its data were
    corrupt); otherwise the bytes are scanned for the next header whose
    checksum holds and whose record fits in the file.
    """
    left = len(blob) - offset
    length = _record_length(blob, offset)
    if length is not None:
        if offset + _FRAME_BYTES + length > len(blob):
            return None, f"truncated at byte {offset}: the record needs {_FRAME_BYTES + length} bytes, {left} remain"
        return offset + _FRAME_BYTES + length, f"corrupt data (checksum mismatch) at byte {offset}; skipped"
    if left < _FRAME_BYTES:
        return None, f"truncated at byte {offset}: {left} stray bytes after the last record"
    for start in range(offset + 1, len(blob) - _FRAME_BYTES + 1):
        length = _record_length(blob, start)
        if length is not None and start + _FRAME_BYTES + length <= len(blob):
            return start, f"corrupt record header at byte {offset}; {start - offset} bytes skipped to the next record"
    return None, f"corrupt record header at byte {offset}; no intact record after it"


def read_records(path: str, on_corrupt: Callable[[int, str], None]) -> Iterator[Tuple[int, bytes]]:
    """The intact records of one (uncompressed) TFRecord file, reading on past corrupt ones.

    Reads with `tf.data.TFRecordDataset` (checksums checked). Where it
    stops on a corrupt or truncated record, the file's bytes are searched
    for the next intact record (`_next_record`) and reading goes on from
    there (a copy of the rest of the file on TensorFlow's ``ram://`` file
    system, removed after).

    Args:
        path: str. A TFRecord file.
        on_corrupt: called as ``on_corrupt(record_number, reason)`` once per
            unreadable stretch (one record, or the bytes up to the next
            intact header); the number continues the file's count.

    Yields:
        (record number in the file, serialized record), in file order.
    """
    source, offset, number, blob, scratch = path, 0, 0, None, None
    try:
        while True:
            try:
                for serialized in tf.data.TFRecordDataset(source).as_numpy_iterator():
                    yield number, serialized
                    number += 1
                    offset += _FRAME_BYTES + len(serialized)
                return
            except tf.errors.DataLossError:
                pass
            if blob is None:
                with open(path, "rb") as handle:
                    blob = handle.read()
            restart, reason = _next_record(blob, offset)
            on_corrupt(number, reason)
            number += 1
            if restart is None:
                return
            if scratch is None:
                scratch = f"ram://tf_centernet_tfrecord/{uuid.uuid4().hex}.tfrecord"
            with tf.io.gfile.GFile(scratch, "wb") as handle:
                handle.write(blob[restart:])
            source, offset = scratch, restart
    finally:
        if scratch is not None and tf.io.gfile.exists(scratch):
            tf.io.gfile.remove(scratch)


def parse_example(serialized: bytes, where: str = "record") -> dict:
    """One serialized `tf.train.Example` as NumPy values.

    Returns:
        dict with ``encoded`` (bytes), ``height``, ``width`` (int, 0 when
        absent), ``source_id``, ``filename`` (str), ``boxes`` float32
        ``(n, 4)`` normalised ``[xmin, ymin, xmax, ymax]``, ``labels`` int64
        ``(n,)``, ``texts`` list of str (may be empty), ``crowd`` bool ``(n,)``.

    Raises:
        RecordError: a field of the wrong type or length, no image, or
            object fields of different lengths (the message names them).
    """
    if not serialized:
        raise RecordError(f"{where}: empty record (0 bytes)")
    try:
        parsed = tf.io.parse_single_example(serialized, FEATURES)
    except (tf.errors.InvalidArgumentError, ValueError):
        raise RecordError(_diagnose(serialized, where)) from None
    dense = {k: v.numpy() for k, v in parsed.items() if not isinstance(v, tf.SparseTensor)}
    sparse = {k: v.values.numpy() for k, v in parsed.items() if isinstance(v, tf.SparseTensor)}
    if not dense["image/encoded"]:
        raise RecordError(f"{where}: field 'image/encoded' is missing or empty")
    coords = [sparse[k] for k in BOX_KEYS]
    labels = sparse["image/object/class/label"]
    lengths = {k: len(v) for k, v in zip(BOX_KEYS, coords)}
    lengths["image/object/class/label"] = len(labels)
    if len(set(lengths.values())) != 1:
        raise RecordError(f"{where}: object fields of different lengths {lengths}")
    crowd = sparse["image/object/is_crowd"]
    if len(crowd) not in (0, len(labels)):
        raise RecordError(f"{where}: field 'image/object/is_crowd' has {len(crowd)} values for {len(labels)} objects")
    texts = [t.decode("utf-8", "replace") for t in sparse["image/object/class/text"]]
    if texts and len(texts) != len(labels):
        raise RecordError(f"{where}: field 'image/object/class/text' has {len(texts)} values for {len(labels)} objects")
    return dict(
        encoded=bytes(dense["image/encoded"]),
        height=int(dense["image/height"]),
        width=int(dense["image/width"]),
        source_id=dense["image/source_id"].decode("utf-8", "replace"),
        filename=os.fsdecode(dense["image/filename"]),  # a file system's name: bytes round-trip
        boxes=np.stack(coords, axis=1).astype(np.float32).reshape(-1, 4),
        labels=labels.astype(np.int64),
        texts=texts,
        crowd=(crowd.astype(bool) if len(crowd) else np.zeros(len(labels), bool)),
        where=where,
    )


class TfRecordDataset(RecordList):
    """TFRecord shards read into records, with the attributes of `CocoDataset`.

    Class indices: with `classes` (a class list file or names), class index
    i is ``classes[i]``, matched by ``class/text`` when the records carry it
    (its label id kept as the category id), else label-map id ``i + 1``;
    without, the sorted
    distinct ``class/label`` ids found, named by ``class/text`` where given.
    Records keep their encoded image in memory (``CocoRecord.encoded``).

    Skipped and counted (one warning, with the first messages of each kind):
    records that do not parse or are corrupt (``bad_record``; the records
    after a corrupt one are still read), objects whose label is not
    in the class list (``unknown_class``), NaN, degenerate and out-of-image
    boxes; boxes clipped to the image and sizes read from the image are
    counted in `repaired`. ``is_crowd`` objects: ``crowd="drop"`` keeps them
    out of training and in the evaluation ground truth as ignore regions;
    ``"keep"`` trains on them.

    Args:
        pattern: str. A file, glob pattern, comma list or folder of shards.
        classes: str or sequence of str. See above.
        crowd: str. ``"drop"`` or ``"keep"``.

    Attributes (besides `CocoDataset`'s): ``files``; ``hints``, list of str:
    likely causes of skips (boxes in pixels instead of normalised), shown
    by the data check. Records carry ``source`` (``FILE record N``).

    Raises:
        FileNotFoundError: no file matches.
        ValueError: no class at all.
    """

    format = "tfrecord"

    def __init__(self, pattern: str, classes="", crowd: str = "drop"):
        from tf_centernet.data.voc import read_class_file

        check_choice("data.crowd", crowd)
        self.files = tfrecord_files(pattern)
        self.annotation_file = pattern
        skipped, repaired, self.problems, problem = problem_counters()

        examples = []
        for path in self.files:

            def corrupt(number, reason, path=path):
                problem("bad_record", f"{path} record {number}: {reason}")

            for number, serialized in read_records(path, corrupt):
                try:
                    examples.append(parse_example(serialized, f"{path} record {number}"))
                except RecordError as error:
                    problem("bad_record", str(error))

        if isinstance(classes, str) and classes:
            names: Optional[List[str]] = read_class_file(classes)
        else:
            names = list(classes) if classes else None
        by_text = False
        if names is not None:
            # Named classes: objects are matched by class/text when the
            # records carry it (their label ids are kept as category ids),
            # else label id i + 1 is class i.
            by_text = bool(examples) and all(e["texts"] or not len(e["labels"]) for e in examples)
            id_of = {}
            for e in examples:
                for label, text in zip(e["labels"], e["texts"]):
                    id_of.setdefault(text, int(label))
            ids = [id_of.get(n, i + 1) for i, n in enumerate(names)] if by_text else list(range(1, len(names) + 1))
        else:
            ids = sorted({int(l) for e in examples for l in e["labels"]})
            text_of = {}
            for e in examples:
                for label, text in zip(e["labels"], e["texts"]):
                    text_of.setdefault(int(label), text)
            names = [text_of.get(i, str(i)) for i in ids]
            logger.info("%s: classes from the records' labels: %s", pattern, dict(zip(ids, names)))
        if not names:
            raise ValueError(f"{pattern}: no object class found (no image/object/class/label).")
        self.class_names, self.category_ids, self.num_classes = names, ids, len(names)
        class_of = {cid: index for index, cid in enumerate(ids)}
        index_of_text = {n: i for i, n in enumerate(names)}

        numeric = [e["source_id"] for e in examples]
        use_ids = all(s.isdigit() for s in numeric) and len(set(numeric)) == len(numeric)
        self.records: List[CocoRecord] = []
        self.ignored: Dict[int, tuple] = {}
        self.hints: List[str] = []
        boxes_seen = boxes_over_one = 0
        for number, e in enumerate(examples):
            image_id = int(e["source_id"]) if use_ids else number + 1
            name = e["filename"] or e["source_id"] or f"record {number}"
            height, width = e["height"], e["width"]
            if not height or not width:
                image = tf.io.decode_image(e["encoded"], channels=3, expand_animations=False)
                height, width = int(image.shape[0]), int(image.shape[1])
                repaired["size_from_image"] += 1
            boxes, labels, ignore = [], [], []
            texts = e["texts"] or [None] * len(e["labels"])
            for index, (box, label, text, crowd_flag) in enumerate(zip(e["boxes"], e["labels"], texts, e["crowd"])):
                where = f"{e['where']} ({name}) object {index}"
                cls = index_of_text.get(text) if by_text else class_of.get(int(label))
                if cls is None:
                    field = f"image/object/class/text {text!r}" if by_text else f"image/object/class/label {int(label)}"
                    problem("unknown_class", f"{where}: {field} not in the classes {dict(zip(ids, names))}")
                    continue
                boxes_seen += 1
                boxes_over_one += bool(np.nanmax(box) > 1.0 + 1e-3) if np.isfinite(box).any() else 0
                pixels = [box[0] * width, box[1] * height, box[2] * width, box[3] * height]
                pixels, reason = sanitize_box(pixels, width, height)
                if reason == "clipped_box":
                    repaired[reason] += 1
                elif reason:
                    problem(reason, f"{where}: image/object/bbox {list(map(float, box))} ({reason})")
                    continue
                if crowd_flag and crowd == "drop":
                    skipped["crowd"] += 1
                    ignore.append((pixels, cls))
                    continue
                boxes.append(pixels)
                labels.append(cls)
            self._append(image_id, name, height, width, boxes, labels, ignore, encoded=e["encoded"], source=e["where"])
        self.skipped, self.repaired = dict(skipped), dict(repaired)
        log_skipped(logger, pattern, self.skipped, self.repaired, self.problems)
        if boxes_over_one and boxes_over_one * 2 >= boxes_seen:
            self.hints.append(
                f"{boxes_over_one} of {boxes_seen} boxes have coordinates above 1: image/object/bbox/* must be "
                "normalised to [0, 1] by the image width and height (these look like pixels)"
            )
            logger.warning("%s: %s.", pattern, self.hints[-1])


def _feature(values, kind):
    if kind == "bytes":
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
    if kind == "float":
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def _crowd_regions(dataset, record):
    """(boxes, class indices) of the record's crowd / ignore regions."""
    if record.image_id in getattr(dataset, "ignored", {}):
        boxes, classes = dataset.ignored[record.image_id]
        return [list(b) for b in boxes], [int(c) for c in classes]
    coco = getattr(dataset, "coco", None)
    if coco is None or getattr(dataset, "crowd", "drop") != "drop":
        return [], []
    class_of = {cid: i for i, cid in enumerate(dataset.category_ids)}
    boxes, classes = [], []
    for ann in coco.imgToAnns.get(record.image_id, []):
        if ann.get("iscrowd") and ann.get("category_id") in class_of:
            x, y, w, h = ann["bbox"]
            if w > 0 and h > 0:
                boxes.append([x, y, x + w, y + h])
                classes.append(class_of[ann["category_id"]])
    return boxes, classes


def make_example(dataset, record: CocoRecord) -> tf.train.Example:
    """The TF OD API `tf.train.Example` of one record (image bytes unchanged)."""
    if record.encoded is not None:
        encoded = record.encoded
    else:
        with open(record.file_name, "rb") as handle:
            encoded = handle.read()
    height, width = record.height, record.width
    if not height or not width:
        shape = tf.io.extract_jpeg_shape(encoded) if tf.io.is_jpeg(encoded) else tf.shape(
            tf.io.decode_image(encoded, channels=3, expand_animations=False))
        height, width = int(shape[0]), int(shape[1])
    crowd_boxes, crowd_classes = _crowd_regions(dataset, record)
    boxes = [list(map(float, b)) for b in record.boxes] + [list(map(float, b)) for b in crowd_boxes]
    classes = [int(c) for c in record.classes] + crowd_classes
    is_crowd = [0] * record.num_objects + [1] * len(crowd_boxes)
    fmt = "jpeg" if encoded[:2] == b"\xff\xd8" else "png" if encoded[:4] == b"\x89PNG" else ""
    features = {
        "image/encoded": _feature([encoded], "bytes"),
        "image/format": _feature([fmt.encode()], "bytes"),
        "image/height": _feature([int(height)], "int"),
        "image/width": _feature([int(width)], "int"),
        "image/source_id": _feature([str(record.image_id).encode()], "bytes"),
        # The file system's bytes (a name that is not UTF-8 is kept as it is).
        "image/filename": _feature([os.fsencode(os.path.basename(record.file_name))], "bytes"),
        "image/object/class/label": _feature([int(dataset.category_ids[c]) for c in classes], "int"),
        "image/object/class/text": _feature([dataset.class_names[c].encode() for c in classes], "bytes"),
        "image/object/is_crowd": _feature(is_crowd, "int"),
    }
    for axis, key in enumerate(BOX_KEYS):
        size = width if axis % 2 == 0 else height
        features[key] = _feature([b[axis] / size for b in boxes], "float")
    return tf.train.Example(features=tf.train.Features(feature=features))


def write_tfrecords(dataset, prefix: str, num_shards: int = 1) -> List[str]:
    """Writes a dataset as TFRecord shards ``PREFIX-00000-of-0000N.tfrecord``.

    Records go round-robin to the shards. Label ids are the dataset's
    ``category_ids`` (COCO ids, or ``1..n`` for VOC), with the class names
    as ``class/text``; crowd (COCO, ``crowd=drop``) and ignore regions
    (VOC ``difficult=ignore``) are written with ``is_crowd = 1``.

    Shards are written as ``.partial-NAME`` files and renamed once all are
    complete: a failed run (disk full, read-only folder) removes its partial
    files and leaves earlier shards of the same names as they were.

    Returns:
        list of the written paths.

    Raises:
        ValueError: `num_shards` < 1.
        OSError: the output cannot be written (``errno`` and ``filename``
            set, e.g. ENOSPC, EROFS, EACCES); no partial file is left.
    """
    import errno as errno_lib

    from tf_centernet.guards import errno_of_text

    if num_shards < 1:
        raise ValueError(f"num_shards must be at least 1, got {num_shards}.")
    folder = os.path.dirname(os.path.abspath(prefix))
    paths = [f"{prefix}-{i:05d}-of-{num_shards:05d}.tfrecord" for i in range(num_shards)]
    partials = [os.path.join(os.path.dirname(p), ".partial-" + os.path.basename(p)) for p in paths]
    writers = []
    current = folder
    try:
        os.makedirs(folder, exist_ok=True)
        for partial in partials:
            current = partial
            writers.append(tf.io.TFRecordWriter(partial))
        for number, record in enumerate(dataset.records):
            current = partials[number % num_shards]
            writers[number % num_shards].write(make_example(dataset, record).SerializeToString())
        for partial, writer in zip(partials, writers):
            current = partial
            writer.close()  # flushes: a full disk shows here
        writers = []
        for partial, path in zip(partials, paths):
            current = path
            os.replace(partial, path)
    except (OSError, tf.errors.OpError) as error:
        for writer in writers:
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - already failing; the file is removed below
                pass
        for partial in partials:
            try:
                os.remove(partial)
            except OSError:
                pass  # never created
        number = getattr(error, "errno", None) or errno_of_text(getattr(error, "message", error)) or errno_lib.EIO
        raise OSError(number, os.strerror(number), current) from None
    return paths


def write_class_file(names: Sequence[str], path: str) -> str:
    """Writes a class list file (one name per line), as `read_class_file` reads."""
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("".join(f"{n}\n" for n in names))
    return path
