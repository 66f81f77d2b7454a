"""The detector task: `CenterNetObjectDetector` and `CornerNetObjectDetector` (docs/reference.md §2-3, §5, §7).

keras-hub's layout: a task (`keras_hub.models.ObjectDetector`) holding a
`backbone` (`HourglassBackbone`), a `preprocessor`
(`CenterNetObjectDetectorPreprocessor`) and a `decoder`
(`tf_centernet.decode.Decoder`), with the pooling modules and prediction
heads of every stack.

- ``model(canvas)`` returns the raw head outputs as a dict (normalised
  network input);
- ``model.predict(images)`` takes RGB images of any sizes (a list of uint8
  arrays, a batch, a ragged batch) and returns detections in
  original-image pixels: the preprocessor brings them into one padded
  batch, `detect` runs the decoder's test-time loop (test scales, flip
  test) with the preprocessor's image converter;
- ``model.fit`` trains on `tf_centernet.data.build_train_dataset` batches;
  `compute_loss` implements the losses and reports each term as a metric;
- ``model.export(path)`` writes the serving SavedModel (and the other
  formats of `tf_centernet.export`);
- ``from_preset`` / ``save_to_preset``: keras-hub presets, also through
  ``keras_hub.models.ObjectDetector.from_preset`` once `tf_centernet` is
  imported.
"""

from __future__ import annotations

import dataclasses
import json
import os

import keras
import numpy as np
import tensorflow as tf
from keras_hub.models import ObjectDetector

from tf_centernet import losses
from tf_centernet.config import BACKBONES, DataConfig, LossConfig, check_choice
from tf_centernet.decode.decoder import Decoder
from tf_centernet.layers.convolution import ConvModule
from tf_centernet.layers.heads import HEATMAP_BIAS, PredictionHead
from tf_centernet.layers.pooling import CascadeCornerPooling, CenterPooling, CornerPooling
from tf_centernet.models.backbone import HourglassBackbone
from tf_centernet.models.preprocessor import (
    CenterNetImageConverter,
    CenterNetObjectDetectorPreprocessor,
    pad_images,
)

LOSS_TERMS = ("focal_corner", "focal_center", "pull", "push", "offset_corner", "offset_center")
# Hourglass arguments of the flat constructor of earlier releases (and of their .keras files).
_LEGACY_BACKBONE_KEYS = ("num_stacks", "levels", "widths", "blocks", "stem_channels", "head_channels",
                         "pool_channels")


