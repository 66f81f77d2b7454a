"""The TFRecord detection format: its keys, the record framing, reading and parsing.

Each record is a `tf.train.Example` in the TF Object Detection API / Model
Garden layout (see `tf_centernet.data.tfrecord`). This module knows the
format only: `FEATURES` (the `tf.io.parse_single_example` spec, also used
in the graph by `tf_centernet.data.tfrecord_stream`), `read_records`
(intact records of a file, reading on past corrupt ones), `parse_example`
(one record as NumPy values, or a `RecordError` naming the field) and
`read_image_at` (one record's image from its byte offset).
"""

from __future__ import annotations

import os
import struct
import uuid
from typing import Callable, Iterator, List, Optional, Tuple

import numpy as np
import tensorflow as tf

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
        (record number in the file, byte offset of the record in the file,
        serialized record), in file order.
    """
    source, offset, number, blob, scratch = path, 0, 0, None, None
    try:
        while True:
            try:
                for serialized in tf.data.TFRecordDataset(source).as_numpy_iterator():
                    yield number, offset, serialized
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


def read_image_at(path: str, offset: int) -> bytes:
    """The ``image/encoded`` bytes of the record at byte `offset` of a TFRecord file.

    Reads that record only (its length header, then its data), so a
    dataset can hold the place of each image instead of the image.

    Args:
        path: str. A TFRecord file. offset: int. Byte offset of the record
            (`read_records` gives it).

    Returns:
        bytes, the encoded image.

    Raises:
        RecordError: the record there is cut short, does not parse or holds
            no image (the file changed since it was read); names file and offset.
    """
    where = f"{path} record at byte {offset}"
    with open(path, "rb") as handle:
        handle.seek(offset)
        header = handle.read(_HEADER_BYTES)
        length = _record_length(header, 0)
        data = handle.read(length) if length is not None else b""
    if length is None or len(data) != length:
        raise RecordError(f"{where}: no intact record there (the file changed since it was read)")
    try:
        example = tf.train.Example.FromString(data)
        return bytes(example.features.feature["image/encoded"].bytes_list.value[0])
    except Exception:  # noqa: BLE001 - protobuf decoding errors, missing field
        raise RecordError(f"{where}: holds no image/encoded bytes") from None
