"""bfloat16 inference vs float32: head differences on the release fixtures' inputs.

There is no release-weight converter in this branch, so the network is the
release fixtures' small CenterNet *architecture* (2 stacks, hourglass levels
2, widths 32/32/48, blocks 1/1/2, stem 16, cnv_dim 32, pooling width 128, 3
classes) with random weights: Keras initialisation, heatmap bias -2.19,
random BatchNorm affine parameters and running statistics set from
training-mode passes on noise. The inputs are the fixtures' two images
(``a``: 1x255x255, ``b``: 2x127x191, from
``../shared/data/release-fixtures/centernet_small_outputs.npz``).

The same weights run under ``model.compute_dtype=float32`` and ``bfloat16``;
for each head: max |difference| and its ratio to max |float32 value|, and for
heatmaps the max difference of the sigmoid scores.

    python benchmarks/bf16_heads.py [--fixtures DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tf_centernet.config import load_config  # noqa: E402
from tf_centernet.models.detector import build_model  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "..", "shared", "data", "release-fixtures")


def small_release_config(compute_dtype):
    """The fixtures' small CenterNet architecture as a ModelConfig."""
    config = load_config(
        "centernet_small",
        [
            "model.num_classes=3",
            "model.levels=2",
            "model.widths=[32,32,48]",
            "model.blocks=[1,1,2]",
            "model.stem_channels=16",
            "model.head_channels=32",
            "model.pool_channels=128",
            "model.pooling_impl=scan",
        ],
    )
    return dataclasses.replace(config.model, compute_dtype=compute_dtype)


def randomize_batch_norm(model, seed=0):
    """Random BN affine parameters; running statistics from noise passes."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.gamma.assign(rng.uniform(0.5, 1.5, layer.gamma.shape).astype(np.float32))
            layer.beta.assign(rng.normal(0, 0.1, layer.beta.shape).astype(np.float32))
            layer.momentum = 0.0  # one pass sets the statistics
    noise = tf.constant(rng.normal(size=(2, 255, 255, 3)).astype(np.float32))
    model(noise, training=True)


def head_differences(fixtures=FIXTURES):
    data = np.load(os.path.join(fixtures, "centernet_small_outputs.npz"))
    keras.utils.set_random_seed(317)
    reference = build_model(small_release_config("float32"))
    reference.build((None, None, None, 3))
    randomize_batch_norm(reference)
    bf16 = build_model(small_release_config("bfloat16"))
    bf16.build((None, None, None, 3))
    bf16.set_weights(reference.get_weights())
    rows = []
    for name in ("a", "b"):
        image = np.transpose(data[f"{name}/image"], (0, 2, 3, 1))
        full = reference(image, training=False)
        half = bf16(image, training=False)
        for key in sorted(full):
            f32, b16 = full[key].numpy(), half[key].numpy()
            assert b16.dtype == np.float32
            diff = float(np.abs(f32 - b16).max())
            scale = float(np.abs(f32).max())
            sig = ""
            if key.endswith("heatmap"):
                sig = float(np.abs(tf.sigmoid(f32) - tf.sigmoid(b16)).max())
            mean = float(np.abs(f32 - b16).mean())
            rows.append((name, image.shape, key, diff, diff / scale, sig, mean))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", default=FIXTURES)
    args = parser.parse_args(argv)
    print(f"{'input':5} {'head':14} {'max|diff|':>10} {'mean|diff|':>10} {'/max|f32|':>10} {'sigmoid diff':>12}")
    for name, _, key, diff, rel, sig, mean in head_differences(args.fixtures):
        sig_text = f"{sig:12.2e}" if sig != "" else f"{'':12}"
        print(f"{name:5} {key:14} {diff:10.2e} {mean:10.2e} {rel:10.2e} {sig_text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
