"""Training input streamed from TFRecord files: memory does not grow with the data set.

``passes -> (files, shuffled per pass; this worker's share) -> interleaved
TFRecordDataset -> parse + check in the graph -> shuffle buffer ->
(decode, augment, encode) in parallel -> batch -> prefetch``.

Nothing of the data set is held in memory but the bounded buffers of
`tf.data` (`SHUFFLE_BUFFER` records, the interleave's readers, the
prefetched batches) and, from the reader's one pass over the annotations
(`tf_centernet.data.tfrecord.TfRecordDataset`), the keys of the records it
found malformed (`bad_keys`). A pass over the files is an epoch of data.

Checks, in the graph and counted per pass (`StreamReport`, one log line at
the end of each pass): the records the reader could not parse
(``bad_record``), class mapping (``unknown_class``), the box checks of
`tf_centernet.data.base.sanitize_box` (`check_objects`: ``nan_box``,
``degenerate_box``, ``outside_image``, repaired ``clipped_box``),
``is_crowd`` objects with ``data.crowd="drop"`` (``crowd``), sizes read
from the image (``size_from_image``) and images that fail the cheap checks
of `tf_centernet.data.images.check_image_file` (``unreadable_image``:
unknown signature, JPEG without end-of-image marker in its last 4 KiB); an
image that passes those and still cannot be decoded is dropped by
``ignore_errors`` (logged by `tf.data`). The counts of a pass equal the
reader's ``skipped`` / ``repaired`` for the same files (tested), which
``tf-centernet check-data`` reports.

Files with corrupt stretches (found by the reader) cannot be read on past
the damage by `tf.data.TFRecordDataset`; their intact records are streamed
through Python (`tf.data.Dataset.from_generator`), a warning names them.

Multi-worker input (`tf.distribute.InputContext`): with at least as many
files as input pipelines each pipeline reads its own files
(`shard_files`: file i goes to pipeline ``i % num_input_pipelines``, the
``AutoShardPolicy.FILE`` split); otherwise every pipeline reads all files
in the same order and keeps every n-th record (``DATA`` sharding, logged).
"""

from __future__ import annotations

import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tf_centernet.data.tfrecord_format import BOX_KEYS, FEATURES, read_records
from tf_centernet.data.transforms import (
    decode_encoded_image,
    parallelism,
    train_transform,
)

logger = logging.getLogger(__name__)

# Counted per pass, in this order (index in the counts vector).
SKIPS = ("bad_record", "unknown_class", "nan_box", "degenerate_box", "outside_image", "crowd", "unreadable_image")
REPAIRS = ("clipped_box", "size_from_image")
COUNTERS = ("records",) + SKIPS + REPAIRS
SHUFFLE_BUFFER = 256  # records (encoded images): bounded, whatever the data set size
CYCLE_LENGTH = 8  # files read at once by the interleave
_KEY = 1 << 32  # (file index, record number) -> one int64 key
_TAIL = 4096


class StreamReport:
    """The counters of a TFRecord stream, one entry per finished pass.

    Attributes:
        name: str. The TFRecord path (for the log line).
        passes: list of dict counter -> int (`COUNTERS`), one per pass
            over this pipeline's files, in order.
    """

    def __init__(self, name: str):
        self.name = name
        self.passes: List[Dict[str, int]] = []

    def end_pass(self, counts: np.ndarray) -> None:
        """Records and logs the counts of a finished pass (called from the graph)."""
        counts = {k: int(v) for k, v in zip(COUNTERS, np.asarray(counts))}
        self.passes.append(counts)
        problems = {k: counts[k] for k in SKIPS + REPAIRS if counts[k] and k != "crowd"}
        (logger.warning if problems else logger.info)(
            "%s: pass %d over the TFRecord stream read %d records; skipped %s; repaired %s.",
            self.name, len(self.passes), counts["records"],
            ", ".join(f"{counts[k]} {k}" for k in SKIPS if counts[k]) or "nothing",
            ", ".join(f"{counts[k]} {k}" for k in REPAIRS if counts[k]) or "nothing",
        )


