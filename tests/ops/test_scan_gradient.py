"""The pure-TF scans' custom gradient (docs/reference.md §2, tie rule).

`tf_centernet.ops.pooling.scan_gradient` replaces differentiating the scan's
steps: it must equal the brute-force NumPy reference (gradient to the tied
position nearest the scan start) and the compiled op's gradient, with ties,
NaNs, 16-bit dtypes, dynamic shapes and under XLA.
"""

import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from support.pooling_reference import brute_force_grad
from tf_centernet.ops import custom, pooling

DIRECTIONS = ["top", "left", "bottom", "right"]
SHAPES = [(2, 7, 5, 3), (1, 1, 6, 2), (1, 9, 1, 1), (1, 8, 16, 2), (1, 33, 17, 2)]


def _have_custom_ops():
    if not shutil.which(os.environ.get("CXX", "g++")):
        return False
    try:
        custom.load()
        return True
    except custom.CustomOpsUnavailable:
        return False


def gradient(x, upstream, direction, impl="scan", jit=False, dynamic=False):
    def both(t, g):
        with tf.GradientTape() as tape:
            tape.watch(t)
            y = pooling.directional_pool(t, direction, impl=impl)
        return tape.gradient(y, t, output_gradients=g)

    spec = tf.TensorSpec([None] * 4, x.dtype) if dynamic else None
    fn = tf.function(both, jit_compile=jit, input_signature=[spec, spec] if dynamic else None)
    return fn(tf.constant(x), tf.constant(upstream)).numpy()


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("shape", SHAPES)
def test_gradient_with_ties_equals_brute_force_and_compiled_op(direction, shape):
    rng = np.random.default_rng(11)
    x = rng.integers(-2, 2, size=shape).astype(np.float32)  # many ties
    upstream = rng.normal(size=shape).astype(np.float32)
    expected = brute_force_grad(x, upstream, direction)
    for kwargs in ({}, {"jit": True}, {"dynamic": True}):
        np.testing.assert_allclose(
            gradient(x, upstream, direction, **kwargs), expected, rtol=1e-5, atol=1e-5, err_msg=str(kwargs)
        )
    if _have_custom_ops():
        np.testing.assert_allclose(
            gradient(x, upstream, direction, "custom"), gradient(x, upstream, direction), rtol=1e-5, atol=1e-5
        )


def test_hand_example_ties_go_to_the_scan_start():
    # Column 4, 7, 7, 2, 7 (top to bottom), upstream ones.
    x = np.array([4, 7, 7, 2, 7], np.float32).reshape(1, 5, 1, 1)
    ones = np.ones_like(x)
    # Top pooling scans from the bottom: outputs 7,7,7,7,7 all take the last 7.
    np.testing.assert_array_equal(gradient(x, ones, "top").ravel(), [0, 0, 0, 0, 5])
    # Bottom pooling scans from the top: 4 | 7,7,7,7 from the first 7.
    np.testing.assert_array_equal(gradient(x, ones, "bottom").ravel(), [1, 4, 0, 0, 0])


def test_nan_runs_send_their_gradient_to_the_first_nan():
    # Not under an outer XLA function: XLA's CPU max need not propagate NaN
    # in the forward scan itself.
    jit = False
    x = np.array([1.0, np.nan, 3.0, 2.0, np.nan, 0.5], np.float32).reshape(1, 6, 1, 1)
    ones = np.ones_like(x)
    # The compiled op's behaviour (tests/ops/test_custom_ops.py).
    np.testing.assert_array_equal(gradient(x, ones, "bottom", jit=jit).ravel(), [1, 5, 0, 0, 0, 0])
    np.testing.assert_array_equal(gradient(x, ones, "top", jit=jit).ravel(), [0, 0, 0, 0, 5, 1])
    np.testing.assert_array_equal(
        gradient(x.reshape(1, 1, 6, 1), ones.reshape(1, 1, 6, 1), "right", dynamic=True).ravel(), [1, 5, 0, 0, 0, 0]
    )


def test_infinities_and_constant_lines():
    x = np.array([[-np.inf, -np.inf, -np.inf], [np.inf, 1.0, np.inf]], np.float32).reshape(1, 2, 3, 1)
    upstream = np.arange(1, 7, dtype=np.float32).reshape(x.shape)
    for direction in DIRECTIONS:
        np.testing.assert_array_equal(
            gradient(x, upstream, direction), brute_force_grad(x, upstream, direction), err_msg=direction
        )


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16, tf.float64])
@pytest.mark.parametrize("direction", ["top", "right"])
def test_other_dtypes(dtype, direction):
    rng = np.random.default_rng(12)
    x = tf.cast(rng.integers(-3, 3, size=(2, 9, 6, 3)), dtype)
    upstream = tf.cast(rng.normal(size=(2, 9, 6, 3)), dtype)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = pooling.directional_pool(x, direction)
    dx = tape.gradient(y, x, output_gradients=upstream)
    assert dx.dtype == dtype
    expected = brute_force_grad(
        tf.cast(x, tf.float64).numpy(), tf.cast(upstream, tf.float64).numpy(), direction
    )
    tol = 1e-12 if dtype == tf.float64 else 2e-2  # 16-bit: float32 sums, one rounding
    np.testing.assert_allclose(tf.cast(dx, tf.float64).numpy(), expected, rtol=tol, atol=tol)


def test_scan_gradient_function_directly_and_graph_size():
    rng = np.random.default_rng(13)
    x = rng.integers(0, 4, size=(1, 6, 4, 2)).astype(np.float32)
    upstream = rng.normal(size=x.shape).astype(np.float32)
    y = pooling.top_pool(tf.constant(x))
    got = pooling.scan_gradient(y, tf.constant(upstream), axis=1, toward_end=True)
    np.testing.assert_allclose(got.numpy(), brute_force_grad(x, upstream, "top"), atol=1e-6)
    # The backward graph does not differentiate the scan's steps: no Maximum
    # gradient (GreaterEqual/Select chains) appears in it.
    fn = tf.function(lambda t: tf.gradients(pooling.top_pool(t), t)[0])
    types = [op.type for op in fn.get_concrete_function(tf.constant(x)).graph.get_operations()]
    assert "GreaterEqual" not in types
