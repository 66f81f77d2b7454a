"""The compiled directional-pooling ops against the scans and NumPy.

docs/reference.md §2. The first test to need the library builds it into the cache
(`tf_centernet.ops.custom`; about 15-30 s once, reused afterwards). Values
must equal the scan and the brute force exactly; gradients equal up to the
order in which float sums are taken. Tie rule (both implementations): the
gradient of a tied maximum goes to the tied position nearest the scan start.
"""

import os
import subprocess
import warnings

import numpy as np
import pytest
import tensorflow as tf

from support.pooling_reference import brute_force, brute_force_grad
from support.saved_ops import saved_op_types
from tf_centernet.ops import custom, pooling

DIRECTIONS = ["top", "left", "bottom", "right"]
# Odd sizes, size-1 axes, and rows split into several CPU work blocks.
SHAPES = [(2, 7, 5, 3), (1, 1, 6, 2), (1, 9, 1, 1), (1, 8, 16, 2), (2, 3, 5, 1700)]


@pytest.fixture(scope="module", autouse=True)
def library(compiled_ops):
    """Builds (or reuses) and loads the op library; fails with the compiler output."""
    return compiled_ops


def pool(x, direction, impl):
    return pooling.directional_pool(tf.constant(x), direction, impl=impl).numpy()


def grad(x, upstream, direction, impl):
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = pooling.directional_pool(xt, direction, impl=impl)
    return tape.gradient(y, xt, output_gradients=tf.constant(upstream)).numpy()


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_equals_scan_and_brute_force(direction, shape):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype(np.float32) - 3.0  # mostly negative
    got = pool(x, direction, "custom")
    np.testing.assert_array_equal(got, brute_force(x, direction))
    np.testing.assert_array_equal(got, pool(x, direction, "scan"))


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("shape", [(2, 6, 7, 2), (1, 1, 5, 3), (1, 7, 1, 1), (1, 4, 3, 1300)])
def test_gradient_with_ties_equals_scan_and_brute_force(direction, shape):
    rng = np.random.default_rng(1)
    x = rng.integers(-2, 2, size=shape).astype(np.float32)  # many ties
    upstream = rng.normal(size=shape).astype(np.float32)
    got = grad(x, upstream, direction, "custom")
    np.testing.assert_allclose(got, brute_force_grad(x, upstream, direction), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, grad(x, upstream, direction, "scan"), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_numeric_gradient_eager_and_graph(direction):
    rng = np.random.default_rng(2)
    # Distinct values 0.1 apart: finite differences never cross a tie.
    x = tf.constant(rng.permutation(60).reshape(1, 5, 4, 3) * 0.1 - 3.0, tf.float64)

    def fn(t):
        return pooling.directional_pool(t, direction, impl="custom")

    for f in (fn, tf.function(fn)):
        theoretical, numerical = tf.test.compute_gradient(f, [x])
        np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-6)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_eager_graph_and_dynamic_shapes_agree(direction):
    rng = np.random.default_rng(3)
    x = rng.integers(-3, 3, size=(2, 5, 11, 3)).astype(np.float32)
    upstream = rng.normal(size=x.shape).astype(np.float32)

    def both(t, g):
        with tf.GradientTape() as tape:
            tape.watch(t)
            y = pooling.directional_pool(t, direction, impl="custom")
        return y, tape.gradient(y, t, output_gradients=g)

    spec = tf.TensorSpec([None, None, None, None], tf.float32)
    expected = (brute_force(x, direction), brute_force_grad(x, upstream, direction))
    for f in (both, tf.function(both), tf.function(both, input_signature=[spec, spec])):
        y, dx = f(tf.constant(x), tf.constant(upstream))
        np.testing.assert_array_equal(y.numpy(), expected[0])
        np.testing.assert_allclose(dx.numpy(), expected[1], atol=1e-5)
    graph = tf.function(both).get_concrete_function(tf.constant(x), tf.constant(upstream)).graph
    types = {op.type for op in graph.get_operations()}
    assert {custom.OP_TYPE, custom.GRAD_OP_TYPE} <= types


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_half_precision(dtype, direction):
    rng = np.random.default_rng(4)
    x16 = tf.cast(tf.constant(rng.normal(size=(2, 9, 6, 3)).astype(np.float32)), dtype)
    x = tf.cast(x16, tf.float32).numpy()  # the rounded values
    upstream = rng.normal(size=x.shape).astype(np.float32)
    with tf.GradientTape() as tape:
        tape.watch(x16)
        y = pooling.directional_pool(x16, direction, impl="custom")
    dx = tape.gradient(y, x16, output_gradients=tf.cast(upstream, dtype))
    assert y.dtype == dtype and dx.dtype == dtype
    np.testing.assert_array_equal(tf.cast(y, tf.float32).numpy(), brute_force(x, direction))
    np.testing.assert_array_equal(
        tf.cast(y, tf.float32).numpy(), tf.cast(pooling.directional_pool(x16, direction, "scan"), tf.float32).numpy()
    )
    # Sums are taken in float32 and rounded once.
    rounded_upstream = tf.cast(tf.cast(upstream, dtype), tf.float32).numpy()
    tol = 1e-2 if dtype == tf.float16 else 5e-2
    np.testing.assert_allclose(
        tf.cast(dx, tf.float32).numpy(), brute_force_grad(x, rounded_upstream, direction), rtol=tol, atol=tol
    )