def shard_files(num_files: int, input_context: Optional[tf.distribute.InputContext]) -> Tuple[List[int], Optional[Tuple[int, int]]]:
    """This input pipeline's share of the files.

    Args:
        num_files: int. Number of TFRecord files.
        input_context: `tf.distribute.InputContext` or None.

    Returns:
        (file indices read, data shard): with one pipeline, all files and
        None; with ``n = num_input_pipelines`` and at least n files, the
        files ``i`` with ``i % n == input_pipeline_id`` and None; with
        fewer files than pipelines, all files and ``(n, input_pipeline_id)``
        (every pipeline keeps every n-th record).
    """
    pipelines = int(input_context.num_input_pipelines) if input_context is not None else 1
    if pipelines <= 1:
        return list(range(num_files)), None
    own = int(input_context.input_pipeline_id)
    if num_files >= pipelines:
        return [i for i in range(num_files) if i % pipelines == own], None
    logger.info(
        "%d TFRecord files for %d input pipelines: sharding by record (each pipeline reads every file "
        "and keeps every %d-th record); give at least %d files to shard by file.",
        num_files, pipelines, pipelines, pipelines,
    )
    return list(range(num_files)), (pipelines, own)


def _class_index(dataset, labels, texts):
    """int32 class index of each object, -1 when not in the dataset's classes."""
    if dataset.by_text:
        table, keys = tf.constant(list(dataset.class_names)), texts
    else:
        table, keys = tf.constant(np.asarray(dataset.category_ids, np.int64)), labels
    match = tf.equal(keys[:, None], table[None, :])  # (objects, classes)
    return tf.where(tf.reduce_any(match, axis=1), tf.cast(tf.argmax(tf.cast(match, tf.int32), axis=1), tf.int32), -1)


def check_objects(boxes, known, crowd, width, height, drop_crowd: bool):
    """The in-graph twin of `tf_centernet.data.base.sanitize_box` for all objects of an image.

    Args:
        boxes: float32 ``(n, 4)`` normalised ``[xmin, ymin, xmax, ymax]``.
        known: bool ``(n,)``. Class found (others are counted unknown and
            not checked, as the reader does).
        crowd: bool ``(n,)``. ``is_crowd``.
        width, height: float32 scalars, pixels (> 0).
        drop_crowd: bool. ``data.crowd == "drop"``.

    Returns:
        (pixel boxes float32 ``(n, 4)``, clipped; keep bool ``(n,)``; dict
        reason -> int64 count for ``nan_box``, ``degenerate_box``,
        ``outside_image``, ``crowd``, ``clipped_box``).
    """
    scale = tf.stack([width, height, width, height])
    pixels = boxes * scale  # (n, 4)
    finite = tf.reduce_all(tf.math.is_finite(pixels), axis=1)
    x1, y1, x2, y2 = tf.unstack(pixels, axis=1)
    degenerate = finite & ((x2 <= x1) | (y2 <= y1))
    clipped = tf.minimum(tf.maximum(pixels, 0.0), scale)
    cx1, cy1, cx2, cy2 = tf.unstack(clipped, axis=1)
    outside = finite & ~degenerate & ((cx2 <= cx1) | (cy2 <= cy1))
    valid = known & finite & ~degenerate & ~outside
    dropped = valid & crowd if drop_crowd else tf.zeros_like(valid)

    def count(mask):
        return tf.reduce_sum(tf.cast(mask, tf.int64))

    counts = dict(
        nan_box=count(known & ~finite), degenerate_box=count(known & degenerate),
        outside_image=count(known & outside), crowd=count(dropped),
        clipped_box=count(valid & tf.reduce_any(tf.not_equal(clipped, pixels), axis=1)),
    )
    return clipped, valid & ~dropped, counts


