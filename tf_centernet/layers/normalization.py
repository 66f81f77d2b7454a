"""Batch normalisation whose training step is one fused kernel (docs/reference.md §1).

Keras 3's `keras.layers.BatchNormalization` computes a training batch's
statistics and the normalisation as separate element-wise ops (mean, squared
difference, mean, subtract, multiply, add) and differentiates each; on the
hourglass these ops and their gradients were about 8 % of a CenterNet-52
training step on the CPU (`benchmarks/train_step.py`). `BatchNormalization` here
computes the same function with TensorFlow's fused kernel (`FusedBatchNormV3`,
oneDNN's on CPUs where TensorFlow enables it), one op forward and one backward.

The class keeps Keras' name, ``BatchNormalization``: Keras' weights files
address a layer held in a list (a `keras.Sequential`'s) by its class name,
so a subclass of another name could not read the checkpoints and model
directories written with Keras' layer (and vice versa).

Inference (``training=False``), masks, renormalisation and other backends take
Keras' own path, so exported graphs (SavedModel, TFLite, ONNX) do not change.
"""

from __future__ import annotations

import keras
import tensorflow as tf

__all__ = ["BatchNormalization"]


@keras.saving.register_keras_serializable(package="tf_centernet")
class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` whose NHWC training step runs the fused kernel.

    Same arguments, weights and results as the Keras layer (to float
    rounding): the batch mean and the *biased* batch variance over batch,
    height and width normalise the input, and the moving statistics follow
    ``moving = momentum * moving + (1 - momentum) * batch`` with the biased
    variance, as Keras does. Inputs in float16 / bfloat16 are normalised in
    float32 and cast back, as Keras does.

    Input: (batch, height, width, channels), any float dtype, ``axis=-1``.
    Output: the same shape, in the layer's compute dtype.
    """

    def _fused_training(self, inputs, training, mask):
        """Whether `call` can take the fused kernel for these arguments."""
        return (
            training and self.trainable and mask is None and not self.renorm and self.scale and self.center
            and keras.backend.backend() == "tensorflow" and len(inputs.shape) == 4
            and self.axis in (-1, 3, [3], [-1]) and inputs.shape[-1] is not None
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fused_training(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        x = tf.cast(inputs, tf.float32)
        gamma = tf.cast(self.gamma, tf.float32)
        beta = tf.cast(self.beta, tf.float32)
        empty = tf.constant([], tf.float32)
        # The raw op: tf.compat.v1.nn.fused_batch_norm raises epsilon to at
        # least 1.001e-5 (a cuDNN limit), the releases' is 1e-5.
        outputs, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=gamma, offset=beta, mean=empty, variance=empty,
            epsilon=float(self.epsilon), exponential_avg_factor=1.0, data_format="NHWC", is_training=True,
        )
        # The op's batch_variance is Bessel-corrected (n / (n - 1)); Keras'
        # moving variance takes the biased one.
        count = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), tf.float32)
        variance = tf.stop_gradient(variance * tf.maximum(count - 1.0, 1.0) / tf.maximum(count, 1.0))
        mean = tf.stop_gradient(mean)
        moving_mean = tf.cast(self.moving_mean, tf.float32)
        moving_variance = tf.cast(self.moving_variance, tf.float32)
        self.moving_mean.assign(moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return tf.cast(outputs, self.compute_dtype)
