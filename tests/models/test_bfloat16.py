"""Opt-in bfloat16 compute (``model.compute_dtype``): float32 weights and heads."""

import dataclasses

import keras
import numpy as np
import pytest

from tf_centernet.config import load_config
from tf_centernet.models.presets import build_model


def _models():
    config = load_config("demo", ["model.num_stacks=1", "model.pooling_impl=scan"])
    keras.utils.set_random_seed(5)
    reference = build_model(config.model)
    reference.build((None, 63, 63, 3))
    bf16 = build_model(dataclasses.replace(config.model, compute_dtype="bfloat16"))
    bf16.build((None, 63, 63, 3))
    return reference, bf16


def test_bfloat16_computes_in_bf16_with_float32_weights_and_heads():
    reference, bf16 = _models()
    assert keras.config.dtype_policy().name == "float32"  # restored after the build
    # Every variable float32: checkpoints are interchangeable.
    assert {w.dtype for w in bf16.weights} == {"float32"}
    bf16.set_weights(reference.get_weights())
    compute = {layer.compute_dtype for layer in bf16._flatten_layers() if layer.weights}
    assert compute == {"bfloat16"}, compute  # also the skip convolutions made in build()
    image = np.random.default_rng(0).normal(size=(2, 63, 63, 3)).astype(np.float32)
    full = reference(image, training=False)
    half = bf16(image, training=False)
    for key, value in full.items():
        got = half[key].numpy()
        assert got.dtype == np.float32, key
        scale = np.abs(value.numpy()).max()
        difference = np.abs(got - value.numpy()).max()
        # bf16 keeps 8 significant bits (relative step 2**-8 = 0.4%); over
        # the small network the heads stay within a few percent of their range.
        assert 0 < difference < 0.1 * scale + 0.05, (key, difference, scale)


def test_unknown_compute_dtype():
    config = load_config("demo", [])
    with pytest.raises(ValueError, match="compute_dtype"):
        build_model(dataclasses.replace(config.model, compute_dtype="float8"))