@keras.saving.register_keras_serializable(package="tf_centernet")
class KeypointObjectDetector(ObjectDetector):
    """Stacked-hourglass keypoint detector: the base of CornerNet and CenterNet.

    Per stack: a top-left and a bottom-right pooling module (corner pooling,
    or cascade corner pooling for CenterNet), heads for heatmap, embedding
    and offset of each corner; CenterNet adds a center pooling module with
    center heatmap and offset heads (docs/reference.md §2-3).

    Args:
        backbone: `HourglassBackbone`, its serialized config, or None (then
            built from the hourglass keyword arguments of earlier releases,
            ``num_stacks=...`` etc., default Hourglass-104).
        num_classes: int. Object classes (no background channel).
        preprocessor: `CenterNetObjectDetectorPreprocessor` or None (the
            default one: the releases' COCO mean and std). With
            ``model.preprocessor = None``, `predict` takes normalised canvases
            and returns boxes in canvas pixels.
        decoder: `tf_centernet.decode.Decoder`, its serialized config, or
            None for ``Decoder(DecodeConfig(), use_centers=centers)``.
            Replace it with ``model.decoder = ...``.
        centers: bool. Predict center keypoints (CenterNet's central region
            exploration).
        cascade_corner_pooling: bool. Cascade (CenterNet) or plain corner pooling.
        center_pooling: bool. Center pooling (True) or a plain 3x3
            convolution module (False) before the center heads.
        heatmap_bias: float. Initial heatmap bias. Defaults to -2.19.
        pooling_impl: str. "scan", "auto" or "custom".
        loss_config: dict of `tf_centernet.config.LossConfig` fields, or None.
        class_names: list of str or None. Class index -> name (label maps,
            drawings); defaults to the ids' string form.
        category_ids: list of int or None. Class index -> category id (COCO
            ids, the SavedModel's ``detection_classes``); defaults to
            ``1 .. num_classes``.
        **kwargs: `keras.Model` arguments (``name``), ``compile``.

    Call arguments:
        images: float32 `(batch, height, width, 3)`, normalised (the
            converter's canvas); height and width ``4 * 2**levels * k - 1``
            or ``4 * 2**levels * k`` (e.g. 511).
        training: bool.

    Returns:
        dict with keys ``tl_heatmap``, ``br_heatmap`` (batch, H/4, W/4,
        num_classes) logits; ``tl_embedding``, ``br_embedding`` (batch,
        H/4, W/4, 1); ``tl_offset``, ``br_offset`` (batch, H/4, W/4, 2) in
        output cells (x, y); with centers ``ct_heatmap`` and ``ct_offset``.
        All float32. With training=True each value is a list with one
        tensor per stack; otherwise the last stack's tensor.

    Example:

    >>> import numpy as np
    >>> model = CenterNetObjectDetector(
    ...     backbone=HourglassBackbone.from_size("hourglass_small"), num_classes=3)
    >>> images = [np.zeros((90, 120, 3), np.uint8), np.zeros((40, 30), np.uint8)]
    >>> out = model.predict(images, verbose=0)
    >>> out["boxes"].shape, out["classes"].dtype
    ((2, 100, 4), dtype('int32'))
    """

    backbone_cls = HourglassBackbone
    preprocessor_cls = CenterNetObjectDetectorPreprocessor

    def __init__(
        self,
        backbone=None,
        num_classes=80,
        preprocessor=None,
        decoder=None,
        centers=True,
        cascade_corner_pooling=True,
        center_pooling=True,
        heatmap_bias=HEATMAP_BIAS,
        pooling_impl="scan",
        loss_config=None,
        class_names=None,
        category_ids=None,
        **kwargs,
    ):
        legacy = {key: kwargs.pop(key) for key in _LEGACY_BACKBONE_KEYS if key in kwargs}
        compile_now = kwargs.pop("compile", True)
        super().__init__(compile=False, **kwargs)
        if isinstance(backbone, dict):
            backbone = keras.saving.deserialize_keras_object(backbone)
        if backbone is None:
            backbone = HourglassBackbone(**{**BACKBONES["hourglass_104"], **legacy}, name="backbone")
        elif legacy:
            raise ValueError(f"Give the hourglass sizes to the backbone, not to the detector: {sorted(legacy)}.")
        if isinstance(preprocessor, dict):
            preprocessor = keras.saving.deserialize_keras_object(preprocessor)
        self.backbone = backbone
        self.preprocessor = preprocessor if preprocessor is not None else CenterNetObjectDetectorPreprocessor()
        self.num_classes = int(num_classes)
        self.centers = bool(centers)
        self.cascade_corner_pooling = bool(cascade_corner_pooling)
        self.center_pooling = bool(center_pooling)
        self.heatmap_bias = float(heatmap_bias)
        self.pooling_impl = pooling_impl
        self.loss_config = dict(loss_config or {})
        self._loss_settings = LossConfig(**self.loss_config)
        self.class_names = list(class_names) if class_names is not None else None
        self.category_ids = [int(c) for c in category_ids] if category_ids is not None else None

        head_channels, pool_channels = backbone.head_channels, backbone.pool_channels
        corner_cls = CascadeCornerPooling if cascade_corner_pooling else CornerPooling
        hidden = backbone.widths[0]  # the releases' head width is curr_dim = widths[0]
        self.stack_modules = []
        for s in range(backbone.num_stacks):
            modules = {
                "tl_pool": corner_cls("top_left", head_channels, pool_channels, pooling_impl, name=f"tl_pool_{s}"),
                "br_pool": corner_cls("bottom_right", head_channels, pool_channels, pooling_impl, name=f"br_pool_{s}"),
                "tl_heatmap": PredictionHead(num_classes, hidden, heatmap_bias, name=f"tl_heatmap_{s}"),
                "br_heatmap": PredictionHead(num_classes, hidden, heatmap_bias, name=f"br_heatmap_{s}"),
                "tl_embedding": PredictionHead(1, hidden, name=f"tl_embedding_{s}"),
                "br_embedding": PredictionHead(1, hidden, name=f"br_embedding_{s}"),
                "tl_offset": PredictionHead(2, hidden, name=f"tl_offset_{s}"),
                "br_offset": PredictionHead(2, hidden, name=f"br_offset_{s}"),
            }
            if centers:
                modules["ct_pool"] = (
                    CenterPooling(head_channels, pool_channels, pooling_impl, name=f"ct_pool_{s}")
                    if center_pooling
                    else ConvModule(head_channels, 3, name=f"ct_pool_{s}")
                )
                modules["ct_heatmap"] = PredictionHead(num_classes, hidden, heatmap_bias, name=f"ct_heatmap_{s}")
                modules["ct_offset"] = PredictionHead(2, hidden, name=f"ct_offset_{s}")
            self.stack_modules.append(modules)
        self.trackers = {name: keras.metrics.Mean(name=name) for name in LOSS_TERMS}
        if isinstance(decoder, dict):
            decoder = keras.saving.deserialize_keras_object(decoder)
        self._decoder = decoder if decoder is not None else Decoder(use_centers=self.centers, name="decoder")
        self._check_decoder(self._decoder)
        # Built at construction, like keras-hub's functional tasks: weight
        # shapes do not depend on the image size, and preset / `.keras`
        # loaders expect a built model.
        self.build()
        if compile_now:
            self.compile()

    # ------------------------------------------------------------ properties

    @property
    def num_stacks(self):
        """Hourglass stacks (one set of heads each)."""
        return self.backbone.num_stacks

    @property
    def levels(self):
        """Recursion depth of each hourglass (the input size must be a multiple of ``4 * 2**levels``, less one)."""
        return self.backbone.levels

    @property
    def image_converter(self):
        """The preprocessor's `CenterNetImageConverter` (a default one without preprocessor)."""
        if self.preprocessor is not None and self.preprocessor.image_converter is not None:
            return self.preprocessor.image_converter
        return CenterNetImageConverter()

    @property
    def decoder(self):
        """The `Decoder` that `predict`, `detect` and `export` run.

        Swap it by assignment, ``model.decoder = Decoder(DecodeConfig(...),
        use_centers=model.centers)``: `predict` then retraces.
        """
        return self._decoder

    @decoder.setter
    def decoder(self, value):
        if isinstance(value, dict):
            value = keras.saving.deserialize_keras_object(value)
        self._check_decoder(value)
        old = getattr(self, "_decoder", None)
        if old is not None and old is not value:
            self._tracker.untrack(old)
        self._decoder = value
        # `predict` caches its traced function: retrace with the new decoder.
        self.predict_function = None

    def _lock_state(self):
        # Keras locks a subclassed model's sub-layers once it is built; like
        # the functional tasks of keras-hub (`Functional._lock_state`), the
        # detector stays open, so that its weightless decoder can be replaced.
        pass

    def _check_decoder(self, decoder):
        if not isinstance(decoder, Decoder):
            raise TypeError(f"decoder must be a tf_centernet.decode.Decoder, got {type(decoder).__name__}.")
        if decoder.use_centers and not self.centers:
            raise ValueError("This detector predicts no center keypoints: use Decoder(..., use_centers=False).")

    @property
    def output_keys(self):
        """The keys of the output dict, in a fixed order."""
        keys = ["tl_heatmap", "br_heatmap", "tl_embedding", "br_embedding", "tl_offset", "br_offset"]
        if self.centers:
            keys += ["ct_heatmap", "ct_offset"]
        return keys

    # --------------------------------------------------------------- network

    def _heads(self, features, modules, training):
        tl = modules["tl_pool"](features, training=training)
        br = modules["br_pool"](features, training=training)
        out = {}
        for prefix, pooled in (("tl", tl), ("br", br)):
            for kind in ("heatmap", "embedding", "offset"):
                out[f"{prefix}_{kind}"] = modules[f"{prefix}_{kind}"](pooled)
        if self.centers:
            ct = modules["ct_pool"](features, training=training)
            out["ct_heatmap"] = modules["ct_heatmap"](ct)
            out["ct_offset"] = modules["ct_offset"](ct)
        return out

    def build(self, input_shape=None):
        """Builds every stack's layers (inference alone uses the last one)."""
        if self.built:
            return
        if input_shape is None:
            size = 4 * 2 ** self.levels - 1
            input_shape = (None, size, size, 3)
        self.call(keras.KerasTensor(tuple(input_shape)), training=True)
        self.built = True

    def call(self, images, training=False):
        features = self.backbone(images, training=training)
        if not training:
            return self._heads(features[-1], self.stack_modules[-1], training)
        per_stack = [self._heads(f, m, training) for f, m in zip(features, self.stack_modules)]
        return {key: [p[key] for p in per_stack] for key in self.output_keys}

    def _network(self, canvas):
        return self(canvas, training=False)

    # ------------------------------------------------------------- detection

    def detect(self, images, image_sizes=None, static=False, flip_test=None):
        """Detections of RGB images in original-image pixels (docs/reference.md §7).

        Runs the decoder's test-time loop (`Decoder.detect`: every test scale,
        the flipped copy with ``flip_test``) on the canvases of the image
        converter. Without `image_sizes` the images fill the batch and share
        one canvas (one size per batch: the SavedModel's contract). With
        `image_sizes` that differ, each image is detected on its own canvas,
        exactly as the releases do one image at a time, so results never
        depend on the rest of the batch.

        Args:
            images: uint8 (or float in [0, 255]) `(batch, height, width, 3)`,
                RGB, each image top-left, padded bottom/right.
            image_sizes: int `(batch, 2)` or None. True ``(height, width)``.
            static: bool. Static-shape preprocessing for a batch of one
                static size (TFLite, ONNX).
            flip_test: bool or None. Overrides the decoder's ``flip_test``.

        Returns:
            dict: ``boxes`` float32 `(batch, N, 4)` ``[x1, y1, x2, y2]`` in
            pixels of each original image, ``scores`` float32 `(batch, N)`,
            ``classes`` int32 `(batch, N)` (0-based; -1 past
            ``num_detections``), ``num_detections`` int32 `(batch,)`;
            ``N = decoder.decode_config.max_detections``.
        """
        converter = self.image_converter
        images = tf.convert_to_tensor(images)
        if static or image_sizes is None:
            return self.decoder.detect(
                self._network, lambda scale: converter(images, None, scale, static=static), flip_test
            )
        sizes = tf.cast(image_sizes, tf.int32)

        def together():
            return self.decoder.detect(self._network, lambda scale: converter(images, sizes, scale), flip_test)

        def one_by_one():
            n = self.decoder.decode_config.max_detections

            def detect_one(args):
                image, size = args
                single = image[None, : size[0], : size[1], :]
                out = self.decoder.detect(self._network, lambda scale: converter(single, None, scale), flip_test)
                return {key: value[0] for key, value in out.items()}

            return tf.map_fn(
                detect_one, (images, sizes),
                fn_output_signature={
                    "boxes": tf.TensorSpec([n, 4], tf.float32), "scores": tf.TensorSpec([n], tf.float32),
                    "classes": tf.TensorSpec([n], tf.int32), "num_detections": tf.TensorSpec([], tf.int32),
                },
            )

        # (batch,): images that fill the padded batch share its canvas exactly.
        same = tf.reduce_all(tf.equal(sizes, sizes[:1]))
        return tf.cond(same, together, one_by_one)

    def detect_canvas(self, canvas):
        """Detections of normalised network inputs, in canvas pixels (one scale).

        What `predict` runs with ``model.preprocessor = None``.

        Args:
            canvas: float32 `(batch, H, W, 3)`, normalised, sizes as `call`.

        Returns:
            The dict of `detect`, boxes in canvas pixels.
        """
        canvas = tf.convert_to_tensor(canvas, tf.float32)
        inputs = canvas
        if self.decoder.flip_test:
            inputs = tf.concat([canvas, tf.reverse(canvas, axis=[2])], axis=0)
        return self.decoder(self(inputs, training=False), images=canvas)

    def predict_step(self, data):
        """`model.predict`: `detect` on the preprocessor's padded batch (or `detect_canvas`)."""
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        if isinstance(x, dict):
            return self.detect(x["images"], x["image_sizes"])
        return self.detect_canvas(x)

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """Detections of RGB images of any sizes, in original-image pixels.

        Args:
            x: a list of images (uint8 `(h, w, 3)`, grayscale `(h, w)` or
                `(h, w, 1)`, RGBA `(h, w, 4)`, or float in [0, 255]); one
                image; a batch `(n, h, w, 3)`; a `tf.RaggedTensor`; a dict
                ``{"images", "image_sizes"}``; or a `tf.data.Dataset` of such
                batches. With ``model.preprocessor = None``: normalised
                canvases, as `detect_canvas` takes.
            batch_size: int or None. Images per step (default 32, or 1 for a
                list, which runs each image at once like the releases).
            verbose, steps, callbacks: as `keras.Model.predict`.

        Returns:
            dict of NumPy arrays as `detect` returns, one row per image:
            ``boxes`` `(n, N, 4)` xyxy pixels, ``scores`` `(n, N)`,
            ``classes`` `(n, N)` (``-1`` padding), ``num_detections`` `(n,)`.

        Raises:
            TypeError / ValueError: an image that is not an array, not 2-D
                or 3-D, with another channel count, or empty.
        """
        if self.preprocessor is None:
            return keras.Model.predict(self, x, batch_size=batch_size, verbose=verbose, steps=steps,
                                       callbacks=callbacks)
        if isinstance(x, tf.data.Dataset):
            dataset = x.map(self.preprocess_samples, num_parallel_calls=tf.data.AUTOTUNE)
        else:
            dataset = _image_dataset(x, batch_size).map(self.preprocessor)
        return keras.Model.predict(self, dataset.prefetch(tf.data.AUTOTUNE), verbose=verbose, steps=steps,
                                   callbacks=callbacks)

    def predict_images(self, images, batch_size=1, flip_test=None):
        """Detections per image, without padding: what evaluation and drawing want.

        Args:
            images: list of images as `predict` takes them (uint8 RGB,
                grayscale, RGBA), or one image.
            batch_size: int. Images per call. Defaults to `1`.
            flip_test: bool or None. Overrides the decoder's ``flip_test``.

        Returns:
            list with one dict per image: ``boxes`` float32 `(n, 4)` ``[x1,
            y1, x2, y2]`` in the image's pixels, ``scores`` float32 `(n,)`,
            ``classes`` int32 `(n,)` (0-based), best first.

        Raises:
            TypeError / ValueError: as `predict`.
        """
        if isinstance(images, (np.ndarray, tf.Tensor)) and len(images.shape) != 4:
            images = [images]
        images = [_as_rgb(image, i) for i, image in enumerate(images)]
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        key = (self.decoder, flip_test)
        if getattr(self, "_image_function_key", None) != key:
            # One traced function per decoder and flip setting (retraced
            # after `model.decoder = ...`).
            self._image_function = tf.function(
                lambda x, sizes: self.detect(x, sizes, flip_test=flip_test), reduce_retracing=True
            )
            self._image_function_key = key
        results = []
        for start in range(0, len(images), batch_size):
            batch, sizes = pad_images(images[start : start + batch_size])
            out = self._image_function(tf.constant(batch), tf.constant(sizes))
            results += unpad_detections({key: value.numpy() for key, value in out.items()})
        return results

    # -------------------------------------------------------------- training

    def compile(self, optimizer="auto", loss=None, metrics=None, **kwargs):
        """`keras.Model.compile`; the loss is this detector's own (`compute_loss`).

        Args:
            optimizer: `"auto"` (Adam, the releases' 2.5e-4) or a Keras optimizer.
            loss: must be None: the keypoint losses are built in.
            metrics: must be None: each loss term is reported as a metric.
            **kwargs: `keras.Model.compile` arguments (``jit_compile``, ...).
        """
        if loss is not None or metrics is not None:
            raise ValueError("The detector computes its own losses and metrics: leave loss and metrics unset.")
        if optimizer == "auto":
            optimizer = keras.optimizers.Adam(2.5e-4)
        keras.Model.compile(self, optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        """Recompiles a reloaded model with its saved optimizer (``.keras`` files)."""
        config = keras.saving.deserialize_keras_object(config)
        self.compile(optimizer=config.get("optimizer") or "auto",
                     **{k: v for k, v in config.items() if k in ("jit_compile", "steps_per_execution")})

    def fit(self, *args, **kwargs):
        """`keras.Model.fit` on batches of `tf_centernet.data.build_train_dataset` (targets encoded)."""
        return keras.Model.fit(self, *args, **kwargs)

    def evaluate(self, *args, **kwargs):
        """`keras.Model.evaluate` (the losses) on batches like `fit`'s; COCO AP: `tf_centernet.evaluation`."""
        return keras.Model.evaluate(self, *args, **kwargs)

    def train_on_batch(self, *args, **kwargs):
        """`keras.Model.train_on_batch` on one `build_train_dataset` batch (dict targets)."""
        return keras.Model.train_on_batch(self, *args, **kwargs)

    def test_on_batch(self, *args, **kwargs):
        """`keras.Model.test_on_batch` on one `build_train_dataset` batch (dict targets)."""
        return keras.Model.test_on_batch(self, *args, **kwargs)

    def predict_on_batch(self, x):
        """`predict` on one batch: the same inputs, the same detections."""
        if self.preprocessor is None:
            return keras.Model.predict_on_batch(self, x)
        n = len(x) if isinstance(x, (list, tuple)) else None
        return self.predict(x, batch_size=n, verbose=0)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """docs/reference.md §5 loss for `fit`; updates one metric per term.

        `y` is the target dict of `tf_centernet.data.build_train_dataset`.
        Under a distribution strategy the returned value is divided by the
        number of replicas (gradients are summed across replicas).
        """
        if y_pred is None:
            y_pred = self(x, training=training)
        if not isinstance(y_pred["tl_heatmap"], (list, tuple)):
            y_pred = {k: [v] for k, v in y_pred.items()}
        terms = losses.detection_losses(y_pred, y, self._loss_settings, self.centers)
        for name in LOSS_TERMS:
            self.trackers[name].update_state(terms[name])
        loss = terms["loss"]
        if self.losses:  # regularisers, if a user adds any
            loss += tf.add_n([tf.cast(l, loss.dtype) for l in self.losses])
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if replicas > 1:
            loss = loss / float(replicas)
        return loss

    def train_step(self, data):
        """`keras.Model.train_step`; under a multi-worker strategy the scalar logs get shape (1,).

        Keras 3 reduces each value ``train_step`` returns with
        ``strategy.reduce("MEAN", value, axis=0)`` when
        `tf.distribute.MultiWorkerMirroredStrategy` spans several workers,
        which fails on scalars ("Invalid reduction dimension 0"). A (1,)
        value's mean over axis 0 and the replicas is the scalar Keras
        reports anyway. Elsewhere the logs are Keras' own.
        """
        logs = keras.Model.train_step(self, data)
        if not _multi_worker(tf.distribute.get_strategy()):
            return logs
        return {
            key: tf.reshape(value, [1]) if getattr(getattr(value, "shape", None), "rank", None) == 0 else value
            for key, value in logs.items()
        }

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras' hook before fit/evaluate builds the model on a symbolic copy
        # of a real batch; with several replicas it all-reduces a whole input
        # batch, which fails under MultiWorkerMirroredStrategy (PerReplica
        # conversion error). The detector is built at construction; with a
        # built optimizer (tf_centernet.training builds it) nothing is left
        # to build.
        strategy = self.distribute_strategy
        replicas = strategy.num_replicas_in_sync if strategy is not None else 1
        if replicas > 1 and self.built and self.optimizer is not None and self.optimizer.built:
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    # --------------------------------------------------------------- export

    def export(self, filepath, format="savedmodel", verbose=None, **kwargs):
        """Writes one of `tf_centernet.export.FORMATS` (the serving contract of every format).

        ``format="savedmodel"`` (also ``"tf_saved_model"``) writes what
        ``tf-centernet export`` writes: signatures ``serving_default`` (uint8
        images) and ``serving_bytes`` (encoded images), the TF Object
        Detection API outputs, and ``assets/label_map.json``.

        Args:
            filepath: str. Output folder or file.
            format: str. A `tf_centernet.export.FORMATS` name.
            verbose: unused (Keras' signature).
            **kwargs: options of `tf_centernet.export.export` (``input_size``,
                ``flip_test``, ``max_megapixels``, ...).

        Returns:
            str. The path written.
        """
        from tf_centernet.export import export  # export sits above models

        if format == "tf_saved_model":
            format = "savedmodel"
        return export(self, filepath, format=format, **kwargs)

    # --------------------------------------------------------------- config

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes, centers=self.centers,
            cascade_corner_pooling=self.cascade_corner_pooling, center_pooling=self.center_pooling,
            heatmap_bias=self.heatmap_bias, pooling_impl=self.pooling_impl, loss_config=dict(self.loss_config),
            decoder=keras.saving.serialize_keras_object(self.decoder),
            class_names=self.class_names, category_ids=self.category_ids,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if "backbone" not in config:  # a .keras file of an earlier release (flat hourglass sizes)
            legacy = {key: config.pop(key) for key in _LEGACY_BACKBONE_KEYS if key in config}
            config["backbone"] = HourglassBackbone(**{**BACKBONES["hourglass_104"], **legacy}, name="backbone")
        return super().from_config(config)

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """The detector of a keras-hub preset directory (`save_to_preset`, `tf-centernet convert`).

        Args:
            preset: str. A preset folder (``config.json``, ``task.json``,
                ``model.weights.h5``, ...).
            load_weights: bool. Load the saved weights. Defaults to True.
            **kwargs: constructor overrides (e.g. ``pooling_impl``).

        Raises:
            ValueError: not a preset of this project, or a preset of a
                detector that is not a `cls` (e.g. CornerNet asked of a
                CenterNet preset).
        """
        from keras_hub.src.utils.preset_utils import get_preset_loader  # keras-hub's loader

        task_json = os.path.join(str(preset), "task.json")
        if os.path.isfile(task_json):
            with open(task_json, encoding="utf-8") as f:
                saved = keras.saving.get_registered_object(json.load(f).get("registered_name", ""))
            if saved is None or not issubclass(saved, cls):
                raise ValueError(
                    f"{preset} holds a {getattr(saved, '__name__', 'foreign model')}, not a {cls.__name__}."
                )
        loader = get_preset_loader(preset)
        return loader.load_task(cls, load_weights, True, **kwargs)


@keras.saving.register_keras_serializable(package="tf_centernet")
class CornerNetObjectDetector(KeypointObjectDetector):
    """CornerNet (Law & Deng, 2018): corner pooling, no center keypoints.

    A `KeypointObjectDetector` with ``centers=False`` and
    ``cascade_corner_pooling=False`` by default; see it for the arguments.
    """

    # keras-hub's `ObjectDetector.from_preset` picks the one subclass whose
    # `backbone_cls` matches the preset's backbone: that is the base class,
    # which then builds whatever detector task.json names.
    backbone_cls = None

    def __init__(self, backbone=None, **kwargs):
        kwargs.setdefault("centers", False)
        kwargs.setdefault("cascade_corner_pooling", False)
        super().__init__(backbone, **kwargs)


@keras.saving.register_keras_serializable(package="tf_centernet")
class CenterNetObjectDetector(KeypointObjectDetector):
    """CenterNet: Keypoint Triplets (Duan et al., 2019).

    Cascade corner pooling, center pooling and center keypoints (central
    region exploration) by default; each is a switch for the paper's
    ablation (Table 4). See `KeypointObjectDetector` for the arguments.
    """

    backbone_cls = None  # see CornerNetObjectDetector

    def __init__(self, backbone=None, **kwargs):
        kwargs.setdefault("centers", True)
        kwargs.setdefault("cascade_corner_pooling", True)
        kwargs.setdefault("center_pooling", True)
        super().__init__(backbone, **kwargs)


# The names of earlier releases, in code and in their .keras files.
KeypointDetector = KeypointObjectDetector
CornerNet = CornerNetObjectDetector
CenterNet = CenterNetObjectDetector
for _old, _new in (("KeypointDetector", KeypointObjectDetector), ("CornerNet", CornerNetObjectDetector),
                   ("CenterNet", CenterNetObjectDetector)):
    keras.saving.get_custom_objects().setdefault(f"tf_centernet>{_old}", _new)


def _multi_worker(strategy):
    """Whether `strategy` is a MultiWorkerMirroredStrategy over several workers (Keras' own test)."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and bool(
        strategy.extended._in_multi_worker_mode()
    )


def unpad_detections(detections):
    """The padded dict of `detect` (NumPy) -> one dict per image with its ``num_detections`` rows."""
    return [
        {key: detections[key][i, :count] for key in ("boxes", "scores", "classes")}
        for i, count in enumerate(detections["num_detections"])
    ]


def _as_rgb(image, index):
    """One image for `predict`: an array `(h, w)`, `(h, w, 1|3|4)` -> `(h, w, 3)`."""
    if isinstance(image, tf.Tensor):
        image = image.numpy()
    if not isinstance(image, np.ndarray):
        raise TypeError(f"Image {index} is a {type(image).__name__}, expected a NumPy array.")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"Image {index} has shape {image.shape}; expected (height, width[, 1, 3 or 4]).")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"Image {index} is empty: shape {image.shape}.")
    if image.shape[2] == 1:  # grayscale: the same value in R, G and B
        image = np.repeat(image, 3, axis=2)
    return image[:, :, :3]  # RGBA: alpha dropped


def _image_dataset(x, batch_size):
    """`predict`'s input as a batched `tf.data.Dataset` the preprocessor maps."""
    if isinstance(x, dict) or isinstance(x, tf.RaggedTensor):
        return tf.data.Dataset.from_tensor_slices(x).batch(batch_size or 32)
    if isinstance(x, (np.ndarray, tf.Tensor)) and len(x.shape) == 4:
        return tf.data.Dataset.from_tensor_slices(x).batch(batch_size or 32)
    images = [x] if isinstance(x, (np.ndarray, tf.Tensor)) else list(x)
    if not images:
        raise ValueError("No images given.")
    images = [_as_rgb(image, i) for i, image in enumerate(images)]
    dtype = tf.uint8 if all(image.dtype == np.uint8 for image in images) else tf.float32
    sizes = np.array([image.shape[:2] for image in images], np.int32)

    def generate():
        for image, size in zip(images, sizes):
            yield {"images": image.astype(dtype.as_numpy_dtype, copy=False), "image_sizes": size}

    dataset = tf.data.Dataset.from_generator(
        generate,
        output_signature={"images": tf.TensorSpec([None, None, 3], dtype),
                          "image_sizes": tf.TensorSpec([2], tf.int32)},
    )
    # A known length: Keras then knows when the images end (no "ran out of data").
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(len(images)))
    return dataset.padded_batch(batch_size or 1)


