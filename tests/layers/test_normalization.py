"""`BatchNormalization`: Keras' BatchNormalization, trained with TensorFlow's fused kernel."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_centernet.layers.normalization import BatchNormalization

MOMENTUM, EPSILON = 0.9, 1e-5


def pair(shape, dtype=None):
    """A Keras BatchNormalization and a fused one with the same (non-trivial) weights."""
    rng = np.random.default_rng(1)
    layers = [cls(momentum=MOMENTUM, epsilon=EPSILON, dtype=dtype)
              for cls in (keras.layers.BatchNormalization, BatchNormalization)]
    values = [rng.normal(1.0, 0.2, shape[-1]), rng.normal(0.0, 0.2, shape[-1]),
              rng.normal(0.0, 0.5, shape[-1]), rng.uniform(0.5, 2.0, shape[-1])]
    for layer in layers:
        layer.build(shape)
        for variable, value in zip((layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance), values):
            variable.assign(value.astype("float32"))
    return layers


def run(layer, x, upstream, training):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * upstream)
    grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
    return [np.asarray(v, np.float32) for v in (y, *grads, layer.moving_mean.numpy(), layer.moving_variance.numpy())]


@pytest.mark.parametrize("shape", [(2, 7, 5, 6), (1, 2, 1, 3)])  # n = 2: Bessel factor 2
def test_training_step_equals_keras_and_a_numpy_reference(shape):
    """Outputs, gradients and moving statistics as Keras'; the moving variance takes the biased batch variance."""
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, shape).astype("float32")
    upstream = tf.constant(rng.normal(size=shape).astype("float32"))
    keras_layer, fused = pair(shape)
    start_mean, start_var = fused.moving_mean.numpy().copy(), fused.moving_variance.numpy().copy()
    expected, got = run(keras_layer, x, upstream, True), run(fused, x, upstream, True)
    for name, a, b in zip(["y", "dx", "dgamma", "dbeta", "moving_mean", "moving_variance"], expected, got):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=2e-5, err_msg=name)
    flat = x.reshape(-1, shape[-1]).astype(np.float64)
    normalised = (flat - flat.mean(0)) / np.sqrt(flat.var(0) + EPSILON)
    np.testing.assert_allclose(got[0].reshape(flat.shape), normalised * fused.gamma.numpy() + fused.beta.numpy(),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got[4], MOMENTUM * start_mean + (1 - MOMENTUM) * flat.mean(0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got[5], MOMENTUM * start_var + (1 - MOMENTUM) * flat.var(0), rtol=1e-5, atol=1e-6)


def test_inference_is_keras_own_path_and_training_one_fused_op():
    """training=False: Keras' graph, bit-identical (exports do not change); training=True: FusedBatchNormV3."""
    x = np.random.default_rng(2).normal(size=(2, 4, 4, 3)).astype("float32")
    keras_layer, fused = pair(x.shape)
    np.testing.assert_array_equal(fused(x, training=False).numpy(), keras_layer(x, training=False).numpy())

    def op_types(training):
        graph = tf.function(lambda t: fused(t, training=training)).get_concrete_function(tf.constant(x)).graph
        return {op.type for op in graph.get_operations()}

    assert "FusedBatchNormV3" in op_types(True) and "Mean" not in op_types(True)
    assert "FusedBatchNormV3" not in op_types(False)


def test_bfloat16_inputs_normalise_in_float32_and_come_back_in_bfloat16():
    x = np.random.default_rng(3).normal(1.0, 2.0, size=(2, 6, 6, 4)).astype("float32")
    upstream = tf.ones(x.shape)
    keras_layer, fused = pair(x.shape, dtype="mixed_bfloat16")
    expected = run(keras_layer, tf.cast(x, tf.bfloat16), upstream, True)
    got = run(fused, tf.cast(x, tf.bfloat16), upstream, True)
    assert fused(tf.cast(x, tf.bfloat16), training=True).dtype == tf.bfloat16
    for name, a, b in zip(["y", "dx", "dgamma", "dbeta", "moving_mean", "moving_variance"], expected, got):
        np.testing.assert_allclose(b, a, rtol=1e-2, atol=2e-2, err_msg=name)


def test_weights_files_interchange_with_keras_layer_inside_sequential(tmp_path):
    """Keras names a list's layers after their class in weights files: old checkpoints must still load."""
    def model(norm):
        model = keras.Sequential([keras.Input((4, 4, 2)), keras.layers.Conv2D(3, 1), norm()])
        model(np.zeros((1, 4, 4, 2), "float32"), training=False)
        return model

    written = model(keras.layers.BatchNormalization)
    for variable in written.weights:
        variable.assign(np.random.default_rng(len(variable.path)).normal(size=variable.shape).astype("float32") ** 2)
    written.save_weights(tmp_path / "keras.weights.h5")
    ours = model(BatchNormalization)
    ours.load_weights(tmp_path / "keras.weights.h5")
    for a, b in zip(written.weights, ours.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    ours.save_weights(tmp_path / "ours.weights.h5")
    model(keras.layers.BatchNormalization).load_weights(tmp_path / "ours.weights.h5")
