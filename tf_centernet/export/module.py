"""The exported detector as a `tf.Module`: preprocessing, network and decoding.

See `tf_centernet.export` for the output convention of every format.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Sequence, Tuple

import tensorflow as tf

from tf_centernet.config import Config
from tf_centernet.data.labels import class_labels
from tf_centernet.export.signatures import static_preprocess, to_detection_api
from tf_centernet.inference import Predictor


def scan_pooling_model(model):
    """A copy of a detector whose directional pooling uses the pure-TF scans.

    Compiled pooling ops (``pooling_impl="custom"`` or ``"auto"``) are
    runtime-specific and absent from TF Serving, TFLite and ONNX; an export
    must only contain the portable scans (`tf_centernet.ops.pooling`). The
    copy is built from ``model.get_config()`` with ``pooling_impl="scan"`` and
    takes the model's weights; the model itself is untouched.

    Args:
        model: a built `KeypointDetector`, or any other callable (returned
            as is: e.g. a test double without pooling).

    Returns:
        A `KeypointDetector` with ``pooling_impl="scan"`` and the same
        weights, or `model` itself when it already uses the scans or is not a
        `KeypointDetector`.

    Raises:
        ValueError: `model` is a `KeypointDetector` that is not built.
    """
    from tf_centernet.models.detector import KeypointDetector

    if not isinstance(model, KeypointDetector) or model.pooling_impl == "scan":
        return model
    if not model.built:
        raise ValueError("Build the model (call it once or `model.build`) before exporting it.")
    config = dict(model.get_config(), pooling_impl="scan")
    copy = type(model).from_config(config)
    # Weight shapes do not depend on the spatial size: any valid size builds.
    size = 4 * 2 ** model.levels - 1
    copy.build((None, size, size, 3))
    copy.set_weights(model.get_weights())
    return copy


def label_map_from_config(config: Config) -> Tuple[List[int], List[str]]:
    """Class index -> COCO category id and name of ``config.train.model_dir``.

    See `tf_centernet.data.labels.class_labels` (the one place this mapping
    is resolved: the model's ``classes.json``, else the annotation files).

    Returns:
        (category_ids, names): two lists of ``model.num_classes`` entries.

    Raises:
        ValueError: another number of categories than ``model.num_classes``.
    """
    return class_labels(config)


DEFAULT_MAX_MEGAPIXELS = 8.0


def declared_pixels(image_bytes: tf.Tensor) -> tf.Tensor:
    """``height * width`` (int64) an encoded image's header declares, not decoding it.

    JPEG: `tf.image.extract_jpeg_shape`; PNG: the IHDR chunk; GIF: the
    logical screen; BMP: the info header. Other bytes give 0 (the decoder
    then rejects them).
    """
    head = tf.io.decode_raw(
        tf.strings.substr(tf.strings.join([image_bytes, tf.constant(b"\0" * 32)]), 0, 32), tf.uint8
    )
    b = tf.cast(head, tf.int64)

    def big(i, n):
        return sum(b[i + k] * (256 ** (n - 1 - k)) for k in range(n))

    def little(i, n):
        return sum(b[i + k] * (256 ** k) for k in range(n))

    def jpeg():
        shape = tf.cast(tf.image.extract_jpeg_shape(image_bytes), tf.int64)
        return shape[0] * shape[1]

    def other():
        png = tf.logical_and(tf.equal(b[0], 0x89), tf.equal(b[1], 0x50))
        gif = tf.logical_and(tf.equal(b[0], 0x47), tf.equal(b[1], 0x49))
        bmp = tf.logical_and(tf.equal(b[0], 0x42), tf.equal(b[1], 0x4D))
        bmp_height = little(22, 4)
        bmp_height = tf.where(bmp_height >= 2**31, 2**32 - bmp_height, bmp_height)
        return tf.where(png, big(16, 4) * big(20, 4),
                        tf.where(gif, little(6, 2) * little(8, 2),
                                 tf.where(bmp, little(18, 4) * bmp_height, tf.constant(0, tf.int64))))

    return tf.cond(tf.io.is_jpeg(image_bytes), jpeg, other)


def _decode_image(image_bytes: tf.Tensor, max_pixels: Optional[int] = None) -> tf.Tensor:
    """One encoded image (JPEG, PNG, GIF's first frame, BMP) -> uint8 RGB `(h, w, 3)`.

    EXIF orientation is ignored (stored pixels, as in training). With
    `max_pixels`, an image whose header declares more pixels is rejected
    (InvalidArgumentError naming the limit) before it is decoded.
    """
    if max_pixels:
        pixels = declared_pixels(image_bytes)
        check = tf.debugging.assert_less_equal(
            pixels, tf.constant(int(max_pixels), tf.int64),
            message=f"serving_bytes: image larger than the export's limit of {int(max_pixels)} pixels "
            "(height * width; tf-centernet export --max-megapixels)",
        )
        with tf.control_dependencies([check]):
            image_bytes = tf.identity(image_bytes)
    return tf.io.decode_image(image_bytes, channels=3, expand_animations=False)


def _tf_variables(model) -> List[tf.Variable]:
    """The `tf.Variable`s behind a model's (Keras) variables.

    Tracked as plain `tf.Variable`s, the TFLite converter freezes them into
    constants; tracked as Keras variables it keeps them as uninitialised
    resource variables (READ_VARIABLE ops that fail at run time).
    """
    return [
        v if isinstance(v, tf.Variable) else v.value
        for v in getattr(model, "variables", [])
    ]


class _Untracked:
    """Attributes that `tf.Module` must not track (not a `Trackable`)."""

    def __init__(self, **attributes):
        self.__dict__.update(attributes)


class DetectionModule(tf.Module):
    """The exported detector: preprocessing, network and decoding in one graph.

    Args:
        model: a built `KeypointDetector` (copied with the pure-TF pooling,
            see `scan_pooling_model`) or any callable with its output
            contract.
        config: `Config`. Uses ``decode``, ``data.mean``/``data.std`` and
            ``model`` (as `Predictor`).
        category_ids: sequence of ints or None. Class index -> category id.
            Defaults to `label_map_from_config`.
        flip_test: bool or None. Run the horizontally flipped image too.
            Defaults to ``config.decode.flip_test``.
        max_megapixels: float or None. Largest image `serve_bytes` decodes
            (million pixels); None: no limit. Defaults to
            `DEFAULT_MAX_MEGAPIXELS`.

    Attributes:
        serve: `tf.function` ``images uint8 (batch, height, width, 3) ->``
            the `to_detection_api` dict (the ``serving_default`` signature).
        serve_bytes: `tf.function` ``image_bytes string (batch,) ->`` the
            same dict (the ``serving_bytes`` signature). Images may differ
            in size; each is detected on its own (as `serve` on a batch of
            one), so results never depend on the rest of the request.
            An image whose header declares more than `max_megapixels`
            is rejected before decoding.
        heads: `tf.function` ``canvas float32 (batch, Hc, Wc, 3) ->`` the
            raw head outputs (normalised network input; not a serving
            signature, kept for debugging and tests).
        predictor: the `Predictor` used by `serve` and `serve_bytes`.
        model: the detector with the pure-TF pooling (not tracked).
        model_variables: its `tf.Variable`s (what the SavedModel stores).
    """

    def __init__(
        self,
        model,
        config: Config,
        category_ids: Optional[Sequence[int]] = None,
        flip_test: Optional[bool] = None,
        max_megapixels: Optional[float] = DEFAULT_MAX_MEGAPIXELS,
    ):
        super().__init__(name="centernet_export")
        self._limits = _Untracked(
            max_pixels=int(float(max_megapixels) * 1e6) if max_megapixels else None
        )
        model = scan_pooling_model(model)
        # The SavedModel keeps the variables, not the Keras object graph:
        # tracking the model would make `tf.saved_model.save` walk (and trace
        # functions of) every layer, which doubled the export time for nothing
        # a serving runtime uses. A plain holder is not tracked.
        self._holder = _Untracked(model=model)
        self.model_variables = _tf_variables(model)
        if category_ids is None:
            category_ids, _ = label_map_from_config(config)
        self.category_ids = [int(c) for c in category_ids]
        if len(self.category_ids) != config.model.num_classes:
            raise ValueError(
                f"{len(self.category_ids)} category ids for {config.model.num_classes} classes."
            )
        # The exported graph holds the portable soft-NMS loop, never the
        # compiled op (unknown to TF Serving, TFLite and ONNX), even where a
        # function is traced outside `tf.saved_model.save`.
        config = dataclasses.replace(
            config, decode=dataclasses.replace(config.decode, soft_nms_impl="loop")
        )
        self.predictor = Predictor(self.model, config, flip_test=flip_test)
        self.serve = tf.function(
            self._serve,
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")],
        )
        self.serve_bytes = tf.function(
            self._serve_bytes,
            input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")],
        )
        self.heads = tf.function(
            self._heads,
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="canvas")],
        )

    @property
    def model(self):
        """The exported detector (pure-TF pooling)."""
        return self._holder.model

    def _serve(self, images):
        # An empty batch gets empty outputs (not an error from the decoder).
        n = self.predictor.decode_config.max_detections

        def empty():
            return {
                "detection_boxes": tf.zeros([0, n, 4]), "detection_scores": tf.zeros([0, n]),
                "detection_classes": tf.zeros([0, n]), "num_detections": tf.zeros([0]),
            }

        return tf.cond(tf.shape(images)[0] > 0, lambda: self._detect(images), empty)

    def _detect(self, images):
        shape = tf.shape(images)
        sizes = tf.tile(shape[None, 1:3], [shape[0], 1])
        return to_detection_api(self.predictor.predict(images, sizes), sizes, self.category_ids)

    def _serve_bytes(self, image_bytes):
        # One image at a time: each gets its own canvas, so the detections of
        # an image do not depend on the other images of the request.
        def detect_one(encoded):
            image = _decode_image(encoded, self._limits.max_pixels)[None]  # (1, h, w, 3)
            out = self._detect(image)
            return {key: value[0] for key, value in out.items()}

        n = self.predictor.decode_config.max_detections
        return tf.map_fn(
            detect_one,
            image_bytes,
            fn_output_signature={
                "detection_boxes": tf.TensorSpec([n, 4], tf.float32),
                "detection_scores": tf.TensorSpec([n], tf.float32),
                "detection_classes": tf.TensorSpec([n], tf.float32),
                "num_detections": tf.TensorSpec([], tf.float32),
            },
        )

    def _heads(self, canvas):
        return dict(self.model(canvas, training=False))

    def static_detector(self, height: int, width: int, batch: Optional[int] = 1):
        """A `tf.function` for one image size with static shapes (TFLite, ONNX).

        The same computation as `serve` on ``height x width`` images
        (`static_preprocess` instead of `preprocess_images`; the same model
        and `decode_detections`).

        Args:
            height: int. Image height in pixels.
            width: int. Image width in pixels.
            batch: int or None. Static batch size. Defaults to `1`.

        Returns:
            A `tf.function` with input signature ``images uint8 (batch,
            height, width, 3)`` returning the `to_detection_api` dict.
        """
        predictor = self.predictor

        def detect(images):
            detections = predictor.detect(
                images, lambda batch, scale: static_preprocess(batch, scale, predictor.mean, predictor.std)
            )
            sizes = tf.tile(tf.constant([[height, width]], tf.int32), [tf.shape(images)[0], 1])
            return to_detection_api(detections, sizes, self.category_ids)

        return tf.function(
            detect,
            input_signature=[tf.TensorSpec([batch, height, width, 3], tf.uint8, name="images")],
        )

    def static_heads(self, height: int, width: int, batch: Optional[int] = 1):
        """Like `static_detector`, but returns the raw head outputs at scale 1.

        For accelerators that must take the whole graph and cannot run the
        decoding's loops and top-K: decode the outputs with
        `tf_centernet.decode.decode_detections` and the geometry of
        `static_preprocess`. The flipped copy is not run.

        Returns:
            A `tf.function` ``images uint8 (batch, height, width, 3) ->``
            dict of head outputs `(batch, (Hc + 1) / 4, (Wc + 1) / 4, c)`.
        """
        predictor = self.predictor

        def heads(images):
            canvas, _ = static_preprocess(images, 1.0, predictor.mean, predictor.std)
            return dict(self.model(canvas, training=False))

        return tf.function(
            heads,
            input_signature=[tf.TensorSpec([batch, height, width, 3], tf.uint8, name="images")],
        )