def test_nan_propagates_like_the_scan():
    x = np.array([1.0, np.nan, 3.0, 2.0, np.nan, 0.5], np.float32).reshape(1, 6, 1, 1)
    for direction in ("top", "bottom"):
        np.testing.assert_array_equal(pool(x, direction, "custom"), pool(x, direction, "scan"))
    upstream = np.ones_like(x)
    # All the gradient of the NaN outputs goes to the first NaN scanned.
    np.testing.assert_array_equal(grad(x, upstream, "bottom", "custom").ravel(), [1, 5, 0, 0, 0, 0])
    np.testing.assert_array_equal(grad(x, upstream, "top", "custom").ravel(), [0, 0, 0, 0, 5, 1])


def test_empty_and_other_ranks():
    assert pool(np.zeros((0, 4, 4, 2), np.float32), "top", "custom").shape == (0, 4, 4, 2)
    assert pool(np.zeros((1, 0, 4, 2), np.float32), "left", "custom").shape == (1, 0, 4, 2)
    # The op itself takes any rank and axis.
    y = custom.directional_pool(tf.constant([3.0, 1.0, 4.0, 1.0, 5.0]), axis=0, reverse=False)
    np.testing.assert_array_equal(y.numpy(), [3, 3, 4, 4, 5])
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match="axis"):
        custom.directional_pool(tf.zeros([2, 3]), axis=2, reverse=False)


def test_auto_uses_custom_except_under_xla_export_and_scan_only(tmp_path):
    x = tf.zeros([1, 4, 4, 2])

    def op_types(fn, **kwargs):
        return {op.type for op in tf.function(fn, **kwargs).get_concrete_function(x).graph.get_operations()}

    assert pooling.resolve_impl("auto") == "custom"
    assert custom.OP_TYPE in op_types(lambda t: pooling.top_pool(t, impl="auto"))
    assert pooling.resolve_impl("auto", tf.int32) == "scan"
    with pooling.scan_only():
        assert pooling.resolve_impl("auto") == "scan"
        assert pooling.resolve_impl("custom") == "custom"  # asked for explicitly
    # XLA cannot compile the op: "auto" takes the scan, "custom" says why.
    xla = tf.function(lambda t: pooling.top_pool(t, impl="auto"), jit_compile=True)
    np.testing.assert_array_equal(xla(tf.ones([1, 3, 2, 1])).numpy(), np.ones([1, 3, 2, 1]))
    with pytest.raises(ValueError, match="XLA"):
        tf.function(lambda t: pooling.top_pool(t, impl="custom"), jit_compile=True)(x)
    # A SavedModel traced with "auto" holds only standard ops.
    module = tf.Module()
    module.f = tf.function(lambda t: pooling.left_pool(t, impl="auto"), input_signature=[tf.TensorSpec([None, 4, 4, 2])])
    tf.saved_model.save(module, str(tmp_path / "saved"))
    saved = tf.saved_model.load(str(tmp_path / "saved"))
    assert custom.OP_TYPE not in saved_op_types(saved.f)