def image_is_readable(encoded):
    """bool scalar: `encoded` has a JPEG, PNG, GIF, BMP or WebP signature and
    a JPEG has an end-of-image marker (FF D9) in its last 4 KiB."""
    head = tf.strings.substr(encoded, 0, 12)
    signatures = [b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM"]
    known = tf.reduce_any([tf.equal(tf.strings.substr(head, 0, len(s)), s) for s in signatures])
    known |= tf.equal(tf.strings.substr(head, 0, 4), b"RIFF") & tf.equal(tf.strings.substr(head, 8, 4), b"WEBP")
    jpeg = tf.equal(tf.strings.substr(head, 0, 3), b"\xff\xd8\xff")
    length = tf.strings.length(encoded)
    tail = tf.io.decode_raw(tf.strings.substr(encoded, tf.maximum(length - _TAIL, 0), _TAIL), tf.uint8)
    eoi = tf.reduce_any((tail[:-1] == 0xFF) & (tail[1:] == 0xD9))
    return known | (jpeg & eoi)


def _one_hot(name, count=1):
    return tf.one_hot(COUNTERS.index(name), len(COUNTERS), dtype=tf.int64) * tf.cast(count, tf.int64)


def _empty(counts):
    return dict(ok=tf.constant(False), counts=counts, encoded=tf.constant(b""),
                boxes=tf.zeros([0, 4], tf.float32), classes=tf.zeros([0], tf.int32))


def _not_end(element):
    return dict(element, end=tf.constant(False))


def _is_ok(ok, element):
    return ok


def _element(ok, element):
    return element


def make_checker(dataset, drop_crowd: bool):
    """The in-graph ``(file index, record number, serialized) -> element`` of the stream.

    The element is a dict: ``ok`` (bool, to be trained on), ``counts``
    (int64 ``(len(COUNTERS),)``), ``encoded`` (string), ``boxes`` float32
    ``(n, 4)`` pixels, ``classes`` int32 ``(n,)``.
    """
    bad = tf.constant([f * _KEY + n for f, n in dataset.bad_keys] or [-1], tf.int64)

    def check(serialized):
        p = tf.io.parse_single_example(serialized, FEATURES)
        encoded = p["image/encoded"]
        readable = image_is_readable(encoded)

        def usable():
            missing = (p["image/height"] <= 0) | (p["image/width"] <= 0)
            size = tf.cond(
                missing,
                lambda: tf.cast(tf.shape(tf.io.decode_image(encoded, channels=3, expand_animations=False))[:2], tf.int64),
                lambda: tf.stack([p["image/height"], p["image/width"]]),
            )
            labels = p["image/object/class/label"].values
            texts = p["image/object/class/text"].values
            crowd = tf.cast(p["image/object/is_crowd"].values, tf.bool)
            crowd = tf.cond(tf.size(crowd) > 0, lambda: crowd, lambda: tf.zeros_like(labels, tf.bool))
            classes = _class_index(dataset, labels, texts)
            boxes = tf.stack([p[k].values for k in BOX_KEYS], axis=1)
            height, width = tf.cast(size[0], tf.float32), tf.cast(size[1], tf.float32)
            pixels, keep, counts = check_objects(boxes, classes >= 0, crowd, width, height, drop_crowd)
            total = _one_hot("records") + _one_hot("unknown_class", tf.reduce_sum(tf.cast(classes < 0, tf.int64)))
            total += _one_hot("size_from_image", tf.cast(missing, tf.int64))
            for name, value in counts.items():
                total += _one_hot(name, value)
            return dict(ok=tf.constant(True), counts=total, encoded=encoded,
                        boxes=tf.boolean_mask(pixels, keep), classes=tf.boolean_mask(classes, keep))

        return tf.cond(readable, usable, lambda: _empty(_one_hot("records") + _one_hot("unreadable_image")))

    def checker(file_index, number, serialized):
        is_bad = tf.reduce_any(tf.equal(bad, file_index * _KEY + number))
        return tf.cond(is_bad, lambda: _empty(_one_hot("records") + _one_hot("bad_record")), lambda: check(serialized))

    return checker


def _file_records(dataset, file_ids: Sequence[int]):
    """``file index -> Dataset of (file index, number, serialized)`` for intact files,
    and the list of such datasets for the files with corrupt stretches."""
    files = tf.constant([os.fsencode(f) for f in dataset.files])  # bytes: any file-system name

    def read(file_index):
        records = tf.data.TFRecordDataset(tf.gather(files, file_index)).enumerate()
        return records.map(lambda number, serialized: (file_index, number, serialized))

    def generator(file_index):
        def records():
            for number, _, serialized in read_records(dataset.files[file_index], lambda *_: None):
                yield file_index, number, serialized
        spec = (tf.TensorSpec([], tf.int64),) * 2 + (tf.TensorSpec([], tf.string),)
        return tf.data.Dataset.from_generator(records, output_signature=spec)

    corrupt = [i for i in file_ids if i in set(dataset.corrupt_files)]
    if corrupt:
        logger.warning("TFRecord files with corrupt stretches are streamed through Python (slower): %s",
                       ", ".join(dataset.files[i] for i in corrupt))
    return read, [generator(i) for i in corrupt]


def pass_reader(dataset, input_context=None, shuffle: bool = True, seed: int = 0):
    """The function ``pass number -> Dataset of (file index, record number, serialized)``.

    One pass reads this pipeline's files once (`shard_files`), `CYCLE_LENGTH`
    at a time, interleaved; with `shuffle` the file order is a permutation
    seeded with ``(seed, pass number)``.

    Args:
        dataset: `tf_centernet.data.tfrecord.TfRecordDataset`.
        input_context: `tf.distribute.InputContext` or None.
        shuffle: bool. seed: int.

    Returns:
        callable of an int64 scalar tensor returning a `tf.data.Dataset` of
        (int64, int64, string) scalars.
    """
    file_ids, data_shard = shard_files(len(dataset.files), input_context)
    read, corrupt = _file_records(dataset, file_ids)
    intact = tf.constant([i for i in file_ids if i not in set(dataset.corrupt_files)], tf.int64)

    def one_pass(pass_number):
        ids = intact
        if shuffle:
            ids = tf.random.experimental.stateless_shuffle(ids, seed=tf.stack([tf.constant(seed, tf.int64), pass_number]))
        records = tf.data.Dataset.from_tensor_slices(ids).interleave(
            read, cycle_length=max(1, min(CYCLE_LENGTH, len(file_ids))), num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        if corrupt:
            records = tf.data.Dataset.sample_from_datasets([records] + corrupt, seed=seed, stop_on_empty_dataset=False)
        if data_shard:
            records = records.shard(*data_shard)
        return records

    return one_pass


def stream_records(dataset, input_context=None, shuffle: bool = True, seed: int = 0, passes: int = 1) -> tf.data.Dataset:
    """``(file index, record number, serialized)`` of this pipeline's records, pass after pass.

    Args:
        dataset: `tf_centernet.data.tfrecord.TfRecordDataset`.
        input_context: `tf.distribute.InputContext` or None (`shard_files`).
        shuffle: bool. Shuffle the file order of each pass. seed: int.
        passes: int. Number of passes. Defaults to 1.

    Returns:
        `tf.data.Dataset` of (int64 file index into ``dataset.files``,
        int64 record number in that file, string serialized record).
    """
    return tf.data.Dataset.range(passes).flat_map(pass_reader(dataset, input_context, shuffle, seed))


def stream_train_dataset(dataset, config, batch_size: int, shuffle: bool = True, repeat: bool = True,
                         augment: bool = True, start_element: int = 0, input_context=None,
                         heatmaps: str = "dense") -> tf.data.Dataset:
    """Batches of (images, targets) streamed from a `TfRecordDataset`'s files.

    The arguments and the result are those of
    `tf_centernet.data.pipeline.build_train_dataset` (which calls this for
    TFRecord data); `dataset` must be a `TfRecordDataset`. The counters of
    each pass go to ``dataset.stream_report`` (`StreamReport`) and the log.
    """
    data = config.data
    seed = int(config.train.seed)
    if getattr(data, "cache_images", False):
        logger.info("data.cache_images is not used for TFRecord data: the images are streamed from the files.")
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    report = dataset.stream_report = StreamReport(dataset.annotation_file)
    checker = make_checker(dataset, drop_crowd=dataset.crowd == "drop")
    parallel, order = parallelism(data)
    width = len(COUNTERS)
    one_pass = pass_reader(dataset, input_context, shuffle, seed + start_element)

    def checked_pass(pass_number):
        elements = one_pass(pass_number).map(checker, num_parallel_calls=parallel, **order)
        end = dict(_empty(tf.zeros([width], tf.int64)), end=True)
        elements = elements.map(_not_end).concatenate(tf.data.Dataset.from_tensors(end))

        def accumulate(total, element):
            total = total + element["counts"]
            done = tf.cond(
                element["end"],
                lambda: tf.py_function(lambda c: report.end_pass(c.numpy()) or 0, [total], tf.int64),
                lambda: tf.constant(0, tf.int64),
            )
            with tf.control_dependencies([done]):
                return total, (tf.identity(element["ok"]), element)
        return elements.scan(tf.zeros([width], tf.int64), accumulate)

    passes = tf.data.Dataset.range(0, np.iinfo(np.int64).max if repeat else 1)
    items = passes.flat_map(checked_pass).filter(_is_ok).map(_element)
    if shuffle:
        items = items.shuffle(SHUFFLE_BUFFER, seed=seed + start_element)
    transform = train_transform(config, augment, heatmaps)

    def load(element_number, element):
        image = decode_encoded_image(element["encoded"])
        return transform(element_number, image, element["boxes"], element["classes"])

    result = items.enumerate(start=int(start_element)).map(load, num_parallel_calls=parallel, **order)
    # Backstop for an image that passes the checks yet does not decode: dropped, logged by tf.data.
    result = result.ignore_errors(log_warning=True)
    return result.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
