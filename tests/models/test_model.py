"""Model structure: shapes, parameter counts, serialisation (docs/reference.md §1-3)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_centernet.config import ModelConfig
from tf_centernet.layers.convolution import ConvModule, ResidualBlock
from tf_centernet.layers.hourglass import HourglassModule
from tf_centernet.layers.pooling import CascadeCornerPooling, CenterPooling, CornerPooling
from tf_centernet.models.object_detector import KeypointDetector
from tf_centernet.models.presets import build_model, count_trainable_parameters
from tf_centernet.ops import pooling


def small(architecture="centernet", **kwargs):
    return build_model(ModelConfig(architecture=architecture, backbone="hourglass_small", num_classes=3, **kwargs))


def test_residual_block_parameters_and_stride_geometry():
    block = ResidualBlock(8, strides=2)
    out = block(tf.zeros([1, 9, 9, 4]))
    # conv3x3 4->8, conv3x3 8->8, skip 1x1 4->8, three BN (gamma, beta).
    assert count_trainable_parameters(block) == 9 * 4 * 8 + 9 * 8 * 8 + 4 * 8 + 3 * 2 * 8
    assert out.shape == (1, 5, 5, 8)
    # Symmetric padding as in PyTorch: output cell i is centred on input pixel
    # 2i. A 3x3 all-ones kernel on an impulse at pixel 2 reaches cells 1..? only
    # where |2i - 2| <= 1, i.e. cell 1 alone.
    conv = ConvModule(1, 3, strides=2, with_bn=False)
    conv(tf.zeros([1, 5, 5, 1]))
    conv.conv.layers[-1].kernel.assign(tf.ones([3, 3, 1, 1]))
    impulse = np.zeros([1, 5, 5, 1], np.float32)
    impulse[0, 2, 2, 0] = 1.0
    np.testing.assert_array_equal(conv(impulse).numpy()[0, :, :, 0], [[0, 0, 0], [0, 1, 0], [0, 0, 0]])


def test_hourglass_module_keeps_shape():
    module = HourglassModule(2, [8, 8, 12], [1, 1, 2])
    assert module(tf.zeros([2, 8, 8, 8])).shape == (2, 8, 8, 8)


def test_pooling_modules_parameter_counts():
    c, p = 8, 4
    x = tf.zeros([1, 6, 6, c])
    conv_module = 9 * c * p + 2 * p  # 3x3 conv + BN
    tail = 9 * p * c + 2 * c + c * c + 2 * c + 9 * c * c + 2 * c
    corner = CornerPooling("top_left", c, p)
    corner(x)
    assert count_trainable_parameters(corner) == 2 * conv_module + tail
    cascade = CascadeCornerPooling("bottom_right", c, p)
    cascade(x)
    assert count_trainable_parameters(cascade) == 4 * conv_module + 2 * 9 * p * p + tail
    center = CenterPooling(c, p)
    center(x)
    assert count_trainable_parameters(center) == 2 * conv_module + tail


def test_cascade_corner_pooling_composition():
    # With identity-like branches the top-left cascade equals
    # top(conv(a + left(look_a))) + left(conv(b + top(look_b))): check the
    # order of the pools by comparing against the ops directly.
    layer = CascadeCornerPooling("top_left", 4, 4)
    x = tf.random.stateless_normal([1, 5, 6, 4], seed=[1, 2])
    layer(x)
    a = layer.branch_1(x)
    la = pooling.left_pool(layer.look_1(x))
    branch_a = pooling.top_pool(layer.look_conv_1(a + la))
    b = layer.branch_2(x)
    tb = pooling.top_pool(layer.look_2(x))
    branch_b = pooling.left_pool(layer.look_conv_2(b + tb))
    expected = layer._merge(branch_a + branch_b, x, False)
    np.testing.assert_allclose(layer(x).numpy(), expected.numpy(), atol=1e-5)


@pytest.mark.parametrize("architecture", ["centernet", "cornernet"])
def test_small_model_outputs(architecture):
    model = small(architecture)
    images = tf.zeros([2, 127, 127, 3])
    out = model(images, training=False)
    expected = {"tl_heatmap": 3, "br_heatmap": 3, "tl_embedding": 1, "br_embedding": 1, "tl_offset": 2, "br_offset": 2}
    if architecture == "centernet":
        expected.update(ct_heatmap=3, ct_offset=2)
    assert set(out) == set(expected)
    for key, channels in expected.items():
        assert out[key].shape == (2, 32, 32, channels)
        assert out[key].dtype == tf.float32
    train_out = model(images, training=True)
    assert all(len(v) == 2 for v in train_out.values())  # one per stack
    # Heatmap bias -2.19 (docs/reference.md §3): a zero image's logits are near -2.19
    # only through the bias; check the bias itself.
    head = model.stack_modules[0]["tl_heatmap"]
    np.testing.assert_allclose(head.out.bias.numpy(), -2.19)


# The switches change the heads and pooling of every stack alike: one stack,
# one level (tests/support/tiny.py's sizes) shows them at a quarter of the build.
TINY = dict(num_stacks=1, levels=1, widths=[16, 16], blocks=[1, 1], stem_channels=16, head_channels=16,
            pool_channels=16)


def test_ablation_switches_change_structure():
    full = small("centernet", **TINY)
    full.build((None, 63, 63, 3))
    no_cascade = small("centernet", cascade_corner_pooling=False, **TINY)
    no_cascade.build((None, 63, 63, 3))
    no_center_pool = small("centernet", center_pooling=False, **TINY)
    no_center_pool.build((None, 63, 63, 3))
    no_region = small("centernet", central_region=False, **TINY)
    no_region.build((None, 63, 63, 3))
    assert isinstance(no_cascade.stack_modules[0]["tl_pool"], CornerPooling)
    assert isinstance(full.stack_modules[0]["tl_pool"], CascadeCornerPooling)
    assert not isinstance(no_center_pool.stack_modules[0]["ct_pool"], CenterPooling)
    assert "ct_heatmap" not in no_region(tf.zeros([1, 63, 63, 3]))
    counts = [count_trainable_parameters(m) for m in (full, no_cascade, no_center_pool, no_region)]
    assert counts[0] > counts[1] and counts[0] > counts[2] > counts[3]


def test_config_round_trip_and_keras_save_load(tmp_path):
    # Two stacks (the inter-stack layers saved and loaded too), tiny otherwise.
    model = small("centernet", **dict(TINY, num_stacks=2))
    images = tf.random.stateless_normal([1, 63, 63, 3], seed=[3, 4])
    before = model(images, training=False)
    clone = KeypointDetector.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    after = loaded(images, training=False)
    for key in before:
        np.testing.assert_allclose(after[key].numpy(), before[key].numpy(), atol=1e-5)


def test_mixed_precision_outputs_float32():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = small("cornernet")
        out = model(tf.zeros([1, 127, 127, 3]), training=False)
        assert all(v.dtype == tf.float32 for v in out.values())
        assert model.stack_modules[0]["tl_pool"].compute_dtype == "float16"
    finally:
        keras.mixed_precision.set_global_policy("float32")


# Parameter counts of the releases' blocks, written from docs/reference.md §1-3
# as closed forms (independent of the layer code).
def conv_bn(k, cin, cout):
    return k * k * cin * cout + 2 * cout


def residual(cin, cout, stride=1):
    skip = conv_bn(1, cin, cout) if (stride != 1 or cin != cout) else 0
    return conv_bn(3, cin, cout) + conv_bn(3, cout, cout) + skip


def hourglass(widths, blocks):
    w0, w1 = widths[0], widths[1]
    m0, m1 = blocks[0], blocks[1]
    upper = m0 * residual(w0, w0)
    down = residual(w0, w1, 2) + (m0 - 1) * residual(w1, w1)
    inner = hourglass(widths[1:], blocks[1:]) if len(widths) > 2 else m1 * residual(w1, w1)
    up = (m0 - 1) * residual(w1, w1) + residual(w1, w0)
    return upper + down + inner + up


def head(outputs, cin=256, hidden=256):
    return 9 * cin * hidden + hidden + hidden * outputs + outputs


def pool_tail(c=256, p=128):
    return 9 * p * c + 2 * c + conv_bn(1, c, c) + conv_bn(3, c, c)


CORNER_POOL = 2 * conv_bn(3, 256, 128) + pool_tail()
CASCADE_POOL = 4 * conv_bn(3, 256, 128) + 2 * 9 * 128 * 128 + pool_tail()
CENTER_POOL = 2 * conv_bn(3, 256, 128) + pool_tail()
STEM = conv_bn(7, 3, 128) + residual(128, 256, 2)
HOURGLASS = hourglass([256, 256, 384, 384, 384, 512], [2, 2, 2, 2, 2, 4])
CNV = conv_bn(3, 256, 256)
INTER = 2 * conv_bn(1, 256, 256) + residual(256, 256)


def test_closed_forms_add_up_to_the_release_totals():
    # Hand sums of the blocks above (see docs/fidelity.md).
    assert STEM == 938_112 and HOURGLASS == 92_134_400 and CNV == 590_336
    assert CORNER_POOL == CENTER_POOL == 1_542_144 and CASCADE_POOL == 2_427_392
    corner_heads = 2 * (head(80) + head(1) + head(2))
    cornernet_stack = 2 * CORNER_POOL + corner_heads
    centernet_stack = 2 * CASCADE_POOL + CENTER_POOL + corner_heads + head(80) + head(2)
    assert STEM + HOURGLASS + CNV + centernet_stack == 104_844_152
    assert STEM + 2 * (HOURGLASS + CNV + centernet_stack) + INTER == 210_062_960
    assert STEM + 2 * (HOURGLASS + CNV + cornernet_stack) + INTER == 201_035_212


FULL_MODELS = [
    ("centernet", "hourglass52", 104_844_152),
    ("centernet", "hourglass104", 210_062_960),
    ("cornernet", "hourglass104", 201_035_212),
]


@pytest.mark.slow
@pytest.mark.parametrize("architecture,backbone,expected", FULL_MODELS)
def test_full_models_match_release_parameter_counts(architecture, backbone, expected):
    model = build_model(ModelConfig(architecture=architecture, backbone=backbone, num_classes=80))
    images = tf.zeros([1, 511, 511, 3])
    out = model(images, training=False)
    assert count_trainable_parameters(model) == expected
    # Per block, against the closed forms.
    backbone_layer = model.backbone
    assert count_trainable_parameters(backbone_layer.stem) == STEM
    assert backbone_layer.stem(images).shape == (1, 128, 128, 256)
    for hg, cnv in zip(backbone_layer.hourglasses, backbone_layer.cnvs):
        assert count_trainable_parameters(hg) == HOURGLASS
        assert count_trainable_parameters(cnv) == CNV
    for i in range(model.num_stacks - 1):
        inter = sum(
            count_trainable_parameters(layer)
            for layer in (backbone_layer.inter_convs[i], backbone_layer.cnv_convs[i], backbone_layer.inter_blocks[i])
        )
        assert inter == INTER
    centernet = architecture == "centernet"
    for modules in model.stack_modules:
        assert count_trainable_parameters(modules["tl_pool"]) == (CASCADE_POOL if centernet else CORNER_POOL)
        assert count_trainable_parameters(modules["br_pool"]) == (CASCADE_POOL if centernet else CORNER_POOL)
        assert count_trainable_parameters(modules["tl_heatmap"]) == head(80)
        assert count_trainable_parameters(modules["tl_embedding"]) == head(1)
        assert count_trainable_parameters(modules["br_offset"]) == head(2)
        if centernet:
            assert count_trainable_parameters(modules["ct_pool"]) == CENTER_POOL
            assert count_trainable_parameters(modules["ct_offset"]) == head(2)
    assert out["tl_heatmap"].shape == (1, 128, 128, 80)
    assert out["tl_offset"].shape == (1, 128, 128, 2)
    assert ("ct_heatmap" in out) == centernet
    assert all(np.isfinite(v.numpy()).all() for v in out.values())


# The sorted "path:shape" list of every dataset in a weights file that the
# project wrote before the keras-hub redesign (tests/tiny.py model, 2
# classes, Adam slots built): the layout of every earlier checkpoint. The
# redesigned backbone is a `keras.Model`, which Keras saves with its
# sub-layers under ``layers/``; a file in the earlier layout must still load.
EARLIER_LAYOUT_SHA256 = "382e5d907f8961debd8899ce82fe23a5db9872cf339b075813a81c4110f70ff3"


def _dataset_names(path):
    import h5py

    names = []
    with h5py.File(path, "r") as f:
        f.visit(lambda n: names.append(f"{n}:{f[n].shape}") if isinstance(f[n], h5py.Dataset) else None)
    return names


def test_checkpoints_of_earlier_releases_load(tmp_path):
    import hashlib

    import h5py

    from support.tiny import TINY_MODEL
    from tf_centernet.checkpoints import load_checkpoint
    from tf_centernet.config import load_config

    config = load_config("demo", TINY_MODEL + ["model.num_classes=2"])

    def compiled(seed):
        keras.utils.set_random_seed(seed)
        model = build_model(config.model, config.loss, config.decode)
        model.compile(optimizer=keras.optimizers.Adam())
        model.optimizer.build(model.trainable_variables)
        return model

    source = compiled(1)
    path = str(tmp_path / "ckpt-7.weights.h5")
    source.save_weights(path)
    # Rewrite the file into the earlier layout: backbone/layers/NAME -> backbone/NAME.
    with h5py.File(path, "r+") as f:
        for name in list(f["backbone/layers"].keys()):
            f.move(f"backbone/layers/{name}", f"backbone/{name}")
        del f["backbone/layers"]
    names = _dataset_names(path)
    assert hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest() == EARLIER_LAYOUT_SHA256

    target = compiled(2)
    load_checkpoint(target, path)
    x = tf.random.stateless_normal([1, 127, 127, 3], seed=[1, 2])
    expected, got = source(x, training=False), target(x, training=False)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])
    for a, b in zip(source.optimizer.variables, target.optimizer.variables):
        np.testing.assert_array_equal(a, b)
