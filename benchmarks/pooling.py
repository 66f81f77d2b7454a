"""Directional pooling: pure-TF scan vs the compiled op, on the CPU.

For each shape and direction, times (median of repeated runs, inside
`tf.function`) the forward pass and the forward+backward pass (gradient with
respect to the input for a given upstream gradient) of

* ``scan``: the log-step doubling scan of `tf_centernet.ops.pooling`;
* ``custom``: the compiled op of `tf_centernet.ops.custom` (built on first
  use);
* ``scan+xla`` (with ``--xla``): the scan compiled by XLA;

and a plain copy of the same tensor (``tf.raw_ops.DeepCopy``), the
memory-bandwidth floor: a forward pass reads and writes the tensor once,
like the copy; the backward reads two tensors and writes one.

    python benchmarks/pooling.py [--repeats 10] [--directions top left] [--xla]

Prints one table: times in ms, the scan/custom speed-up and custom/copy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tf_centernet.ops import custom, pooling  # noqa: E402

SHAPES = [(4, 128, 128, 128), (1, 128, 128, 256)]
DIRECTIONS = ["top", "left", "bottom", "right"]


def median_ms(fn, repeats, warmup=2):
    """Median wall time of `fn()` in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def forward_fn(direction, impl, jit=False):
    return tf.function(lambda x: pooling.directional_pool(x, direction, impl), jit_compile=jit)


def forward_backward_fn(direction, impl, jit=False):
    def step(x, upstream):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = pooling.directional_pool(x, direction, impl)
        return y, tape.gradient(y, x, output_gradients=upstream)

    return tf.function(step, jit_compile=jit)


def run(shapes, directions, repeats, xla):
    rows = []
    rng = np.random.default_rng(0)
    for shape in shapes:
        x = tf.constant(rng.normal(size=shape).astype(np.float32))
        upstream = tf.constant(rng.normal(size=shape).astype(np.float32))
        copy = median_ms(lambda: tf.raw_ops.DeepCopy(x=x), repeats)
        for direction in directions:
            for kind, make, args in (
                ("forward", forward_fn, (x,)),
                ("fwd+bwd", forward_backward_fn, (x, upstream)),
            ):
                impls = ["scan", "custom"] + (["scan+xla"] if xla else [])
                times = {}
                for impl in impls:
                    fn = make(direction, impl.split("+")[0], jit=impl == "scan+xla")
                    times[impl] = median_ms(lambda: fn(*args), repeats)
                rows.append((shape, direction, kind, copy, times))
                print(_format_row(rows[-1], xla), flush=True)
    return rows


def _format_row(row, xla):
    shape, direction, kind, copy, times = row
    text = (
        f"{str(shape):18} {direction:6} {kind:8} {copy:8.1f} {times['scan']:9.1f} "
        f"{times['custom']:9.1f} {times['scan'] / times['custom']:8.1f}x {times['custom'] / copy:8.2f}x"
    )
    if xla:
        text += f" {times['scan+xla']:9.1f}"
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per figure (median)")
    parser.add_argument("--directions", nargs="+", default=DIRECTIONS, choices=DIRECTIONS)
    parser.add_argument("--shapes", nargs="+", default=None, help="e.g. 4,128,128,128")
    parser.add_argument("--xla", action="store_true", help="also time the scan under XLA")
    args = parser.parse_args(argv)
    shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes] if args.shapes else SHAPES

    custom.load()  # build outside the timings
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores, float32, "
          f"median of {args.repeats} runs; library {custom.library_path()}")
    header = (
        f"{'shape':18} {'dir':6} {'pass':8} {'copy ms':>8} {'scan ms':>9} {'custom ms':>9} "
        f"{'speed-up':>9} {'vs copy':>9}"
    )
    if args.xla:
        header += f" {'xla ms':>9}"
    print(header)
    print("-" * len(header))
    run(shapes, args.directions, args.repeats, args.xla)
    return 0


if __name__ == "__main__":
    sys.exit(main())
