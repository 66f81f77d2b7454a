"""Convolution module and residual block of the hourglass (docs/reference.md §1).

Padding follows the releases (PyTorch, symmetric ``k // 2``) exactly: for
stride 1 Keras' "same" padding is identical; for stride 2 it is not (Keras
pads bottom/right only), so strided convolutions pad explicitly. This keeps
output cell ``i`` centred on input pixel ``stride * i`` as in the releases,
which matters for the keypoint geometry and for porting weights.
"""

from __future__ import annotations

import keras

from tf_centernet.layers.normalization import BatchNormalization

# PyTorch BatchNorm2d defaults: momentum 0.1 (Keras: 1 - 0.1), eps 1e-5.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def conv2d(filters, kernel_size, strides=1, use_bias=False, name=None):
    """A 2-D convolution with the releases' symmetric padding.

    Returns a layer (or a `keras.Sequential` of zero padding + valid
    convolution when strided) mapping (batch, height, width, c_in) to
    (batch, ceil(height / strides), ceil(width / strides), filters) for odd
    kernels.
    """
    if strides == 1:
        return keras.layers.Conv2D(
            filters, kernel_size, padding="same", use_bias=use_bias, name=name
        )
    return keras.Sequential(
        [
            keras.layers.ZeroPadding2D(kernel_size // 2),
            keras.layers.Conv2D(
                filters, kernel_size, strides=strides, padding="valid", use_bias=use_bias
            ),
        ],
        name=name,
    )


def batch_norm(name=None, dtype=None):
    """BatchNormalization with the releases' (PyTorch) momentum and epsilon.

    A `BatchNormalization` (Keras' layer, trained with the fused kernel).
    """
    return BatchNormalization(
        momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name, dtype=dtype
    )


class AttributeConfig:
    """Mixin: ``get_config`` adds the attributes named in ``CONFIG_KEYS``.

    For layers and models whose constructor arguments are stored under their
    own names, so that ``cls(**layer.get_config())`` rebuilds the layer.
    """

    CONFIG_KEYS = ()

    def get_config(self):
        config = super().get_config()
        config.update({key: getattr(self, key) for key in self.CONFIG_KEYS})
        return config

    def _store(self, **values):
        """Stores constructor arguments as attributes of the same names."""
        for key, value in values.items():
            setattr(self, key, value)


@keras.saving.register_keras_serializable(package="tf_centernet")
class ConvModule(AttributeConfig, keras.layers.Layer):
    """Convolution (no bias) + BatchNorm + ReLU: the releases' "convolution".

    Args:
        filters: int. Output channels.
        kernel_size: int. Square kernel size, padding `kernel_size // 2`.
            Defaults to 3.
        strides: int. Defaults to 1.
        with_bn: bool. If False, the convolution has a bias and no
            BatchNorm (the first layer of each prediction head, docs/reference.md §3).
            Defaults to True.

    Call arguments:
        inputs: float tensor (batch, height, width, c_in).
        training: bool. BatchNorm mode.

    Returns:
        (batch, ceil(height / strides), ceil(width / strides), filters).
    """

    CONFIG_KEYS = ("filters", "kernel_size", "strides", "with_bn")

    def __init__(self, filters, kernel_size=3, strides=1, with_bn=True, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.with_bn = with_bn
        self.conv = conv2d(filters, kernel_size, strides, use_bias=not with_bn, name="conv")
        self.bn = batch_norm(name="bn") if with_bn else None
        self.relu = keras.layers.ReLU()

    def call(self, inputs, training=None):
        x = self.conv(inputs)
        if self.bn is not None:
            x = self.bn(x, training=training)
        return self.relu(x)

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(input_shape)



@keras.saving.register_keras_serializable(package="tf_centernet")
class ResidualBlock(AttributeConfig, keras.layers.Layer):
    """The hourglass residual block (docs/reference.md §1).

    3x3 conv (stride s) - BN - ReLU - 3x3 conv - BN, plus a skip (identity,
    or 1x1 conv stride s + BN when the stride or the width changes), then
    ReLU. The releases pass a kernel size to this block but always use 3x3.

    Args:
        filters: int. Output channels.
        strides: int. 1 or 2. Defaults to 1.

    Call arguments:
        inputs: float tensor (batch, height, width, c_in).
        training: bool. BatchNorm mode.

    Returns:
        (batch, ceil(height / strides), ceil(width / strides), filters).
    """

    CONFIG_KEYS = ("filters", "strides")

    def __init__(self, filters, strides=1, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.strides = strides
        self.conv1 = conv2d(filters, 3, strides, name="conv1")
        self.bn1 = batch_norm(name="bn1")
        self.conv2 = conv2d(filters, 3, 1, name="conv2")
        self.bn2 = batch_norm(name="bn2")
        self.skip_conv = None
        self.skip_bn = None
        self.relu = keras.layers.ReLU()

    def build(self, input_shape):
        if self.strides != 1 or input_shape[-1] != self.filters:
            # 1x1 stride-s convolution samples pixel s*i: no padding needed.
            # Created here, after __init__: take this block's dtype policy
            # (e.g. mixed_bfloat16), not whatever is global now.
            self.skip_conv = keras.layers.Conv2D(
                self.filters, 1, strides=self.strides, use_bias=False, name="skip_conv",
                dtype=self.dtype_policy,
            )
            self.skip_bn = batch_norm(name="skip_bn", dtype=self.dtype_policy)

    def call(self, inputs, training=None):
        x = self.relu(self.bn1(self.conv1(inputs), training=training))
        x = self.bn2(self.conv2(x), training=training)
        skip = inputs
        if self.skip_conv is not None:
            skip = self.skip_bn(self.skip_conv(inputs), training=training)
        return self.relu(x + skip)

    def compute_output_shape(self, input_shape):
        return self.conv1.compute_output_shape(input_shape)[:-1] + (self.filters,)
