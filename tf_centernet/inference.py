"""Detections from any network callable: `Predictor` (docs/reference.md §7.5).

A detector built by this project does all of this itself: ``model.predict``
on RGB images of any sizes, ``model.detect`` in a graph. `Predictor` is what
`predict` cannot be: the same test-time loop (the model's image converter
for the canvas, `Decoder.detect` for scales, flip test and decoding) around
any callable with the detector's output contract: a network loaded from a
SavedModel's heads, a test oracle, a model of another framework.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from tf_centernet.checkpoints import CheckpointError, load_checkpoint
from tf_centernet.config import Config, load_config
from tf_centernet.data.classes import class_labels
from tf_centernet.decode import Decoder
from tf_centernet.model_dir import ModelDirectory
from tf_centernet.models import KeypointObjectDetector, build_model
from tf_centernet.models.detection import unpad_detections
from tf_centernet.models.preprocessor import CenterNetImageConverter, pad_images, preprocess_images

__all__ = ["Predictor", "load_detector", "load_trained_model", "preprocess_images", "pad_batch"]

logger = logging.getLogger("tf_centernet")


def load_detector(path: str, overrides: Sequence[str] = ()):
    """The detector of a model directory or a preset folder, ready for `predict`.

    Args:
        path: str. A model directory (``config.yaml`` and checkpoints, as
            `tf-centernet train` writes; `tf-centernet convert`'s too) or a
            keras-hub preset folder (``save_to_preset``).
        overrides: sequence of ``"section.key=value"`` applied to a model
            directory's configuration (e.g. ``decode.flip_test=false``).

    Returns:
        A built `tf_centernet.models.KeypointObjectDetector` with its class
        names and category ids.

    Raises:
        FileNotFoundError: neither a model directory nor a preset.
    """
    config_file = ModelDirectory(path).config_yaml
    if os.path.isfile(config_file):
        config = load_config(config_file, [*overrides, f"train.model_dir={os.path.abspath(path)}"])
        return load_trained_model(config, path)
    if os.path.isfile(os.path.join(path, "config.json")):
        if overrides:
            raise ValueError("overrides apply to a model directory's config.yaml; a preset has none.")
        return KeypointObjectDetector.from_preset(path)
    raise FileNotFoundError(f"{path} is neither a model directory (config.yaml) nor a preset (config.json).")


def load_trained_model(config, checkpoint):
    """A built detector with weights from a checkpoint or a preset, for inference.

    Args:
        config: `Config`.
        checkpoint: str. A model directory (its newest usable checkpoint:
            an unusable newer one is skipped with a logged warning, see
            `tf_centernet.checkpoints.load_checkpoint`; without checkpoints,
            the preset weights ``model.weights.h5`` + ``task.weights.h5``
            that `tf-centernet convert` and ``save_to_preset`` write) or a
            ``.weights.h5`` file.

    Returns:
        A `KeypointObjectDetector` built for ``config.data.input_size``, its
        ``category_ids`` and ``class_names`` set (`class_labels`).

    Raises:
        FileNotFoundError: no checkpoint there.
        CheckpointError (a ValueError): the named file, or every checkpoint
            of the directory, is corrupt, truncated or does not fit the
            model.
    """
    model = build_model(config.model, config.loss, config.decode, config.data)
    size = config.data.input_size
    model.build((None, size, size, 3))
    is_dir = os.path.isdir(checkpoint)
    path = None
    if is_dir or (os.path.isfile(checkpoint) and checkpoint.endswith(".weights.h5")):
        path = load_checkpoint(model, checkpoint)
    if not path and is_dir and os.path.isfile(os.path.join(checkpoint, PRESET_WEIGHTS)):
        path = load_preset_weights(model, checkpoint)
    if not path:
        raise FileNotFoundError(
            f"No checkpoint found at {checkpoint!r} (expected a model directory "
            f"with {ModelDirectory.CHECKPOINTS}/ckpt-STEP.weights.h5 or preset weights, or a .weights.h5 file)."
        )
    model.category_ids, model.class_names = class_labels(config, checkpoint if is_dir else None)
    logger.info("Loaded weights from %s", path)
    return model


# keras-hub's preset weight files (`save_to_preset`): backbone, then the rest.
PRESET_WEIGHTS = "model.weights.h5"
PRESET_TASK_WEIGHTS = "task.weights.h5"


def load_preset_weights(model, folder):
    """Loads a preset folder's weights into a built detector; returns the backbone file's path.

    Raises:
        CheckpointError: the files do not fit the model.
    """
    backbone = os.path.join(folder, PRESET_WEIGHTS)
    try:
        model.backbone.load_weights(backbone)
        model.load_task_weights(os.path.join(folder, PRESET_TASK_WEIGHTS))
    except Exception as error:  # h5py/Keras raise OSError, ValueError, KeyError, ...
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"Cannot load the preset weights of {folder}: {first}") from None
    return backbone




def pad_batch(images: Sequence[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """Stacks uint8 RGB images of different sizes, zero-padded bottom/right.

    Args:
        images: sequence of uint8 arrays `(height, width, 3)`.

    Returns:
        (batch, sizes): uint8 `(n, max_height, max_width, 3)` and int32
        `(n, 2)` true ``(height, width)``.

    Raises:
        TypeError: an image is not a uint8 numpy array.
        ValueError: an image is not `(height, width, 3)` or is empty.
    """
    if len(images) == 0:
        raise ValueError("No images given.")
    for i, image in enumerate(images):
        if not isinstance(image, np.ndarray):
            raise TypeError(f"Image {i} is a {type(image).__name__}, expected a numpy array.")
        if image.dtype != np.uint8:
            raise TypeError(
                f"Image {i} has dtype {image.dtype}; expected uint8 RGB (0-255)."
            )
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(
                f"Image {i} has shape {image.shape}; expected (height, width, 3) RGB."
            )
        if image.shape[0] < 1 or image.shape[1] < 1:
            raise ValueError(f"Image {i} is empty: shape {image.shape}.")
    return pad_images(images)


class Predictor:
    """Runs a CornerNet/CenterNet model on images and decodes its detections.

    The model is only called (``model(images, training=False)``), never
    modified. Its output contract: a dict of float tensors on the output grid
    (see `tf_centernet.decode.decode_detections`); a list of such dicts (one
    per stack) decodes its last entry.

    Args:
        model: callable. The detector.
        config: `Config`. Uses ``decode`` (thresholds, scales, flip) and
            ``data.mean``/``data.std`` (RGB); ``model.architecture`` and
            ``model.central_region`` choose the central-region filter.
        use_centers: bool or None. Override of the central-region filter.
            Defaults to CenterNet with ``central_region`` on.
        scales: sequence of floats or None. Override of
            ``config.decode.test_scales``.
        flip_test: bool or None. Override of ``config.decode.flip_test``.

    Attributes:
        decoder: the `tf_centernet.decode.Decoder` of ``config.decode``.
        predict: the `tf.function` ``(images uint8 (None, None, None, 3),
            image_sizes int32 (None, 2)) -> dict`` (see `__call__`); its
            concrete function is the serving signature.

    Raises:
        ValueError: centers requested but ``decode.center_scale`` (1) is not a
            test scale.

    Example:

    >>> import numpy as np
    >>> import tensorflow as tf
    >>> from tf_centernet.config import Config
    >>> def blank_model(x, training=False):
    ...     b = tf.shape(x)[0]; h = (tf.shape(x)[1] + 1) // 4; w = (tf.shape(x)[2] + 1) // 4
    ...     z = lambda c: tf.zeros([b, h, w, c]) - 10.0
    ...     return {"tl_heatmap": z(80), "br_heatmap": z(80), "tl_embedding": z(1),
    ...             "br_embedding": z(1), "tl_offset": z(2), "br_offset": z(2)}
    >>> config = Config()
    >>> config.model.architecture = "cornernet"
    >>> predictor = Predictor(blank_model, config)
    >>> result = predictor.predict_images([np.zeros((100, 150, 3), np.uint8)])
    >>> result[0]["boxes"].shape
    (0, 4)
    """

    def __init__(
        self,
        model,
        config: Config,
        use_centers: Optional[bool] = None,
        scales: Optional[Sequence[float]] = None,
        flip_test: Optional[bool] = None,
    ):
        self.model = model
        self.config = config
        self.decode_config = config.decode
        self.scales = tuple(float(s) for s in (scales if scales is not None else config.decode.test_scales))
        if not self.scales:
            raise ValueError("At least one test scale is needed.")
        self.flip_test = config.decode.flip_test if flip_test is None else bool(flip_test)
        if use_centers is None:
            use_centers = config.model.uses_centers and config.model.central_region
        self.use_centers = bool(use_centers)
        decode_config = dataclasses.replace(config.decode, test_scales=list(self.scales), flip_test=self.flip_test)
        self.decoder = Decoder(decode_config, use_centers=self.use_centers)
        self.converter = CenterNetImageConverter(mean=config.data.mean, std=config.data.std)
        self.mean = tuple(self.converter.mean)
        self.std = tuple(self.converter.std)
        self.predict = tf.function(
            self._predict,
            input_signature=[
                tf.TensorSpec([None, None, None, 3], tf.uint8, name="images"),
                tf.TensorSpec([None, 2], tf.int32, name="image_sizes"),
            ],
        )

    def detect(self, images: tf.Tensor, preprocess: Callable) -> Dict[str, tf.Tensor]:
        """`Decoder.detect` with this predictor's network.

        Args:
            images: uint8 tensor `(batch, height, width, 3)`.
            preprocess: callable ``(images, scale) -> (canvas, ScaleGeometry)``.

        Returns:
            The dict of `Decoder` (boxes in original-image pixels).
        """
        return self.decoder.detect(
            lambda canvas: self.model(canvas, training=False), lambda scale: preprocess(images, scale)
        )

    def _predict(self, images: tf.Tensor, image_sizes: tf.Tensor) -> Dict[str, tf.Tensor]:
        return self.detect(
            images,
            lambda batch, scale: self.converter(batch, image_sizes, scale),
        )

    def __call__(
        self,
        images: Union[np.ndarray, tf.Tensor],
        image_sizes: Optional[Union[np.ndarray, tf.Tensor]] = None,
    ) -> Dict[str, tf.Tensor]:
        """Detections for a padded batch.

        Args:
            images: uint8 tensor `(batch, max_height, max_width, 3)`. RGB,
                each image top-left aligned and zero-padded bottom/right.
            image_sizes: int32 tensor `(batch, 2)` or None. True ``(height,
                width)`` per image. Defaults to the full padded size.

        Returns:
            dict with ``boxes`` float32 `(batch, max_detections, 4)` ``[x1,
            y1, x2, y2]`` in original-image pixels, ``scores`` float32
            `(batch, max_detections)`, ``classes`` int32 `(batch,
            max_detections)` (0-based), ``num_detections`` int32 `(batch,)`;
            past ``num_detections`` boxes and scores are 0 and classes -1
            (`tf_centernet.decode.Decoder`).

        Raises:
            TypeError: images are not uint8.
            ValueError: wrong ranks or shapes, or sizes outside the batch.
        """
        images = tf.convert_to_tensor(images)
        if images.dtype != tf.uint8:
            raise TypeError(
                f"images must be uint8 RGB (0-255), got {images.dtype.name}; "
                "normalisation happens inside the predictor."
            )
        if images.shape.rank != 4 or images.shape[-1] != 3:
            raise ValueError(
                f"images must be (batch, height, width, 3), got shape {images.shape}."
            )
        if image_sizes is None:
            shape = tf.shape(images)
            image_sizes = tf.tile(shape[None, 1:3], [shape[0], 1])
        image_sizes = tf.convert_to_tensor(image_sizes)
        if not image_sizes.dtype.is_integer:
            raise TypeError(f"image_sizes must be integers, got {image_sizes.dtype.name}.")
        image_sizes = tf.cast(image_sizes, tf.int32)
        if image_sizes.shape.rank != 2 or image_sizes.shape[-1] != 2:
            raise ValueError(
                f"image_sizes must be (batch, 2), got shape {image_sizes.shape}."
            )
        if tf.executing_eagerly():
            sizes = image_sizes.numpy()
            if sizes.shape[0] != images.shape[0]:
                raise ValueError(
                    f"{sizes.shape[0]} image sizes for {images.shape[0]} images."
                )
            if (sizes < 1).any() or (sizes[:, 0] > images.shape[1]).any() or (
                sizes[:, 1] > images.shape[2]
            ).any():
                raise ValueError(
                    f"image_sizes {sizes.tolist()} must lie within the batch's "
                    f"{images.shape[1]}x{images.shape[2]} pixels and be positive."
                )
        return self.predict(images, image_sizes)

    def predict_images(
        self, images: Union[Sequence[np.ndarray], np.ndarray], batch_size: int = 1
    ) -> List[Dict[str, np.ndarray]]:
        """Detections for a list of RGB images of any sizes.

        Args:
            images: list of uint8 arrays `(height, width, 3)` (RGB), or one
                such array, or a uint8 array `(n, height, width, 3)`.
            batch_size: int. Images per network call; images of a call share
                one canvas (the largest), so 1 reproduces the releases exactly.
                Defaults to `1`.

        Returns:
            list with one dict per image: ``boxes`` float32 `(n, 4)` ``[x1,
            y1, x2, y2]`` in the image's pixels, ``scores`` float32 `(n,)`,
            ``classes`` int32 `(n,)` (0-based), best first.

        Raises:
            TypeError / ValueError: see `pad_batch`.
        """
        if isinstance(images, np.ndarray):
            images = [images] if images.ndim == 3 else list(images)
        images = list(images)
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        results: List[Dict[str, np.ndarray]] = []
        for start in range(0, len(images), batch_size):
            batch, sizes = pad_batch(images[start : start + batch_size])
            out = self.predict(tf.constant(batch), tf.constant(sizes))
            results += unpad_detections({key: value.numpy() for key, value in out.items()})
        return results
