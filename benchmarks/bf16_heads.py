"""bfloat16 inference vs float32: head differences on the release fixtures.

The network is the release fixtures' small CenterNet (2 stacks, hourglass
levels 2, widths 32/32/48, blocks 1/1/2, stem 16, cnv_dim 32, pooling width
128, 3 classes) with the weights of the fixture snapshot
``centernet_small.pkl``, converted by `tf_centernet.convert` (needs the
``convert`` extra: torch). The inputs are the fixtures' two images (``a``:
1x255x255, ``b``: 2x127x191, channels reversed to RGB as the converter's
parity tests do), from ``../shared/data/release-fixtures``.

The same converted weights run under ``model.compute_dtype=float32`` and
``bfloat16``. For each head: max and mean |bf16 - float32|, the max's ratio
to max |float32 value|, for heatmaps the max difference of the sigmoid
scores, and (column ``f32 vs release``) the float32 model's max difference
from the official PyTorch outputs, as the float32 floor.

    python benchmarks/bf16_heads.py [--fixtures DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tf_centernet.config import load_config  # noqa: E402
from tf_centernet.convert.mapping import load_release_state  # noqa: E402
from tf_centernet.convert.snapshot import read_snapshot  # noqa: E402
from tf_centernet.models.presets import build_model  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "..", "shared", "data", "release-fixtures")
SMALL_RELEASE = [
    "model.num_classes=3", "model.levels=2", "model.widths=[32,32,48]", "model.blocks=[1,1,2]",
    "model.stem_channels=16", "model.head_channels=32", "model.pool_channels=128",
    "model.pooling_impl=scan",
]


def converted_model(state, compute_dtype):
    """The fixtures' small CenterNet in `compute_dtype`, release weights loaded."""
    config = load_config("centernet_small", SMALL_RELEASE)
    model = build_model(dataclasses.replace(config.model, compute_dtype=compute_dtype))
    model.build((None, None, None, 3))
    load_release_state(model, state, source="centernet_small.pkl")
    return model


def nhwc(array):
    return np.ascontiguousarray(np.transpose(array, (0, 2, 3, 1)))


def head_differences(fixtures=FIXTURES):
    data = np.load(os.path.join(fixtures, "centernet_small_outputs.npz"))
    state = read_snapshot(os.path.join(fixtures, "centernet_small.pkl"))
    reference = converted_model(state, "float32")
    bf16 = converted_model(state, "bfloat16")
    rows = []
    for name in ("a", "b"):
        image = nhwc(data[f"{name}/image"])[..., ::-1].copy()  # release BGR -> RGB
        full = reference(image, training=False)
        half = bf16(image, training=False)
        for key in sorted(full):
            f32, b16 = full[key].numpy(), half[key].numpy()
            assert b16.dtype == np.float32
            release = nhwc(data[f"{name}/{key}"])
            diff = float(np.abs(f32 - b16).max())
            scale = float(np.abs(f32).max())
            sig = ""
            if key.endswith("heatmap"):
                sig = float(np.abs(tf.sigmoid(f32) - tf.sigmoid(b16)).max())
            mean = float(np.abs(f32 - b16).mean())
            floor = float(np.abs(f32 - release).max())
            rows.append((name, image.shape, key, diff, diff / scale, sig, mean, floor))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", default=FIXTURES)
    args = parser.parse_args(argv)
    print(f"{'input':5} {'head':14} {'max|diff|':>10} {'mean|diff|':>10} {'/max|f32|':>10} "
          f"{'sigmoid diff':>12} {'f32 vs release':>14}")
    for name, _, key, diff, rel, sig, mean, floor in head_differences(args.fixtures):
        sig_text = f"{sig:12.2e}" if sig != "" else f"{'':12}"
        print(f"{name:5} {key:14} {diff:10.2e} {mean:10.2e} {rel:10.2e} {sig_text} {floor:14.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
