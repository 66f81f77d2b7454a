"""The per-image steps of the training pipeline, shared by both input paths.

`tf_centernet.data.pipeline` (image files, records in memory) and
`tf_centernet.data.tfrecord_stream` (TFRecord files streamed) decode an
image with `decode_encoded_image` and turn it with its boxes into
``(image, targets)`` with the function of `train_transform`, so both give
the same values for the same image, boxes and element number.
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

from tf_centernet.data.augment import augment_for_training
from tf_centernet.targets import encode_targets


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

    Raises:
        tf.errors.NotFoundError, InvalidArgumentError: at run time, for a
            missing or undecodable file.
    """
    return decode_encoded_image(tf.io.read_file(path))


def decode_encoded_image(data: tf.Tensor) -> tf.Tensor:
    """Decodes an encoded image (JPEG, PNG, ...) in the graph, as `decode_image` does.

    The `tf.data` counterpart of `tf_centernet.data.images.decode_image_bytes`
    (NumPy/OpenCV, with its checks).

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


def train_transform(config, augment: bool = True, heatmaps: str = "dense") -> Callable:
    """The function ``(element_number, image, boxes, classes) -> (image, targets)``.

    Augmentation (`augment_for_training`, stateless, seeded with
    ``(config.train.seed, element_number)``) then `encode_targets`.

    Args:
        config: `Config`. Uses ``data`` (sizes, augmentation, targets),
            ``model.num_classes``, ``model.uses_centers``, ``train.seed``.
        augment: bool. Random augmentation (else the centred square pad).
        heatmaps: str. ``"dense"`` or ``"sparse"`` targets (`encode_targets`).

    Returns:
        callable of (int64 scalar element number, uint8 ``(H, W, 3)`` image,
        float32 ``(n, 4)`` pixel boxes, int32 ``(n,)`` classes) returning
        (float32 ``(S, S, 3)`` image, dict of `encode_targets`).
    """
    data = config.data
    seed = int(config.train.seed)

    def transform(element_number, image, boxes, classes):
        image, boxes, classes = augment_for_training(
            image, boxes, classes, data, training=augment,
            seed=tf.stack([tf.constant(seed, tf.int64), tf.cast(element_number, tf.int64)]),
        )
        targets = encode_targets(
            boxes,
            classes,
            input_size=int(data.input_size),
            output_size=int(data.output_size),
            num_classes=int(config.model.num_classes),
            max_objects=int(data.max_objects),
            gaussian_iou=float(data.gaussian_iou),
            gaussian_bump=bool(data.gaussian_bump),
            with_centers=bool(config.model.uses_centers),
            radius_variant=data.radius_variant,
            heatmaps=heatmaps,
        )
        return image, targets

    return transform


def parallelism(data):
    """``(num_parallel_calls, map keyword arguments)`` from ``config.data``:
    -1 / None autotuned, 0 sequential, n > 0 n calls; ``deterministic`` kept."""
    parallel = data.num_parallel_calls
    if parallel is None or parallel < 0:
        parallel = tf.data.AUTOTUNE
    else:
        parallel = int(parallel) or None  # 0: sequential
    order = {} if parallel is None else {"deterministic": bool(getattr(data, "deterministic", True))}
    return parallel, order
