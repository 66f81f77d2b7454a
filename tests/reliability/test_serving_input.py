"""Malformed serving input: a clear error naming the input and its spec, never a crash deep in the graph.

A serving runtime (TF Serving's REST and gRPC front ends) feeds whatever
tensor a client sends to the signature's graph; Python callers are stopped
earlier by the signature's own spec. These tests run the signature bodies
with an open input spec, as such a runtime does, and assert the message of
the in-graph checks (docs/serving.md, "Errors").
"""

import pytest
import tensorflow as tf

from support.tiny import TINY_MODEL
from tf_centernet.config import load_config
from tf_centernet.export import DetectionModule
from tf_centernet.models import build_model


@pytest.fixture(scope="module")
def module():
    config = load_config("demo", ["model.num_classes=1", "decode.flip_test=false", *TINY_MODEL])
    return DetectionModule(build_model(config.model, decode_config=config.decode))


def open_spec(fn, dtype):
    """The signature body with any-shape input, as a serving runtime feeds it."""
    return tf.function(fn, input_signature=[tf.TensorSpec(None, dtype)])


@pytest.mark.parametrize("shape,expected", [
    ([640, 3], "must be uint8 (batch, height, width, 3)"),
    ([1, 40, 60, 4], "must have 3 channels"),
])
def test_bad_images_name_the_input_and_its_spec(module, shape, expected):
    serve = open_spec(module._serve, tf.uint8)
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        serve(tf.zeros(shape, tf.uint8))
    message = error.value.message
    assert "serving_default: input images must" in message and expected in message


def test_a_scalar_string_names_the_input(module):
    serve_bytes = open_spec(module._serve_bytes, tf.string)
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        serve_bytes(tf.constant(b"not a batch"))
    assert "serving_bytes: input image_bytes must be a string vector (batch,)" in error.value.message


def test_good_input_still_serves(module):
    out = open_spec(module._serve, tf.uint8)(tf.zeros([2, 40, 60, 3], tf.uint8))
    assert out["detection_boxes"].shape == (2, 100, 4)
    # The signature itself keeps its declared spec (what TF Serving's metadata shows).
    spec = module.serve.get_concrete_function().structured_input_signature[0][0]
    assert spec.shape.as_list() == [None, None, None, 3] and spec.dtype == tf.uint8