def build_model(model_config, loss_config=None, decode_config=None, data_config=None):
    """A `CenterNetObjectDetector` or `CornerNetObjectDetector` from configuration sections.

    Args:
        model_config: `ModelConfig`.
        loss_config: `LossConfig` or None.
        decode_config: `DecodeConfig` or None. Configures the model's
            `Decoder` (`model.predict`, `detect`, exports).
        data_config: `DataConfig` or None. Its ``mean``, ``std`` and
            ``input_size`` configure the preprocessor's image converter.

    Returns:
        A built detector (weights created; they do not depend on the image
        size). With
        ``model_config.compute_dtype="bfloat16"`` (or ``"float16"``) its
        layers compute in that type (Keras ``mixed_bfloat16`` /
        ``mixed_float16``: float32 weights, so checkpoints are
        interchangeable) and its outputs are float32.

    Raises:
        ValueError: unknown ``compute_dtype`` or backbone.
    """
    compute_dtype = check_choice("model.compute_dtype", getattr(model_config, "compute_dtype", "float32"))
    policy = _POLICIES[compute_dtype]
    if policy is None:
        return _build(model_config, loss_config, decode_config, data_config)
    # Layers take the global policy when they are created: set it for the
    # construction only.
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        return _build(model_config, loss_config, decode_config, data_config)
    finally:
        keras.config.set_dtype_policy(previous)


