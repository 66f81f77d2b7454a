"""Images of any size -> the network's canvas, and the geometry back (docs/reference.md §7.5).

The one place test-time preprocessing is written. `CenterNetImageConverter`
(a keras-hub `ImageConverter`) builds the releases' input: each image,
resized by the test scale ``s`` to ``(int(h * s), int(w * s))`` pixels, is
pasted centred into a zero canvas of ``size | 127`` pixels per side and the
whole canvas is normalised, ``(pixel / 255 - mean) / std``; it also returns
the `ScaleGeometry` that maps decoded boxes back to original-image pixels.
`CenterNetObjectDetectorPreprocessor` (a keras-hub `ObjectDetectorPreprocessor`)
turns whatever a user hands `model.predict` (a ragged batch, a padded batch
with sizes) into a padded batch plus sizes for the detector.

Two functions do the pixel work, one per shape regime, sharing `normalize`
and `canvas_ratios`:

- `preprocess_images`: dynamic sizes (SavedModel, `model.predict`); a batch
  shares one canvas, ``(max_b int(h_b * s) | 127, max_b int(w_b * s) | 127)``,
  every image centred in it with its own borders (with one image, or images
  of one size, exactly the releases' input);
- `static_preprocess`: one static image size (TFLite, ONNX), the same canvas
  bit for bit with every size a Python integer.

The training pipeline normalises with the same `normalize` (fused with its
photometric augmentation, `tf_centernet.data.photometric`).
"""

from __future__ import annotations

from typing import Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf
from keras_hub.layers import ImageConverter
from keras_hub.models import ObjectDetectorPreprocessor

from tf_centernet.config import DataConfig
from tf_centernet.decode.geometry import ScaleGeometry
from tf_centernet.models.backbone import HourglassBackbone

__all__ = [
    "CenterNetImageConverter",
    "CenterNetObjectDetectorPreprocessor",
    "normalize",
    "pad_images",
    "preprocess_images",
    "static_preprocess",
]

_DATA = DataConfig()


def normalize(pixels: tf.Tensor, mean: Sequence[float], std: Sequence[float]) -> tf.Tensor:
    """``(pixels / 255 - mean) / std`` per channel (RGB; docs/reference.md §6).

    Args:
        pixels: uint8 or float tensor `(..., 3)`, values in [0, 255].
        mean: three floats, RGB, for pixels in [0, 1].
        std: three floats, RGB.

    Returns:
        float32 tensor of the same shape.
    """
    x = tf.cast(pixels, tf.float32)
    return (x / 255.0 - tf.constant(list(mean), tf.float32)) / tf.constant(list(std), tf.float32)


