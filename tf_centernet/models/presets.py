"""Detectors from configuration sections (`build_model`) and from keras-hub preset folders (`load_preset`).

`build_model` turns the ``model``, ``loss``, ``decode`` and ``data``
sections of a `tf_centernet.config.Config` into a
`CenterNetObjectDetector` or `CornerNetObjectDetector` (the named
configurations in ``configs/`` are such sections). `load_preset` is
``KeypointObjectDetector.from_preset``: a folder that ``save_to_preset``
or ``tf-centernet convert`` wrote (``config.json``, ``task.json``,
``model.weights.h5``, ...), keras-hub's layout.
"""

from __future__ import annotations

import dataclasses
import json
import os

import keras
import tensorflow as tf

from tf_centernet.config import DataConfig, check_choice
from tf_centernet.decode.decoder import Decoder
from tf_centernet.models.backbone import HourglassBackbone
from tf_centernet.models.object_detector import CenterNetObjectDetector, CornerNetObjectDetector
from tf_centernet.models.preprocessor import CenterNetImageConverter, CenterNetObjectDetectorPreprocessor

__all__ = ["build_model", "count_trainable_parameters", "load_preset"]


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


def load_preset(cls, preset, load_weights=True, **kwargs):
    """The detector of a keras-hub preset directory (`save_to_preset`, `tf-centernet convert`).

    Args:
        cls: the detector class asked for (`KeypointObjectDetector` or a
            subclass); the preset's detector must be one.
        preset: str. A preset folder (``config.json``, ``task.json``,
            ``model.weights.h5``, ...).
        load_weights: bool. Load the saved weights. Defaults to True.
        **kwargs: constructor overrides (e.g. ``pooling_impl``).

    Returns:
        A built detector of the class ``task.json`` names.

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
