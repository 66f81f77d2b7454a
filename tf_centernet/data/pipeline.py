"""The `tf.data` training input pipeline (docs/reference.md §4 and §6).

``indices -> shuffle -> repeat -> (read, decode, augment, encode) in
parallel -> batch -> prefetch``. The per-image annotations live in constant
tensors (a flat box table plus row splits), so shuffling moves integers,
not images, and the whole chain runs in the `tf.data` graph.
"""

from __future__ import annotations

import logging
import os
from typing import Optional

import numpy as np
import tensorflow as tf

from tf_centernet.data.augment import augment_for_training
from tf_centernet.data.base import Reader
from tf_centernet.data.images import usable_records
from tf_centernet.targets import encode_targets

logger = logging.getLogger(__name__)


def decode_image(path: tf.Tensor) -> tf.Tensor:
    """Reads and decodes an image file inside the graph.

    JPEGs are decoded with ``dct_method="INTEGER_ACCURATE"``, the same IDCT
    as OpenCV/libjpeg's default (TF's default is the faster, slightly
    different one); other formats with `tf.io.decode_image`. Grayscale and
    RGBA inputs come back as RGB.

    Args:
        path: scalar string tensor.

    Returns:
        uint8 ``(height, width, 3)`` RGB.
    """
    return decode_encoded_image(tf.io.read_file(path))


def decode_encoded_image(data: tf.Tensor) -> tf.Tensor:
    """Decodes an encoded image (JPEG, PNG, ...) in the graph, as `decode_image` does.

    The `tf.data` counterpart of `tf_centernet.data.images.decode_image_bytes`
    (NumPy/OpenCV, with its checks), for records held in memory.

    Args:
        data: scalar string tensor, the file's bytes.

    Returns:
        uint8 ``(height, width, 3)`` RGB.
    """
    image = tf.cond(
        tf.io.is_jpeg(data),
        lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(data, channels=3, expand_animations=False),
    )
    return tf.ensure_shape(image, [None, None, 3])


def build_train_dataset(
    dataset: Reader,
    config,
    batch_size: Optional[int] = None,
    shuffle: bool = True,
    repeat: bool = True,
    augment: bool = True,
    start_element: int = 0,
    input_context: Optional[tf.distribute.InputContext] = None,
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
            Records with ``encoded`` bytes are decoded from memory.
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
    input_size = int(data.input_size)
    output_size = int(data.output_size)
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

    def augment_and_encode(element_number, index, image):
        start, end = splits[index], splits[index + 1]
        image, boxes, classes = augment_for_training(
            image,
            all_boxes[start:end],
            all_classes[start:end],
            data,
            training=augment,
            seed=tf.stack([tf.constant(seed, tf.int64), element_number]),
        )
        targets = encode_targets(
            boxes,
            classes,
            input_size=input_size,
            output_size=output_size,
            num_classes=num_classes,
            max_objects=int(data.max_objects),
            gaussian_iou=float(data.gaussian_iou),
            gaussian_bump=bool(data.gaussian_bump),
            with_centers=bool(config.model.uses_centers),
            radius_variant=data.radius_variant,
        )
        return image, targets

    parallel = data.num_parallel_calls
    if parallel is None or parallel < 0:
        parallel = tf.data.AUTOTUNE
    else:
        parallel = int(parallel) or None  # 0: sequential
    deterministic = bool(getattr(data, "deterministic", True))
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
    order = {} if parallel is None else {"deterministic": deterministic}
    result = result.map(load, num_parallel_calls=parallel, **order)
    # Backstop for a file that changes after the check: drop it, logged.
    result = result.ignore_errors(log_warning=True)
    result = result.batch(batch_size, drop_remainder=True)
    return result.prefetch(tf.data.AUTOTUNE)
