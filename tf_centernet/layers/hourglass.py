"""Hourglass module and stem (docs/reference.md §1); the stacked backbone is
`tf_centernet.models.HourglassBackbone`."""

from __future__ import annotations

import keras

from tf_centernet.layers.convolution import AttributeConfig, ConvModule, ResidualBlock


@keras.saving.register_keras_serializable(package="tf_centernet")
class HourglassModule(AttributeConfig, keras.layers.Layer):
    """One recursive hourglass (docs/reference.md §1).

    With widths (w0, w1, ...) and blocks (m0, m1, ...):

    * upper branch: m0 residual blocks at width w0;
    * lower branch: a stride-2 residual block w0 -> w1 (no max pooling),
      m0 - 1 more blocks at w1, the next level (or, at the bottom, m1 blocks
      at w1), m0 - 1 blocks at w1 and one block w1 -> w0, then nearest x2
      upsampling;
    * merge: upper + lower.

    Args:
        levels: int. Recursion depth n (5 in the releases).
        widths: list of n + 1 ints. Channels per level.
        blocks: list of n + 1 ints. Residual blocks per level.

    Call arguments:
        inputs: (batch, height, width, widths[0]); height and width must be
            divisible by 2**levels.
        training: bool.

    Returns:
        Tensor with the shape of `inputs`.
    """

    CONFIG_KEYS = ("levels", "widths", "blocks")

    def __init__(self, levels, widths, blocks, **kwargs):
        super().__init__(**kwargs)
        if len(widths) != levels + 1 or len(blocks) != levels + 1:
            raise ValueError(
                f"widths and blocks need levels + 1 = {levels + 1} entries, got "
                f"{len(widths)} and {len(blocks)}."
            )
        self.levels = levels
        self.widths = list(widths)
        self.blocks = list(blocks)
        w0, w1 = widths[0], widths[1]
        m0, m1 = blocks[0], blocks[1]
        self.upper = [ResidualBlock(w0, name=f"up1_{i}") for i in range(m0)]
        self.down = [ResidualBlock(w1, strides=2, name="low1_0")] + [
            ResidualBlock(w1, name=f"low1_{i}") for i in range(1, m0)
        ]
        if levels > 1:
            self.inner = HourglassModule(levels - 1, widths[1:], blocks[1:], name="low2")
        else:
            self.inner = [ResidualBlock(w1, name=f"low2_{i}") for i in range(m1)]
        self.up = [ResidualBlock(w1, name=f"low3_{i}") for i in range(m0 - 1)] + [
            ResidualBlock(w0, name=f"low3_{m0 - 1}")
        ]
        self.upsample = keras.layers.UpSampling2D(2, interpolation="nearest")

    def call(self, inputs, training=None):
        upper = inputs
        for block in self.upper:
            upper = block(upper, training=training)
        lower = inputs
        for block in self.down:
            lower = block(lower, training=training)
        if isinstance(self.inner, list):
            for block in self.inner:
                lower = block(lower, training=training)
        else:
            lower = self.inner(lower, training=training)
        for block in self.up:
            lower = block(lower, training=training)
        return upper + self.upsample(lower)

    def compute_output_shape(self, input_shape):
        return input_shape



@keras.saving.register_keras_serializable(package="tf_centernet")
class Stem(AttributeConfig, keras.layers.Layer):
    """7x7 stride-2 convolution module to `stem_channels`, then a stride-2
    residual block to `width` channels: output stride 4 (docs/reference.md §1).

    Call arguments:
        inputs: (batch, height, width, 3) normalised images.

    Returns:
        (batch, ceil(height / 4), ceil(width / 4), width); 128 x 128 for a
        511 x 511 input.
    """

    CONFIG_KEYS = ("stem_channels", "width")

    def __init__(self, stem_channels=128, width=256, **kwargs):
        super().__init__(**kwargs)
        self.stem_channels = stem_channels
        self.width = width
        self.conv = ConvModule(stem_channels, 7, strides=2, name="conv")
        self.residual = ResidualBlock(width, strides=2, name="residual")

    def call(self, inputs, training=None):
        return self.residual(self.conv(inputs, training=training), training=training)
