"""Prediction heads (docs/reference.md §3)."""

from __future__ import annotations

import keras

from tf_centernet.layers.convolution import AttributeConfig, ConvModule

# Heatmap bias -2.19: sigmoid(-2.19) ~ 0.1 prior probability (docs/reference.md §3).
HEATMAP_BIAS = -2.19


@keras.saving.register_keras_serializable(package="tf_centernet")
class PredictionHead(AttributeConfig, keras.layers.Layer):
    """3x3 convolution (with bias) + ReLU, then a 1x1 convolution.

    Args:
        outputs: int. Output channels (num_classes for a heatmap, 1 for an
            embedding, 2 for an offset).
        channels: int. Hidden channels. Defaults to 256.
        bias_init: float. Initial bias of the 1x1 convolution (-2.19 for
            heatmaps, 0 otherwise). Defaults to 0.

    Call arguments:
        inputs: (batch, height, width, c_in).

    Returns:
        float32 (batch, height, width, outputs): raw values (heatmap logits
        before the sigmoid). Cast to float32 so that losses and decoding run
        in full precision under mixed precision.
    """

    CONFIG_KEYS = ("outputs", "channels", "bias_init")

    def __init__(self, outputs, channels=256, bias_init=0.0, **kwargs):
        super().__init__(**kwargs)
        self.outputs = outputs
        self.channels = channels
        self.bias_init = bias_init
        self.hidden = ConvModule(channels, 3, with_bn=False, name="conv")
        self.out = keras.layers.Conv2D(
            outputs,
            1,
            bias_initializer=keras.initializers.Constant(bias_init),
            name="out",
        )

    def call(self, inputs):
        return keras.ops.cast(self.out(self.hidden(inputs)), "float32")

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.outputs,)
