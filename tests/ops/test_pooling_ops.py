"""Directional pooling scans against brute-force NumPy (docs/reference.md §2)."""

import numpy as np
import pytest
import tensorflow as tf

from support.pooling_reference import brute_force, brute_force_grad
from tf_centernet.ops import pooling

DIRECTIONS = ["top", "left", "bottom", "right"]


def scan_grad(x, upstream, direction):
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = pooling.directional_pool(xt, direction)
    return tape.gradient(y, xt, output_gradients=tf.constant(upstream)).numpy()


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("shape", [(2, 7, 5, 3), (1, 1, 6, 2), (1, 9, 1, 1), (1, 8, 16, 2)])
def test_forward_matches_brute_force(direction, shape):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype(np.float32) - 3.0  # mostly negative
    got = pooling.directional_pool(tf.constant(x), direction).numpy()
    np.testing.assert_array_equal(got, brute_force(x, direction))


def test_hand_example_top_and_left():
    # A 3x3 single-channel map; top pooling looks down, left looks right.
    x = np.array([[1, 5, 2], [4, 0, 3], [2, 6, 1]], np.float32)[None, :, :, None]
    top = pooling.top_pool(x).numpy()[0, :, :, 0]
    left = pooling.left_pool(x).numpy()[0, :, :, 0]
    bottom = pooling.bottom_pool(x).numpy()[0, :, :, 0]
    right = pooling.right_pool(x).numpy()[0, :, :, 0]
    np.testing.assert_array_equal(top, [[4, 6, 3], [4, 6, 3], [2, 6, 1]])
    np.testing.assert_array_equal(left, [[5, 5, 2], [4, 3, 3], [6, 6, 1]])
    np.testing.assert_array_equal(bottom, [[1, 5, 2], [4, 5, 3], [4, 6, 3]])
    np.testing.assert_array_equal(right, [[1, 5, 5], [4, 4, 4], [2, 6, 6]])


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_gradient_goes_to_argmax_with_ties(direction):
    rng = np.random.default_rng(1)
    # Small integers: many ties.
    x = rng.integers(-2, 2, size=(2, 6, 7, 2)).astype(np.float32)
    upstream = rng.normal(size=x.shape).astype(np.float32)
    np.testing.assert_allclose(
        scan_grad(x, upstream, direction), brute_force_grad(x, upstream, direction), rtol=0, atol=1e-6
    )


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_numeric_gradient(direction):
    rng = np.random.default_rng(2)
    # Distinct values 0.1 apart: finite differences never cross a tie.
    x = tf.constant(rng.permutation(40).reshape(1, 4, 5, 2) * 0.1 - 2.0, tf.float64)
    theoretical, numerical = tf.test.compute_gradient(
        lambda t: pooling.directional_pool(t, direction), [x]
    )
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-6)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16, tf.float32])
def test_dtypes_and_modes(dtype):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 9, 6, 3)).astype(np.float32)
    expected = brute_force(x, "top")
    xt = tf.cast(tf.constant(x), dtype)
    ref = brute_force(tf.cast(xt, tf.float32).numpy(), "top")  # same rounding
    eager = pooling.top_pool(xt)
    graph = tf.function(pooling.top_pool)(xt)
    xla = tf.function(pooling.top_pool, jit_compile=True)(xt)
    for out in (eager, graph, xla):
        assert out.dtype == dtype
        np.testing.assert_array_equal(tf.cast(out, tf.float32).numpy(), ref)
    np.testing.assert_allclose(ref, expected, atol=0.02, rtol=0.02)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_dynamic_shapes_match_static(direction):
    rng = np.random.default_rng(4)
    x = rng.integers(-3, 3, size=(1, 5, 11, 2)).astype(np.float32)
    upstream = rng.normal(size=x.shape).astype(np.float32)
    fn = tf.function(
        lambda t, g: tf.gradients(pooling.directional_pool(t, direction), t, g)[0],
        input_signature=[tf.TensorSpec([None, None, None, None]), tf.TensorSpec([None, None, None, None])],
    )
    fwd = tf.function(
        lambda t: pooling.directional_pool(t, direction),
        input_signature=[tf.TensorSpec([None, None, None, 2])],
    )
    np.testing.assert_array_equal(fwd(x).numpy(), brute_force(x, direction))
    np.testing.assert_allclose(fn(x, upstream).numpy(), brute_force_grad(x, upstream, direction), atol=1e-6)


def test_center_pooling_composition_is_row_and_column_max():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(1, 5, 4, 1)).astype(np.float32)
    col = pooling.column_max(x).numpy()
    row = pooling.row_max(x).numpy()
    np.testing.assert_array_equal(col, np.broadcast_to(x.max(axis=1, keepdims=True), x.shape))
    np.testing.assert_array_equal(row, np.broadcast_to(x.max(axis=2, keepdims=True), x.shape))


def test_errors():
    with pytest.raises(ValueError, match="direction"):
        pooling.directional_pool(tf.zeros([1, 2, 2, 1]), "up")
    with pytest.raises(ValueError, match="rank 4"):
        pooling.top_pool(tf.zeros([2, 2, 1]))
    with pytest.raises(ValueError, match="impl"):
        pooling.top_pool(tf.zeros([1, 2, 2, 1]), impl="fast")
