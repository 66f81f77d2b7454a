"""Keras layers: convolution blocks, hourglass, pooling modules, heads."""

from tf_centernet.layers.convolution import ConvModule, ResidualBlock
from tf_centernet.layers.heads import PredictionHead
from tf_centernet.layers.hourglass import HourglassModule, Stem
from tf_centernet.layers.normalization import BatchNormalization
from tf_centernet.layers.pooling import CascadeCornerPooling, CenterPooling, CornerPooling

__all__ = [
    "CascadeCornerPooling",
    "CenterPooling",
    "ConvModule",
    "CornerPooling",
    "BatchNormalization",
    "HourglassModule",
    "PredictionHead",
    "ResidualBlock",
    "Stem",
]