def canvas_ratios(hc, wc):
    """Output-grid cells per canvas pixel, ``((Hc + 1) // 4 / Hc, (Wc + 1) // 4 / Wc)``.

    Computed in double and rounded to float32, as the releases' NumPy arrays.
    `hc`, `wc` are Python ints (static) or int32 scalars (dynamic); returns a
    list of two floats or a float32 tensor `(2,)` accordingly.
    """
    if isinstance(hc, int) and isinstance(wc, int):
        return [float(np.float32(((hc + 1) // 4) / hc)), float(np.float32(((wc + 1) // 4) / wc))]
    h = tf.cast(hc, tf.float64)
    w = tf.cast(wc, tf.float64)
    return tf.cast(tf.stack([tf.floor((h + 1) / 4) / h, tf.floor((w + 1) / 4) / w]), tf.float32)


def _resize(pixels, size, scale):
    """Bilinear (half-pixel centres, no antialias), rounded like OpenCV's uint8 resize; none at scale 1."""
    if float(scale) == 1.0:
        return pixels
    pixels = tf.image.resize(pixels, size, method="bilinear")
    return tf.clip_by_value(tf.round(pixels), 0.0, 255.0)


def preprocess_images(
    images: tf.Tensor,
    image_sizes: tf.Tensor,
    scale: float,
    mean: Sequence[float],
    std: Sequence[float],
) -> Tuple[tf.Tensor, ScaleGeometry]:
    """The network input of one test scale for a padded batch (docs/reference.md §7.5).

    Each image is cropped to its true size, resized to ``(int(h * s),
    int(w * s))``, and pasted into a zero canvas of the common size ``(Hc,
    Wc)`` with its top-left corner at ``(Hc // 2 - hs // 2, Wc // 2 - ws //
    2)`` (the releases' `crop_image` centred at ``(hs // 2, ws // 2)``). The
    whole canvas, padding included, is then normalised, so padding is
    ``-mean / std`` as in the releases.

    Args:
        images: uint8 or float (0-255) tensor `(batch, max_height, max_width,
            3)`. RGB, each image in the top-left corner, padded bottom/right.
        image_sizes: int tensor `(batch, 2)`. True ``(height, width)`` in pixels.
        scale: float. Test scale.
        mean: three floats, RGB, for pixels in [0, 1].
        std: three floats, RGB.

    Returns:
        (canvas, geometry): float32 `(batch, Hc, Wc, 3)` with ``Hc, Wc = 127
        mod 128``, and the batch's `ScaleGeometry`.

    Raises:
        InvalidArgumentError: an image smaller than one pixel at `scale`.
    """
    sizes = tf.cast(image_sizes, tf.int32)
    # int(h * s) in Python double precision.
    scaled = tf.cast(tf.floor(tf.cast(sizes, tf.float64) * float(scale)), tf.int32)
    checks = [
        tf.debugging.assert_greater_equal(
            scaled, 1, message=f"An image is smaller than one pixel at scale {scale}."
        )
    ]
    with tf.control_dependencies(checks):
        hc = tf.bitwise.bitwise_or(tf.reduce_max(scaled[:, 0]), 127)
        wc = tf.bitwise.bitwise_or(tf.reduce_max(scaled[:, 1]), 127)
    tops = hc // 2 - scaled[:, 0] // 2
    lefts = wc // 2 - scaled[:, 1] // 2

    def paste(args):
        image, size, new_size, top, left = args
        crop = _resize(tf.cast(image[: size[0], : size[1], :], tf.float32), new_size, scale)
        return tf.pad(crop, [[top, hc - new_size[0] - top], [left, wc - new_size[1] - left], [0, 0]])

    # One image at a time: every image has its own resize size.
    canvas = tf.map_fn(
        paste, (images, sizes, scaled, tops, lefts),
        fn_output_signature=tf.TensorSpec([None, None, 3], tf.float32),
    )
    batch = tf.shape(sizes)[0]
    geometry = ScaleGeometry(
        scale=float(scale),
        borders=tf.cast(tf.stack([tops, tops + scaled[:, 0], lefts, lefts + scaled[:, 1]], axis=1), tf.float32),
        sizes=tf.cast(scaled, tf.float32),
        ratios=tf.tile(canvas_ratios(hc, wc)[None, :], [batch, 1]),
    )
    return normalize(canvas, mean, std), geometry


def static_preprocess(
    images: tf.Tensor, scale: float, mean: Sequence[float], std: Sequence[float]
) -> Tuple[tf.Tensor, ScaleGeometry]:
    """`preprocess_images` for a batch that fills one static ``(height, width)``.

    The same canvas, bit for bit, with every size a Python integer: the graph
    has static shapes and no bitwise or map ops (TFLite and ONNX friendly).

    Args:
        images: uint8 tensor `(batch, height, width, 3)`, static height and width.
        scale, mean, std: as `preprocess_images`.

    Returns:
        (canvas, geometry) as `preprocess_images`.

    Raises:
        ValueError: the height or width is not static, or the scaled image
            is empty.
    """
    height, width = images.shape[1], images.shape[2]
    if height is None or width is None:
        raise ValueError(f"static_preprocess needs a static image size, got {images.shape}.")
    hs, ws = int(height * float(scale)), int(width * float(scale))
    if hs < 1 or ws < 1:
        raise ValueError(f"A {height}x{width} image is smaller than one pixel at scale {scale}.")
    hc, wc = hs | 127, ws | 127
    top, left = hc // 2 - hs // 2, wc // 2 - ws // 2
    x = _resize(tf.cast(images, tf.float32), (hs, ws), scale)
    x = tf.pad(x, [[0, 0], [top, hc - hs - top], [left, wc - ws - left], [0, 0]])
    batch = tf.shape(images)[0]

    def rows(values):
        # (batch, len(values)) float32 constant rows.
        return tf.tile(tf.constant([values], tf.float32), [batch, 1])

    geometry = ScaleGeometry(
        scale=float(scale),
        borders=rows([top, top + hs, left, left + ws]),
        sizes=rows([hs, ws]),
        ratios=rows(canvas_ratios(hc, wc)),
    )
    return normalize(x, mean, std), geometry


@keras.saving.register_keras_serializable(package="tf_centernet")
class CenterNetImageConverter(ImageConverter):
    """The releases' test-time canvas and normalisation as a keras-hub image converter.

    Args:
        mean: three floats, RGB, for pixels in [0, 1]. Defaults to the
            releases' COCO statistics (`tf_centernet.config.DataConfig`).
        std: three floats, RGB. Defaults likewise.
        image_size: ``(height, width)`` or None. The training input size,
            used as the default size of fixed-size exports (TFLite, ONNX).
            Defaults to ``(511, 511)``.
        **kwargs: `keras.layers.Layer` arguments (``name``, ...).

    Call arguments:
        images: uint8 or float (0-255) `(batch, height, width, 3)`, RGB.
        image_sizes: int `(batch, 2)` or None. True ``(height, width)`` of
            each image (top-left in the padded batch). Defaults to the full
            size.
        scale: float. Test scale. Defaults to `1.0`.
        static: bool. `static_preprocess` (static image size, no sizes).

    Returns:
        (canvas float32 `(batch, Hc, Wc, 3)`, `ScaleGeometry`).
    """

    def __init__(self, mean=None, std=None, image_size=(511, 511), **kwargs):
        for key in ("scale", "offset", "crop_to_aspect_ratio", "pad_to_aspect_ratio",
                    "interpolation", "antialias", "bounding_box_format", "data_format"):
            kwargs.pop(key, None)  # keras-hub's resizing options: not used here
        super().__init__(image_size=None, crop_to_aspect_ratio=False, **kwargs)
        self.mean = [float(v) for v in (mean if mean is not None else _DATA.mean)]
        self.std = [float(v) for v in (std if std is not None else _DATA.std)]
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std need 3 values (RGB), got {self.mean} and {self.std}.")
        self.input_size = tuple(int(v) for v in image_size) if image_size is not None else None

    def normalize(self, pixels):
        """`normalize` with this converter's statistics."""
        return normalize(pixels, self.mean, self.std)

    def call(self, images, image_sizes=None, scale=1.0, static=False):
        if static:
            return static_preprocess(images, scale, self.mean, self.std)
        if image_sizes is None:
            shape = tf.shape(images)
            image_sizes = tf.tile(shape[None, 1:3], [shape[0], 1])
        return preprocess_images(images, image_sizes, scale, self.mean, self.std)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
            "mean": list(self.mean),
            "std": list(self.std),
            "image_size": list(self.input_size) if self.input_size else None,
        }


@keras.saving.register_keras_serializable(package="tf_centernet")
class CenterNetObjectDetectorPreprocessor(ObjectDetectorPreprocessor):
    """What `model.predict` hands the detector: a padded uint8/float batch plus sizes.

    Canvas building depends on the test scale, so it happens inside the
    detector (per scale, with this preprocessor's `image_converter`); here
    the input is only brought into one form.

    Training batches (``y`` given) pass through unchanged: they come from
    `tf_centernet.data.build_train_dataset`, already augmented and normalised
    with the same `normalize`, targets encoded.

    Args:
        image_converter: `CenterNetImageConverter` or None (the default one).
        **kwargs: `keras.layers.Layer` arguments.

    Call arguments:
        x: a batch of RGB images: a `tf.RaggedTensor` `(batch, None, None,
            3)`, a dense tensor `(batch, height, width, 3)` (uint8, or float
            in [0, 255]), or a dict ``{"images": padded batch, "image_sizes":
            int (batch, 2)}``.
        y, sample_weight: passed through.

    Returns:
        ``{"images": (batch, max_height, max_width, 3) of the input dtype,
        "image_sizes": int32 (batch, 2)}`` (and `y`, `sample_weight` when
        given).

    Raises:
        ValueError: not 3 channels, or not rank 4.
    """

    backbone_cls = HourglassBackbone
    image_converter_cls = CenterNetImageConverter

    def __init__(self, image_converter=None, **kwargs):
        super().__init__(image_converter=image_converter or CenterNetImageConverter(), **kwargs)

    def call(self, x, y=None, sample_weight=None):
        if y is not None:
            return keras.utils.pack_x_y_sample_weight(x, y, sample_weight)
        return padded_batch(x)


def pad_images(images):
    """RGB arrays `(h, w, 3)` of different sizes -> one zero-padded batch and their sizes.

    Each image sits in the top-left corner, padded at the bottom and right.

    Args:
        images: non-empty sequence of arrays `(height, width, 3)`, uint8 or float.

    Returns:
        (batch, sizes): `(n, max_height, max_width, 3)` (uint8 when every
        image is, else float32) and int32 `(n, 2)` true ``(height, width)``.
    """
    sizes = np.array([image.shape[:2] for image in images], np.int32)
    dtype = np.uint8 if all(image.dtype == np.uint8 for image in images) else np.float32
    batch = np.zeros((len(images), sizes[:, 0].max(), sizes[:, 1].max(), 3), dtype)
    for i, image in enumerate(images):
        batch[i, : image.shape[0], : image.shape[1]] = image
    return batch, sizes


def padded_batch(x):
    """A ragged batch, a dense batch or a ``{"images", "image_sizes"}`` dict -> the dict.

    See `CenterNetObjectDetectorPreprocessor` (Call arguments, Returns).
    """
    if isinstance(x, dict):
        images, sizes = x["images"], tf.cast(x["image_sizes"], tf.int32)
    elif isinstance(x, tf.RaggedTensor):
        # (batch, None, None, 3): the row lengths give each image's size.
        heights = tf.cast(x.row_lengths(axis=1), tf.int32)
        widths = tf.cast(tf.reduce_max(x.row_lengths(axis=2).to_tensor(), axis=1), tf.int32)
        sizes = tf.stack([heights, widths], axis=1)
        images = x.to_tensor()
    else:
        images = tf.convert_to_tensor(x)
        shape = tf.shape(images)
        sizes = tf.tile(shape[None, 1:3], [shape[0], 1]) if images.shape.rank == 4 else None
    if images.shape.rank != 4 or images.shape[-1] != 3:
        raise ValueError(
            f"images must be a batch (batch, height, width, 3) of RGB images, got shape {images.shape}."
        )
    return {"images": images, "image_sizes": sizes}