def test_fallback_warns_once_and_custom_raises(monkeypatch):
    monkeypatch.setitem(custom._state, "library", None)
    monkeypatch.setitem(custom._state, "error", "simulated: the library failed to load.")
    monkeypatch.setitem(custom._state, "warned", set())
    x = np.random.default_rng(5).normal(size=(1, 5, 4, 2)).astype(np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = pool(x, "top", "auto")
        second = pool(x, "left", "auto")
    fallback = [w for w in caught if issubclass(w.category, custom.CustomOpsFallbackWarning)]
    assert len(fallback) == 1 and "simulated" in str(fallback[0].message)
    np.testing.assert_array_equal(first, brute_force(x, "top"))
    np.testing.assert_array_equal(second, brute_force(x, "left"))
    with pytest.raises(custom.CustomOpsUnavailable, match="simulated"):
        pooling.top_pool(x, impl="custom")


def test_training_losses_match_scan(synthetic_coco, monkeypatch):
    """A few Adam steps of the small model: the same losses with either pooling.

    Same initial weights and the same batches for both runs (taken once from
    the training pipeline), as `tf_centernet.training.train` compiles the
    model. The first loss is bit-identical (the forward values are); later
    ones differ only through the float summation order of the gradients.
    """
    import dataclasses

    import keras

    from support.tiny import TINY_MODEL
    from tf_centernet.config import load_config
    from tf_centernet.data import CocoDataset, build_train_dataset
    from tf_centernet.models.presets import build_model
    from tf_centernet.training.optimizer import learning_rate_schedule

    image_dir, annotation_file = synthetic_coco
    # The tiny model (tests/tiny.py) at 63x63 keeps the test short.
    config = load_config(
        "demo",
        [
            f"train_data.images={image_dir}",
            f"train_data.annotations={annotation_file}",
            *TINY_MODEL,
            "data.input_size=63",
            "train.batch_size=2",
        ],
    )
    batches = list(build_train_dataset(CocoDataset(annotation_file, image_dir), config).take(3))
    calls = []
    original = custom.directional_pool
    monkeypatch.setattr(custom, "directional_pool", lambda *a, **k: calls.append(1) or original(*a, **k))
    losses = {}
    for impl in ("scan", "custom"):
        keras.utils.set_random_seed(config.train.seed)
        model = build_model(dataclasses.replace(config.model, pooling_impl=impl), config.loss)
        size = config.data.input_size
        model.build((None, size, size, 3))
        model.compile(optimizer=keras.optimizers.Adam(learning_rate_schedule(config.train)), jit_compile=False)
        history = [model.train_on_batch(x, y, return_dict=True) for x, y in batches]
        losses[impl] = {key: np.array([float(step[key]) for step in history]) for key in history[0]}
        assert (len(calls) > 0) == (impl == "custom")  # the compiled op was used
    assert {"loss", "focal_corner", "pull", "push"} <= set(losses["scan"])
    for key, values in losses["scan"].items():
        np.testing.assert_allclose(losses["custom"][key][0], values[0], rtol=1e-6, atol=1e-7, err_msg=key)
        # Gradients agree to a few 1e-6 relative; Adam's normalised step
        # amplifies that in near-zero gradient entries, and the amplification
        # compounds: about 1e-6 at step 2 and 1e-4 to 1.2e-3 at step 3 (the
        # latter with two test processes sharing the CPU, which changes the
        # float summation order of the multi-threaded reductions).
        np.testing.assert_allclose(losses["custom"][key][1], values[1], rtol=1e-4, atol=1e-6, err_msg=key)
        np.testing.assert_allclose(losses["custom"][key][2], values[2], rtol=1e-2, atol=1e-5, err_msg=key)


@pytest.mark.slow
def test_cuda_kernels_emulated_on_host(tmp_path, repo_root):
    """The CUDA kernels' indexing and tie/NaN logic, run on the CPU.

    custom_ops/cuda_check/emulate_on_host.cc compiles the kernels of
    directional_pool_cuda.cuh as plain C++ and runs every emulated thread;
    the real device check (check_directional_pool.cu) needs a GPU.
    """
    source = os.path.join(repo_root, "custom_ops", "cuda_check", "emulate_on_host.cc")
    binary = str(tmp_path / "emulate")
    subprocess.run([os.environ.get("CXX", "g++"), "-std=c++17", "-O1", "-o", binary, source], check=True)
    result = subprocess.run([binary], capture_output=True, text=True)
    assert result.returncode == 0 and "ALL OK" in result.stdout, result.stdout


def test_build_ops_command(capsys):
    from tf_centernet import cli

    assert cli.main(["build-ops", "--cuda", "no"]) == 0
    path = capsys.readouterr().out.strip().splitlines()[-1]
    assert path.endswith("tf_centernet_ops.so") and os.path.isfile(path)
