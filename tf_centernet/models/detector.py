"""CornerNet and CenterNet detectors (docs/reference.md, "Architecture", "Losses").

`KeypointDetector.call` returns the raw head outputs as a dict;
`predict_step` (so `model.predict`) and `export` add the model's `Decoder`
layer and return detections. Training uses `model.fit`: `compute_loss`
implements the losses and reports each term as a metric (and so to
TensorBoard).
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

from tf_centernet import losses
from tf_centernet.config import BACKBONES, LossConfig
from tf_centernet.decode.decoder import Decoder
from tf_centernet.layers.convolution import AttributeConfig, ConvModule
from tf_centernet.layers.heads import HEATMAP_BIAS, PredictionHead
from tf_centernet.layers.hourglass import HourglassBackbone
from tf_centernet.layers.pooling import CascadeCornerPooling, CenterPooling, CornerPooling

LOSS_TERMS = ("focal_corner", "focal_center", "pull", "push", "offset_corner", "offset_center")


class _DecoderSlot:
    """Holds a detector's `Decoder` where Keras does not track it."""

    def __init__(self, decoder):
        self.decoder = decoder


@keras.saving.register_keras_serializable(package="tf_centernet")
class KeypointDetector(AttributeConfig, keras.Model):
    """Stacked-hourglass keypoint detector: CornerNet or CenterNet.

    Per stack: a top-left and a bottom-right pooling module (corner pooling,
    or cascade corner pooling for CenterNet), heads for heatmap, embedding
    and offset of each corner; CenterNet adds a center pooling module with
    center heatmap and offset heads (docs/reference.md §2-3).

    Args:
        num_classes: int. Object classes (no background channel).
        num_stacks, levels, widths, blocks, stem_channels: hourglass, see
            `tf_centernet.layers.hourglass.HourglassBackbone`.
        head_channels: int. Width of each stack's features and of the
            pooling modules (the releases' cnv_dim, 256).
        pool_channels: int. Width of the pooled branches (128).
        centers: bool. Predict center keypoints (CenterNet's central region
            exploration). Defaults to True.
        cascade_corner_pooling: bool. Cascade (True, CenterNet) or plain
            (False, CornerNet) corner pooling.
        center_pooling: bool. Center pooling (True) or a plain 3x3
            convolution module (False) before the center heads.
        heatmap_bias: float. Initial heatmap bias. Defaults to -2.19.
        pooling_impl: str. "scan", "auto" or "custom".
        loss_config: dict of `tf_centernet.config.LossConfig` fields, or
            None for the defaults.
        decoder: `tf_centernet.decode.Decoder`, its serialized config, or
            None for ``Decoder(DecodeConfig(), use_centers=centers)``. Run by
            `predict_step` and `export`; replace it with ``model.decoder =
            ...``.

    Call arguments:
        images: float (batch, height, width, 3), normalised; height and width
            ≡ 127 (mod 128) for the full hourglass (e.g. 511), more generally
            4 * 2**levels * k - 1 or 4 * 2**levels * k.
        training: bool.

    Returns:
        dict with keys ``tl_heatmap``, ``br_heatmap`` (batch, H/4, W/4,
        num_classes) logits; ``tl_embedding``, ``br_embedding`` (batch,
        H/4, W/4, 1); ``tl_offset``, ``br_offset`` (batch, H/4, W/4, 2) in
        output cells (x, y); with centers ``ct_heatmap`` and ``ct_offset``.
        All float32. With training=True each value is a list with one
        tensor per stack; otherwise the last stack's tensor.

    `model.predict(images)` instead returns the detections of `detect`.
    """

    CONFIG_KEYS = (
        "num_classes", "num_stacks", "levels", "widths", "blocks", "stem_channels", "head_channels",
        "pool_channels", "centers", "cascade_corner_pooling", "center_pooling", "heatmap_bias",
        "pooling_impl", "loss_config",
    )

    def __init__(
        self,
        num_classes=80,
        num_stacks=2,
        levels=5,
        widths=(256, 256, 384, 384, 384, 512),
        blocks=(2, 2, 2, 2, 2, 4),
        stem_channels=128,
        head_channels=256,
        pool_channels=128,
        centers=True,
        cascade_corner_pooling=True,
        center_pooling=True,
        heatmap_bias=HEATMAP_BIAS,
        pooling_impl="scan",
        loss_config=None,
        decoder=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._store(
            num_classes=num_classes, num_stacks=num_stacks, levels=levels, widths=list(widths),
            blocks=list(blocks), stem_channels=stem_channels, head_channels=head_channels,
            pool_channels=pool_channels, centers=centers, cascade_corner_pooling=cascade_corner_pooling,
            center_pooling=center_pooling, heatmap_bias=heatmap_bias, pooling_impl=pooling_impl,
            loss_config=dict(loss_config or {}),
        )
        self._loss_settings = LossConfig(**self.loss_config)

        self.backbone = HourglassBackbone(
            num_stacks, levels, widths, blocks, stem_channels, head_channels, name="backbone"
        )
        corner_cls = CascadeCornerPooling if cascade_corner_pooling else CornerPooling
        hidden = widths[0]  # the releases' head width is curr_dim = widths[0]
        self.stack_modules = []
        for s in range(num_stacks):
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
        self.decoder = decoder if decoder is not None else Decoder(use_centers=centers, name="decoder")

    @property
    def decoder(self):
        """The `Decoder` that `predict_step` and `export` run.

        Swap it by assignment (``model.decoder = Decoder(DecodeConfig(...))``);
        to change its settings assign a new one, as `predict` keeps its traced
        function until the decoder is replaced.
        """
        return self._decoder_slot.decoder

    def __setattr__(self, name, value):
        if name == "decoder":
            # Kept out of Keras' tracking: a decoder has no weights, and Keras
            # refuses new sub-layers once the model is built, which would
            # forbid swapping it. It is saved through `get_config`.
            if isinstance(value, dict):
                value = keras.saving.deserialize_keras_object(value)
            if not isinstance(value, Decoder):
                raise TypeError(f"decoder must be a tf_centernet.decode.Decoder, got {type(value).__name__}.")
            super().__setattr__("_decoder_slot", _DecoderSlot(value))
            # `predict` caches its traced function: retrace with the new decoder.
            if getattr(self, "predict_function", None) is not None:
                self.predict_function = None
            return
        super().__setattr__(name, value)

    @property
    def output_keys(self):
        """The keys of the output dict, in a fixed order."""
        keys = ["tl_heatmap", "br_heatmap", "tl_embedding", "br_embedding", "tl_offset", "br_offset"]
        if self.centers:
            keys += ["ct_heatmap", "ct_offset"]
        return keys

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

    def build(self, input_shape):
        """Builds every stack's layers (inference alone uses the last one)."""
        if self.built:
            return
        self.call(keras.KerasTensor(tuple(input_shape)), training=True)
        self.built = True

    def call(self, images, training=False):
        features = self.backbone(images, training=training)
        if not training:
            return self._heads(features[-1], self.stack_modules[-1], training)
        per_stack = [
            self._heads(f, m, training) for f, m in zip(features, self.stack_modules)
        ]
        return {key: [p[key] for p in per_stack] for key in self.output_keys}

    def detect(self, images):
        """Detections of normalised network inputs: network and `decoder`.

        With ``decoder.flip_test`` the horizontally flipped images run in the
        same batch (the releases' flip test); one scale, the input as given
        (multi-scale testing and original-image pixels: `Predictor`).

        Args:
            images: float tensor `(batch, H, W, 3)`, normalised like the
                training data (``(pixel / 255 - mean) / std``), sizes as for
                `call`.

        Returns:
            The `Decoder` dict: ``boxes`` float32 `(batch, N, 4)` ``[x1, y1,
            x2, y2]`` in input pixels, ``scores`` float32 `(batch, N)`,
            ``classes`` int32 `(batch, N)` (-1 past ``num_detections``),
            ``num_detections`` int32 `(batch,)`.
        """
        images = tf.convert_to_tensor(images, tf.float32)
        inputs = images
        if self.decoder.flip_test:
            inputs = tf.concat([images, tf.reverse(images, axis=[2])], axis=0)
        return self.decoder(self(inputs, training=False), images=images)

    def predict_step(self, data):
        """`model.predict`: the detections of `detect` for each batch."""
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self.detect(x)

    def export(self, filepath, format="tf_saved_model", verbose=None, input_signature=None, **kwargs):
        """Keras' export, with a ``serve`` endpoint that returns detections.

        For ``format="tf_saved_model"`` the SavedModel's ``serve`` (and
        ``serving_default``) signature takes ``images`` float32 `(batch, H,
        W, 3)` (normalised, as `detect`) and returns the `detect` dict;
        ``serve_heads`` returns the raw head outputs. Other formats: see
        `keras.Model.export` (raw head outputs). For uint8 images of any
        size in original-image pixels use `tf_centernet.export`.

        Args:
            filepath: str. SavedModel folder.
            format: str. Defaults to `"tf_saved_model"`.
            verbose: bool or None. Print a summary of the endpoints.
            input_signature: list of one `tf.TensorSpec` or None. Defaults
                to ``(None, None, None, 3)`` float32.
            **kwargs: passed to `keras.Model.export` for other formats.
        """
        if format != "tf_saved_model":
            return super().export(filepath, format=format, verbose=verbose,
                                  input_signature=input_signature, **kwargs)
        from keras.export import ExportArchive

        spec = input_signature or [tf.TensorSpec([None, None, None, 3], tf.float32, name="images")]
        archive = ExportArchive()
        archive.track(self)
        archive.add_endpoint("serve", self.detect, input_signature=spec)
        archive.add_endpoint("serve_heads", lambda images: self(images, training=False), input_signature=spec)
        archive.write_out(filepath, verbose=bool(verbose))
        return filepath

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

    def get_config(self):
        config = super().get_config()
        config["decoder"] = keras.saving.serialize_keras_object(self.decoder)
        return config


@keras.saving.register_keras_serializable(package="tf_centernet")
class CornerNet(KeypointDetector):
    """CornerNet (Law & Deng, 2018): corner pooling, no center keypoints.

    A `KeypointDetector` with ``centers=False`` and
    ``cascade_corner_pooling=False`` by default; see it for the arguments.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("centers", False)
        kwargs.setdefault("cascade_corner_pooling", False)
        super().__init__(**kwargs)


@keras.saving.register_keras_serializable(package="tf_centernet")
class CenterNet(KeypointDetector):
    """CenterNet: Keypoint Triplets (Duan et al., 2019).

    Cascade corner pooling, center pooling and center keypoints (central
    region exploration) by default; each is a switch for the paper's
    ablation (Table 4). See `KeypointDetector` for the arguments.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("centers", True)
        kwargs.setdefault("cascade_corner_pooling", True)
        kwargs.setdefault("center_pooling", True)
        super().__init__(**kwargs)


def build_model(model_config, loss_config=None, decode_config=None):
    """A `KeypointDetector` from a `tf_centernet.config.ModelConfig`.

    Args:
        model_config: `ModelConfig`.
        loss_config: `LossConfig` or None.
        decode_config: `DecodeConfig` or None. Configures the model's
            `Decoder` (`model.predict`).

    Returns:
        An unbuilt `CenterNet` or `CornerNet` (call it once or `build` it).
        With ``model_config.compute_dtype="bfloat16"`` its layers compute in
        bfloat16 (Keras ``mixed_bfloat16``: float32 weights, so checkpoints
        are interchangeable) and its outputs are float32.

    Raises:
        ValueError: unknown ``compute_dtype``.
    """
    compute_dtype = getattr(model_config, "compute_dtype", "float32")
    if compute_dtype not in _POLICIES:
        raise ValueError(
            f"model.compute_dtype must be one of {sorted(_POLICIES)}, got {compute_dtype!r}."
        )
    policy = _POLICIES[compute_dtype]
    if policy is None:
        return _build(model_config, loss_config, decode_config)
    # Layers take the global policy when they are created: set it for the
    # construction only.
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        return _build(model_config, loss_config, decode_config)
    finally:
        keras.config.set_dtype_policy(previous)


# model.compute_dtype -> Keras policy (None: the global one, float32 unless
# training set mixed precision).
_POLICIES = {"float32": None, "bfloat16": "mixed_bfloat16"}


def _build(model_config, loss_config, decode_config):
    hg = model_config.hourglass()
    centernet = model_config.architecture == "centernet"
    cls = CenterNet if centernet else CornerNet
    return cls(
        num_classes=model_config.num_classes,
        num_stacks=hg["num_stacks"],
        levels=hg["levels"],
        widths=hg["widths"],
        blocks=hg["blocks"],
        stem_channels=hg["stem_channels"],
        head_channels=hg["head_channels"],
        pool_channels=hg["pool_channels"],
        centers=centernet and model_config.central_region,
        cascade_corner_pooling=centernet and model_config.cascade_corner_pooling,
        center_pooling=model_config.center_pooling,
        heatmap_bias=model_config.heatmap_bias,
        pooling_impl=model_config.pooling_impl,
        loss_config=dataclasses.asdict(loss_config) if loss_config is not None else None,
        decoder=Decoder(decode_config, use_centers=centernet and model_config.central_region, name="decoder"),
        name=model_config.architecture,
    )


def count_trainable_parameters(model):
    """Number of trainable scalars (BN gamma/beta count, moving stats do not)."""
    return int(sum(int(tf.size(w)) for w in model.trainable_weights))


__all__ = [
    "BACKBONES",
    "CenterNet",
    "CornerNet",
    "KeypointDetector",
    "build_model",
    "count_trainable_parameters",
]
