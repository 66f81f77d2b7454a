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

import keras
from keras_hub.models import ObjectDetector

from tf_centernet.config import BACKBONES, LossConfig
from tf_centernet.decode.decoder import Decoder
from tf_centernet.layers.convolution import ConvModule
from tf_centernet.layers.heads import HEATMAP_BIAS, PredictionHead
from tf_centernet.layers.pooling import CascadeCornerPooling, CenterPooling, CornerPooling
from tf_centernet.models.backbone import HourglassBackbone
from tf_centernet.models.detection import DetectionMixin
from tf_centernet.models.preprocessor import CenterNetImageConverter, CenterNetObjectDetectorPreprocessor
from tf_centernet.models.training_hooks import LOSS_TERMS, TrainingMixin

# Hourglass arguments of the flat constructor of earlier releases (and of their .keras files).
_LEGACY_BACKBONE_KEYS = ("num_stacks", "levels", "widths", "blocks", "stem_channels", "head_channels",
                         "pool_channels")


@keras.saving.register_keras_serializable(package="tf_centernet")
class KeypointObjectDetector(DetectionMixin, TrainingMixin, ObjectDetector):
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

    # -------------------------------------------------------------- training
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
        """The detector of a keras-hub preset directory: `tf_centernet.models.presets.load_preset`."""
        from tf_centernet.models.presets import load_preset  # presets builds on this module

        return load_preset(cls, preset, load_weights, **kwargs)


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


__all__ = [
    "CenterNet",
    "CenterNetObjectDetector",
    "CornerNet",
    "CornerNetObjectDetector",
    "KeypointDetector",
    "KeypointObjectDetector",
]
