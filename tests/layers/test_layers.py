"""Every Keras layer of the package through the shared checks (`layer_checks`).

Trainable-variable counts from the layers' structure: a convolution without
bias has 1 variable (kernel), with bias 2; a BatchNorm 2 (gamma, beta; the
moving statistics are not trainable).
"""

import numpy as np
import pytest

from support.layer_checks import check_layer
from tf_centernet.config import DecodeConfig
from tf_centernet.decode import Decoder
from tf_centernet.layers.convolution import ConvModule, ResidualBlock
from tf_centernet.layers.heads import PredictionHead
from tf_centernet.layers.hourglass import HourglassModule
from tf_centernet.layers.pooling import CascadeCornerPooling, CenterPooling, CornerPooling

X = np.random.RandomState(0).normal(size=(2, 16, 16, 8)).astype("float32")

# Pooling modules: p_conv (1) + p_bn (2) + skip conv (1) + skip bn (2) + the
# output ConvModule (conv + bn: 3) = 9, plus their branches.
POOLING_BASE = 9

LAYERS = [
    ("conv_module", lambda: ConvModule(4, 3), (2, 16, 16, 4), 3),
    ("conv_module_no_bn", lambda: ConvModule(4, 3, with_bn=False), (2, 16, 16, 4), 2),
    ("residual_identity_skip", lambda: ResidualBlock(8), (2, 16, 16, 8), 6),
    ("residual_projected_skip", lambda: ResidualBlock(6, strides=2), (2, 8, 8, 6), 9),
    # ConvModule without BN (2) + 1x1 output convolution with bias (2).
    ("prediction_head", lambda: PredictionHead(3, 8), (2, 16, 16, 3), 4),
    # Two 3x3 ConvModules per branch (3 each).
    ("corner_pooling", lambda: CornerPooling("top_left", 8, 4), (2, 16, 16, 8), POOLING_BASE + 6),
    # ... plus two look ConvModules (3 each) and two bias-free look convolutions.
    ("cascade_corner_pooling", lambda: CascadeCornerPooling("bottom_right", 8, 4), (2, 16, 16, 8),
     POOLING_BASE + 6 + 6 + 2),
    ("center_pooling", lambda: CenterPooling(8, 4), (2, 16, 16, 8), POOLING_BASE + 6),
]


@pytest.mark.parametrize("name,make,shape,count", LAYERS, ids=[entry[0] for entry in LAYERS])
def test_layer_checks(name, make, shape, count):
    check_layer(make(), (X,), shape, count, call_kwargs={"training": False})


def test_hourglass_module_checks():
    # One level, widths (8, 8), one block each: up1 (6), the stride-2 low1
    # block with its projected skip (6 + 3), low2 (6) and low3 (6).
    layer = HourglassModule(1, [8, 8], [1, 1])
    check_layer(layer, (X,), (2, 16, 16, 8), 6 + 9 + 6 + 6, call_kwargs={"training": False})


def test_decoder_checks():
    """The Decoder: no weights, its DecodeConfig survives the round trip."""
    rng = np.random.RandomState(1)
    outputs = {
        key: rng.normal(size=(4, 8, 8, channels)).astype("float32")
        for key, channels in [
            ("tl_heatmap", 2), ("br_heatmap", 2), ("tl_embedding", 1), ("br_embedding", 1),
            ("tl_offset", 2), ("br_offset", 2), ("ct_heatmap", 2), ("ct_offset", 2),
        ]
    }
    images = np.zeros((2, 31, 31, 3), np.float32)
    config = DecodeConfig(top_k=5, num_dets=10, max_detections=7, flip_test=True)
    layer = Decoder(config)
    out = check_layer(
        layer, (outputs,), {"boxes": (2, 7, 4), "classes": (2, 7), "num_detections": (2,), "scores": (2, 7)},
        0, call_kwargs={"images": images},
    )
    rebuilt = Decoder.from_config(layer.get_config())
    assert rebuilt.decode_config == config
    count = np.asarray(out["num_detections"])
    classes = np.asarray(out["classes"])
    for i, n in enumerate(count):
        assert np.all(classes[i, n:] == -1)
        assert np.all(classes[i, :n] >= 0)
