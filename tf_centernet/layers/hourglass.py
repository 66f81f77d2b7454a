"""Hourglass module, stem and stacked hourglass backbone (docs/reference.md §1)."""

from __future__ import annotations

import keras

from tf_centernet.layers.convolution import AttributeConfig, ConvModule, ResidualBlock, batch_norm


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



@keras.saving.register_keras_serializable(package="tf_centernet")
class HourglassBackbone(AttributeConfig, keras.layers.Layer):
    """Stacked hourglass network (docs/reference.md §1).

    Stem, then `num_stacks` x (hourglass module, 3x3 convolution module
    ``cnv`` to `head_channels`). Between stacks: ReLU(BN(conv1x1(x)) +
    BN(conv1x1(cnv))) followed by a residual block, where x is the stem
    output or the previous merge. Intermediate predictions are not added
    back into the trunk.

    Args:
        num_stacks: int. 1 for Hourglass-52, 2 for Hourglass-104.
        levels, widths, blocks: see `HourglassModule`.
        stem_channels: int. Channels of the 7x7 stem convolution.
        head_channels: int. Channels of each stack's ``cnv`` output (the
            releases' cnv_dim, 256).

    Call arguments:
        inputs: (batch, height, width, 3); height and width must be
            divisible by 4 * 2**levels after the stride-4 stem (the releases
            use 511 = 128 * 4 - 1 so that the stem gives 128).
        training: bool.

    Returns:
        List of `num_stacks` tensors (batch, H/4, W/4, head_channels), one per
        stack.
    """

    CONFIG_KEYS = ("num_stacks", "levels", "widths", "blocks", "stem_channels", "head_channels")

    def __init__(
        self,
        num_stacks,
        levels,
        widths,
        blocks,
        stem_channels=128,
        head_channels=256,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._store(num_stacks=num_stacks, levels=levels, widths=list(widths), blocks=list(blocks),
                    stem_channels=stem_channels, head_channels=head_channels)
        w0 = widths[0]
        self.stem = Stem(stem_channels, w0, name="stem")
        self.hourglasses = [
            HourglassModule(levels, widths, blocks, name=f"hourglass_{i}")
            for i in range(num_stacks)
        ]
        self.cnvs = [ConvModule(head_channels, 3, name=f"cnv_{i}") for i in range(num_stacks)]
        self.inter_convs = []  # applied to the trunk (the releases' inters_)
        self.cnv_convs = []  # applied to cnv (the releases' cnvs_)
        self.inter_blocks = []  # the releases' inters
        for i in range(num_stacks - 1):
            self.inter_convs.append(
                keras.Sequential(
                    [keras.layers.Conv2D(w0, 1, use_bias=False), batch_norm()],
                    name=f"inter_conv_{i}",
                )
            )
            self.cnv_convs.append(
                keras.Sequential(
                    [keras.layers.Conv2D(w0, 1, use_bias=False), batch_norm()],
                    name=f"cnv_conv_{i}",
                )
            )
            self.inter_blocks.append(ResidualBlock(w0, name=f"inter_{i}"))
        self.relu = keras.layers.ReLU()

    def call(self, inputs, training=None):
        inter = self.stem(inputs, training=training)
        features = []
        for i in range(self.num_stacks):
            hourglass = self.hourglasses[i](inter, training=training)
            cnv = self.cnvs[i](hourglass, training=training)
            features.append(cnv)
            if i < self.num_stacks - 1:
                inter = self.relu(
                    self.inter_convs[i](inter, training=training)
                    + self.cnv_convs[i](cnv, training=training)
                )
                inter = self.inter_blocks[i](inter, training=training)
        return features
