"""The `tf.data` training input pipeline (docs/reference.md §4 and §6).

Image files (COCO, VOC): ``indices -> shuffle -> repeat -> (read, decode,
augment, encode) in parallel -> batch -> prefetch``. The per-image
annotations live in constant tensors (a flat box table plus row splits),
so shuffling moves integers, not images, and the whole chain runs in the
`tf.data` graph.

TFRecord data (`tf_centernet.data.tfrecord.TfRecordDataset`) are streamed
from the files instead (`tf_centernet.data.tfrecord_stream`): memory does
not grow with the data set. Both paths decode with the same function and
augment and encode with `tf_centernet.data.transforms.train_transform`.
"""

from __future__ import annotations

import logging
import os
from typing import Optional

import numpy as np
import tensorflow as tf

from tf_centernet.data.base import Reader
from tf_centernet.data.images import usable_records
from tf_centernet.data.transforms import (  # noqa: F401 (decode_* re-exported)
    decode_encoded_image,
    decode_image,
    parallelism,
    train_transform,
)

logger = logging.getLogger(__name__)


def build_train_dataset(
    dataset: Reader,
    config,
    batch_size: Optional[int] = None,
    shuffle: bool = True,
    repeat: bool = True,
    augment: bool = True,
    start_element: int = 0,
    input_context: Optional[tf.distribute.InputContext] = None,
    heatmaps: str = "dense",
) -> tf.data.Dataset:
    """Batches of (images, targets) for training.

    Shuffling is a full permutation of the image indices each epoch (as the
    releases' per-epoch `np.random.permutation`), seeded with
    ``config.train.seed``; no shuffle buffer needs tuning since only integers
    are shuffled. Augmentation uses stateless random ops seeded
    with ``(config.train.seed, element number)``, so a run's inputs are
    reproducible whatever the parallelism.

    `tf.data` options from ``config.data``: ``num_parallel_calls`` (parallel
    map of read, decode, augment and encode; -1 autotuned, 0 sequential),
    ``deterministic`` (keep the order; False lets elements overtake, each
    still augmented by its own element number) and ``cache_images`` (decode
    each image once and keep it in memory: same batches, for small sets).

    Args:
        dataset: a dataset of `tf_centernet.data.records` (`CocoDataset`,
            `VocDataset`, `TfRecordDataset`). Must hold at least one record.
            A `TfRecordDataset` is streamed from its files
            (`tf_centernet.data.tfrecord_stream.stream_train_dataset`: file
            shards per worker, a bounded shuffle buffer, checks counted per
            pass); other records with ``encoded`` bytes are decoded from memory.
        config: `tf_centernet.config.Config`. Uses ``config.data`` (sizes,
            augmentation, targets), ``config.model.num_classes`` and
            ``config.model.uses_centers``, ``config.train.batch_size`` and
            ``config.train.seed``.
        batch_size: int or None. Defaults to ``config.train.batch_size``.
        shuffle: bool. Shuffle image order each epoch. Defaults to True.
        repeat: bool. Repeat forever. Defaults to True.
        augment: bool. Training augmentation (docs/reference.md §6); when False, the image is
            padded to a centred square and resized, without flip or colour.
            Defaults to True.
        start_element: int. Number of the first element, for the random
            seeds: a resumed run passes the number of images already seen so
            that it does not replay the first run's augmentations (the shuffle
            seed also moves with it). Defaults to 0.
        input_context: `tf.distribute.InputContext` or None. Per-replica
            batch size and this input pipeline's share: TFRecord files per
            pipeline (records when there are fewer files than pipelines),
            else every element chunk of one global batch. Defaults to None.
        heatmaps: str. ``"dense"`` (default): targets with the three
            ``H x W x C`` heatmaps. ``"sparse"``: the keypoints instead (a
            few KiB per image; `tf_centernet.targets.encode_targets`), which
            the loss draws on the device (`tf_centernet.gaussians.draw_heatmaps`,
            same values); what training uses.

    Returns:
        `tf.data.Dataset` of ``(images, targets)``: images float32
        ``(batch, S, S, 3)`` normalised, ``S = config.data.input_size``;
        targets the dict of `encode_targets` with a leading batch axis
        (``num_objects`` is int32 ``(batch,)``). Batches are complete
        (``drop_remainder=True``).

    Raises:
        ValueError: empty dataset, bad batch size, or a dataset whose class
            count differs from ``config.model.num_classes``.
    """
    data = config.data
    batch_size = int(batch_size or config.train.batch_size)
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    if len(dataset) == 0:
        raise ValueError(f"{dataset!r} has no images.")
    num_classes = int(config.model.num_classes)
    if dataset.num_classes != num_classes:
        raise ValueError(
            f"The dataset has {dataset.num_classes} classes but "
            f"model.num_classes is {num_classes}."
        )
    if getattr(dataset, "format", "") == "tfrecord" and hasattr(dataset, "files"):
        from tf_centernet.data.tfrecord_stream import stream_train_dataset

        return stream_train_dataset(
            dataset, config, batch_size, shuffle, repeat, augment, start_element, input_context, heatmaps
        )
    seed = int(config.train.seed)
    start_element = int(start_element)

    # Undecodable images are counted, logged skips (tf_centernet.data.images).
    records = usable_records(dataset, logger, max_objects=int(config.data.max_objects))
    # TFRecord inputs carry their encoded images; file-based ones a path.
    in_memory = any(r.encoded is not None for r in records)
    if in_memory:
        sources = tf.constant([r.encoded if r.encoded is not None else b"" for r in records])
    else:
        # Bytes, as the file system names them: a str path holding bytes
        # that are not UTF-8 (surrogate escapes) cannot become a tf.string.
        sources = tf.constant([os.fsencode(r.file_name) for r in records])
    counts = np.array([r.num_objects for r in records], np.int64)
    splits = tf.constant(np.concatenate([[0], np.cumsum(counts)]), tf.int64)
    all_boxes = tf.constant(
        np.concatenate([r.boxes for r in records] + [np.zeros((0, 4), np.float32)])
    )
    all_classes = tf.constant(
        np.concatenate([r.classes for r in records] + [np.zeros((0,), np.int32)])
    )

    def read(index):
        source = tf.gather(sources, index)
        return decode_encoded_image(source) if in_memory else decode_image(source)

    transform = train_transform(config, augment, heatmaps)

    def augment_and_encode(element_number, index, image):
        start, end = splits[index], splits[index + 1]
        return transform(element_number, image, all_boxes[start:end], all_classes[start:end])

    parallel, order = parallelism(data)
    indices = tf.data.Dataset.range(len(records))
    if getattr(data, "cache_images", False):
        # (index, decoded image), decoded once; the shuffle below permutes
        # these pairs exactly as it would the bare indices (same seed, same
        # length), so batches equal the uncached pipeline's.
        items = indices.map(
            lambda index: (index, read(index)),
            num_parallel_calls=parallel,
        ).cache()
    else:
        items = indices
    if shuffle:
        items = items.shuffle(
            len(records), seed=seed + start_element, reshuffle_each_iteration=True
        )
    if repeat:
        items = items.repeat()
    if getattr(data, "cache_images", False):

        def load(element_number, item):
            return augment_and_encode(element_number, *item)

    else:

        def load(element_number, index):
            return augment_and_encode(element_number, index, read(index))

    result = items.enumerate(start=start_element)
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
        pipelines = int(input_context.num_input_pipelines)
        if pipelines > 1:
            chunk = batch_size * (input_context.num_replicas_in_sync // pipelines)
            own = input_context.input_pipeline_id
            result = result.filter(lambda n, i: ((n - start_element) // chunk) % pipelines == own)
    result = result.map(load, num_parallel_calls=parallel, **order)
    # Backstop for a file that changes after the check: drop it, logged.
    result = result.ignore_errors(log_warning=True)
    result = result.batch(batch_size, drop_remainder=True)
    return result.prefetch(tf.data.AUTOTUNE)
