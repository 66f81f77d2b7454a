"""The exported detector as a `tf.Module`: preprocessing, network and decoding.

See `tf_centernet.export` for the output convention of every format.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Sequence, Tuple

import tensorflow as tf

from tf_centernet.export.signatures import to_detection_api


def export_model(model, flip_test: Optional[bool] = None):
    """The copy of a detector that every export holds: portable ops only.

    Compiled pooling ops (``pooling_impl="custom"`` or ``"auto"``) and the
    compiled soft-NMS are runtime-specific and absent from TF Serving,
    TFLite and ONNX; the copy, built from ``model.get_config()``, uses the
    pure-TF scans (`tf_centernet.ops.pooling`) and the soft-NMS loop, takes
    the model's weights, and leaves the model untouched.

    Args:
        model: a built `tf_centernet.models.KeypointObjectDetector`.
        flip_test: bool or None. Overrides the decoder's ``flip_test``.

    Returns:
        The copy (or `model` itself when nothing needs to change).

    Raises:
        TypeError: `model` is not one of this project's detectors.
        ValueError: `model` is not built.
    """
    from tf_centernet.decode import Decoder
    from tf_centernet.models import KeypointObjectDetector

    if not isinstance(model, KeypointObjectDetector):
        raise TypeError(f"Only this project's detectors export, got a {type(model).__name__}.")
    if not model.built:
        raise ValueError("Build the model (call it once or `model.build`) before exporting it.")
    decode = model.decoder.decode_config
    changes = {"soft_nms_impl": "loop"}
    if flip_test is not None:
        changes["flip_test"] = bool(flip_test)
    decoder = Decoder(dataclasses.replace(decode, **changes), use_centers=model.decoder.use_centers, name="decoder")
    if model.pooling_impl == "scan" and decode == decoder.decode_config:
        return model
    config = dict(model.get_config(), pooling_impl="scan", decoder=decoder, compile=False)
    copy = type(model).from_config(config)
    # Weight shapes do not depend on the spatial size: any valid size builds.
    copy.build()
    copy.set_weights(model.get_weights())
    return copy


scan_pooling_model = export_model  # the name of earlier releases


def label_map(model, category_ids=None, class_names=None) -> Tuple[List[int], List[str]]:
    """Class index -> (category id, name): the arguments, else the model's, else ``1..C``.

    Raises:
        ValueError: another number of entries than ``model.num_classes``.
    """
    ids = category_ids if category_ids is not None else getattr(model, "category_ids", None)
    if ids is None:
        ids = list(range(1, model.num_classes + 1))
    ids = [int(c) for c in ids]
    names = class_names if class_names is not None else getattr(model, "class_names", None)
    names = [str(n) for n in names] if names is not None else [str(c) for c in ids]
    if len(ids) != model.num_classes or len(names) != model.num_classes:
        raise ValueError(
            f"{len(ids)} category ids and {len(names)} class names for {model.num_classes} classes."
        )
    return ids, names


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
        model: a built `tf_centernet.models.KeypointObjectDetector` (copied
            with portable ops, see `export_model`). Its preprocessor's image
            converter and its decoder define the computation.
        category_ids: sequence of ints or None. Class index -> category id.
            Defaults to `label_map`.
        flip_test: bool or None. Run the horizontally flipped image too.
            Defaults to the decoder's ``flip_test``.
        max_megapixels: float or None. Largest image `serve_bytes` decodes
            (million pixels); None: no limit. Defaults to
            `DEFAULT_MAX_MEGAPIXELS`.

    Attributes:
        serve: `tf.function` ``images uint8 (batch, height, width, 3) ->``
            the `to_detection_api` dict (the ``serving_default`` signature).
            The input's rank, channels and dtype are checked with messages
            naming the input and its spec.
        serve_bytes: `tf.function` ``image_bytes string (batch,) ->`` the
            same dict (the ``serving_bytes`` signature). Images may differ
            in size; each is detected on its own (as `serve` on a batch of
            one), so results never depend on the rest of the request.
            An image whose header declares more than `max_megapixels`
            is rejected before decoding.
        heads: `tf.function` ``canvas float32 (batch, Hc, Wc, 3) ->`` the
            raw head outputs (normalised network input; not a serving
            signature, kept for debugging and tests).
        model: the exported copy of the detector (not tracked).
        model_variables: its `tf.Variable`s (what the SavedModel stores).
    """

    def __init__(
        self,
        model,
        category_ids: Optional[Sequence[int]] = None,
        flip_test: Optional[bool] = None,
        max_megapixels: Optional[float] = DEFAULT_MAX_MEGAPIXELS,
    ):
        super().__init__(name="centernet_export")
        self._limits = _Untracked(
            max_pixels=int(float(max_megapixels) * 1e6) if max_megapixels else None
        )
        model = export_model(model, flip_test)
        # The SavedModel keeps the variables, not the Keras object graph:
        # tracking the model would make `tf.saved_model.save` walk (and trace
        # functions of) every layer, which doubled the export time for nothing
        # a serving runtime uses. A plain holder is not tracked.
        self._holder = _Untracked(model=model)
        self.model_variables = _tf_variables(model)
        self.category_ids, _ = label_map(model, category_ids, [""] * model.num_classes)
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
        """The exported detector (pure-TF pooling, soft-NMS loop)."""
        return self._holder.model

    @property
    def max_detections(self) -> int:
        return int(self.model.decoder.decode_config.max_detections)

    def _empty(self):
        n = self.max_detections
        return {
            "detection_boxes": tf.zeros([0, n, 4]), "detection_scores": tf.zeros([0, n]),
            "detection_classes": tf.zeros([0, n]), "num_detections": tf.zeros([0]),
        }

    def _serve(self, images):
        # The signature declares (batch, height, width, 3) uint8; a serving
        # runtime may still feed other shapes, so say which input is wrong.
        spec = "uint8 (batch, height, width, 3) RGB"
        checks = [
            tf.debugging.assert_rank(images, 4, message=f"serving_default: input images must be {spec}"),
            tf.debugging.assert_equal(
                tf.shape(images)[-1], 3, message=f"serving_default: input images must have 3 channels, {spec}"
            ),
        ]
        with tf.control_dependencies(checks):
            images = tf.identity(images)
        # An empty batch gets empty outputs (not an error from the decoder).
        return tf.cond(tf.shape(images)[0] > 0, lambda: self._detect(images), self._empty)

    def _detect(self, images):
        shape = tf.shape(images)
        sizes = tf.tile(shape[None, 1:3], [shape[0], 1])
        return to_detection_api(self.model.detect(images), sizes, self.category_ids)

    def _serve_bytes(self, image_bytes):
        check = tf.debugging.assert_rank(
            image_bytes, 1, message="serving_bytes: input image_bytes must be a string vector (batch,) of "
            "encoded JPEG/PNG/GIF/BMP images"
        )
        with tf.control_dependencies([check]):
            image_bytes = tf.identity(image_bytes)
        # One image at a time: each gets its own canvas, so the detections of
        # an image do not depend on the other images of the request.
        def detect_one(encoded):
            image = _decode_image(encoded, self._limits.max_pixels)[None]  # (1, h, w, 3)
            out = self._detect(image)
            return {key: value[0] for key, value in out.items()}

        n = self.max_detections
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
        (`tf_centernet.models.preprocessor.static_preprocess`, the same
        network and decoder).

        Args:
            height: int. Image height in pixels.
            width: int. Image width in pixels.
            batch: int or None. Static batch size. Defaults to `1`.

        Returns:
            A `tf.function` with input signature ``images uint8 (batch,
            height, width, 3)`` returning the `to_detection_api` dict.
        """

        def detect(images):
            sizes = tf.tile(tf.constant([[height, width]], tf.int32), [tf.shape(images)[0], 1])
            return to_detection_api(self.model.detect(images, static=True), sizes, self.category_ids)

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

        def heads(images):
            canvas, _ = self.model.image_converter(images, scale=1.0, static=True)
            return dict(self.model(canvas, training=False))

        return tf.function(
            heads,
            input_signature=[tf.TensorSpec([batch, height, width, 3], tf.uint8, name="images")],
        )
