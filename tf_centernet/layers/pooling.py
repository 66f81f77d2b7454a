"""Corner pooling, cascade corner pooling and center pooling modules.

docs/reference.md §2; CornerNet paper section 3.4 (Fig. 7), CenterNet paper
section 3.3 (Fig. 4). All three end the same way: a 3x3 convolution from
`pool_channels` back to `channels` (no bias) + BN, added to BN(conv1x1(x)),
ReLU, and a 3x3 convolution module.
"""

from __future__ import annotations

import keras

from tf_centernet.layers.convolution import AttributeConfig, ConvModule, batch_norm
from tf_centernet.ops import pooling as pooling_ops

# (first, second) pooling direction of each corner (docs/reference.md §2).
CORNER_DIRECTIONS = {
    "top_left": ("top", "left"),
    "bottom_right": ("bottom", "right"),
}


class _PoolingModule(AttributeConfig, keras.layers.Layer):
    """Shared tail of the three pooling modules."""

    CONFIG_KEYS = ("channels", "pool_channels", "impl")

    def __init__(self, channels=256, pool_channels=128, impl="scan", **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.pool_channels = pool_channels
        self.impl = impl
        self.p_conv = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False, name="p_conv1")
        self.p_bn = batch_norm(name="p_bn1")
        self.skip_conv = keras.layers.Conv2D(channels, 1, use_bias=False, name="conv1")
        self.skip_bn = batch_norm(name="bn1")
        self.relu = keras.layers.ReLU()
        self.out_conv = ConvModule(channels, 3, name="conv2")

    def _pool(self, x, direction):
        return pooling_ops.directional_pool(x, direction, impl=self.impl)

    def _merge(self, pooled, inputs, training):
        x = self.p_bn(self.p_conv(pooled), training=training)
        skip = self.skip_bn(self.skip_conv(inputs), training=training)
        return self.out_conv(self.relu(x + skip), training=training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.channels,)



class _CornerModule(_PoolingModule):
    """A pooling module for one corner: validates and records `corner`."""

    CONFIG_KEYS = _PoolingModule.CONFIG_KEYS + ("corner",)

    def __init__(self, corner="top_left", channels=256, pool_channels=128, impl="scan", **kwargs):
        super().__init__(channels, pool_channels, impl, **kwargs)
        if corner not in CORNER_DIRECTIONS:
            raise ValueError(f"corner must be one of {sorted(CORNER_DIRECTIONS)}, got {corner!r}.")
        self.corner = corner
        self.branch_1 = ConvModule(pool_channels, 3, name="p1_conv1")
        self.branch_2 = ConvModule(pool_channels, 3, name="p2_conv1")



@keras.saving.register_keras_serializable(package="tf_centernet")
class CornerPooling(_CornerModule):
    """CornerNet's corner pooling module (docs/reference.md §2).

    Two 3x3 convolution modules `channels` -> `pool_channels`; the first pooled
    along the corner's first direction (top / bottom), the second along its
    second (left / right); summed; then the shared tail.

    Args:
        corner: str. "top_left" or "bottom_right".
        channels: int. Input and output channels. Defaults to 256.
        pool_channels: int. Width of the pooled branches. Defaults to 128.
        impl: str. Pooling implementation, see `tf_centernet.ops.pooling`.

    Call arguments:
        inputs: (batch, height, width, channels).
        training: bool.

    Returns:
        (batch, height, width, channels).
    """

    def call(self, inputs, training=None):
        first, second = CORNER_DIRECTIONS[self.corner]
        pooled = self._pool(self.branch_1(inputs, training=training), first) + self._pool(
            self.branch_2(inputs, training=training), second
        )
        return self._merge(pooled, inputs, training)


@keras.saving.register_keras_serializable(package="tf_centernet")
class CascadeCornerPooling(_CornerModule):
    """CenterNet's cascade corner pooling module (docs/reference.md §2).

    For the top-left corner (first = top, second = left):
    branch A = top(conv3x3(cbr_a(x) + left(cbr_look_a(x)))),
    branch B = left(conv3x3(cbr_b(x) + top(cbr_look_b(x)))),
    where each cbr is a 3x3 convolution module `channels` -> `pool_channels`
    and each conv3x3 is `pool_channels` -> `pool_channels` without bias or
    BN; A + B then goes through the shared tail. "Look inside along the
    boundary maximum, then along the boundary."

    Args, call arguments and returns: as `CornerPooling`.
    """

    def __init__(self, corner="top_left", channels=256, pool_channels=128, impl="scan", **kwargs):
        super().__init__(corner, channels, pool_channels, impl, **kwargs)
        self.look_1 = ConvModule(pool_channels, 3, name="look_conv1")
        self.look_2 = ConvModule(pool_channels, 3, name="look_conv2")
        self.look_conv_1 = keras.layers.Conv2D(pool_channels, 3, padding="same", use_bias=False, name="p1_look_conv")
        self.look_conv_2 = keras.layers.Conv2D(pool_channels, 3, padding="same", use_bias=False, name="p2_look_conv")

    def call(self, inputs, training=None):
        first, second = CORNER_DIRECTIONS[self.corner]
        look_second = self._pool(self.look_1(inputs, training=training), second)
        branch_a = self._pool(
            self.look_conv_1(self.branch_1(inputs, training=training) + look_second), first
        )
        look_first = self._pool(self.look_2(inputs, training=training), first)
        branch_b = self._pool(
            self.look_conv_2(self.branch_2(inputs, training=training) + look_first), second
        )
        return self._merge(branch_a + branch_b, inputs, training)


@keras.saving.register_keras_serializable(package="tf_centernet")
class CenterPooling(_PoolingModule):
    """CenterNet's center pooling module (docs/reference.md §2).

    Column max (top then bottom pooling) of one 3x3 convolution module plus
    row max (left then right pooling) of another, then the shared tail: a
    center keypoint sees the maxima of its whole row and column.

    Args:
        channels, pool_channels, impl: as `CornerPooling`.

    Call arguments and returns: as `CornerPooling`.
    """

    def __init__(self, channels=256, pool_channels=128, impl="scan", **kwargs):
        super().__init__(channels, pool_channels, impl, **kwargs)
        self.branch_1 = ConvModule(pool_channels, 3, name="p1_conv1")
        self.branch_2 = ConvModule(pool_channels, 3, name="p2_conv1")

    def call(self, inputs, training=None):
        column = pooling_ops.column_max(self.branch_1(inputs, training=training), self.impl)
        row = pooling_ops.row_max(self.branch_2(inputs, training=training), self.impl)
        return self._merge(column + row, inputs, training)