# model.compute_dtype -> Keras policy (None: the global one, float32 unless
# training set mixed precision).
_POLICIES = {"float32": None, "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


def _build(model_config, loss_config, decode_config, data_config):
    hg = model_config.hourglass()
    centernet = model_config.architecture == "centernet"
    use_centers = centernet and model_config.central_region
    data = data_config if data_config is not None else DataConfig()
    cls = CenterNetObjectDetector if centernet else CornerNetObjectDetector
    converter = CenterNetImageConverter(
        mean=data.mean, std=data.std, image_size=(data.input_size, data.input_size), name="image_converter"
    )
    return cls(
        backbone=HourglassBackbone(**hg, name="backbone"),
        num_classes=model_config.num_classes,
        preprocessor=CenterNetObjectDetectorPreprocessor(converter, name="preprocessor"),
        decoder=Decoder(decode_config, use_centers=use_centers, name="decoder"),
        centers=use_centers,
        cascade_corner_pooling=centernet and model_config.cascade_corner_pooling,
        center_pooling=model_config.center_pooling,
        heatmap_bias=model_config.heatmap_bias,
        pooling_impl=model_config.pooling_impl,
        loss_config=dataclasses.asdict(loss_config) if loss_config is not None else None,
        name=model_config.architecture,
    )


def count_trainable_parameters(model):
    """Number of trainable scalars (BN gamma/beta count, moving stats do not)."""
    return int(sum(int(tf.size(w)) for w in model.trainable_weights))


__all__ = [
    "BACKBONES",
    "CenterNet",
    "CenterNetObjectDetector",
    "CornerNet",
    "CornerNetObjectDetector",
    "KeypointDetector",
    "KeypointObjectDetector",
    "build_model",
    "count_trainable_parameters",
]
