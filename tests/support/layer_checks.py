"""Checks every Keras layer of the package must pass, shared by the layer tests.

`check_layer` runs the three generic properties of a layer: its output
shapes, its number of trainable variables (the caller derives the expected
count from the layer's structure), and a serialization round trip: the
config survives JSON, rebuilds an equal layer, and with the same weights the
rebuilt layer computes the same outputs.
"""

import json

import keras
import numpy as np


def _flatten(structure):
    if isinstance(structure, dict):
        return [value for key in sorted(structure) for value in _flatten(structure[key])]
    if isinstance(structure, (list, tuple)) and not (
        structure and all(isinstance(v, (int, type(None))) for v in structure)
    ):
        return [value for item in structure for value in _flatten(item)]
    return [structure]


def check_layer(layer, args, expected_shapes, trainable_variables, call_kwargs=None, atol=1e-6):
    """Runs the shared layer checks; returns the layer's outputs.

    Args:
        layer: a `keras.layers.Layer`, not yet called.
        args: tuple of positional call arguments (NumPy arrays or tensors).
        expected_shapes: the output shapes, in the structure of the outputs
            (a tuple for one tensor, a dict of tuples for a dict).
        trainable_variables: int. Expected ``len(layer.trainable_variables)``.
        call_kwargs: dict of keyword call arguments (e.g. ``training``).
        atol: float. Tolerance of the round-trip comparison.
    """
    call_kwargs = dict(call_kwargs or {})
    outputs = layer(*args, **call_kwargs)
    got_shapes = [tuple(np.shape(o)) for o in _flatten(outputs)]
    want_shapes = [tuple(s) for s in _flatten(expected_shapes)]
    assert got_shapes == want_shapes, f"{layer.name}: output shapes {got_shapes} != {want_shapes}"
    assert len(layer.trainable_variables) == trainable_variables, (
        f"{layer.name}: {len(layer.trainable_variables)} trainable variables, "
        f"expected {trainable_variables}"
    )

    serialized = json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
    clone = keras.saving.deserialize_keras_object(serialized)
    assert type(clone) is type(layer)
    assert clone.get_config() == layer.get_config()
    clone(*args, **call_kwargs)  # builds it
    clone.set_weights(layer.get_weights())
    again = clone(*args, **call_kwargs)
    for got, want in zip(_flatten(again), _flatten(outputs)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=atol)
    return outputs
