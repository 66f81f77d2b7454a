"""Decoding's soft-NMS step: before/after, XLA and TF's kernel, on the CPU.

Times (median of repeated runs, inside `tf.function`, ms per image) the
per-class soft-NMS + best-100 step of decoding over 2000 candidates (the
flip-test count: 2 x ``num_dets`` = 1000), side by side in one run:

* ``before``: `soft_nms` as committed at ``--before-ref`` (default ``main``),
  loaded from ``git show`` into a temporary module: one loop iteration per
  selection over all 2000 candidates, invalid ones included;
* ``before+xla``: the same, ``jit_compile=True``;
* ``default``: `tf_centernet.decode.soft_nms` (``decode.nms=gaussian``,
  ``decode.soft_nms_impl=auto``): the compiled op of ``custom_ops/`` (built
  on first use; the TensorFlow loop where it cannot load);
* ``loop``: the same with ``soft_nms_impl=loop``: the TensorFlow loop over
  the valid candidates only (the portable path of exports);
* ``xla``: `soft_nms` with ``static_shapes=True`` under ``jit_compile=True``
  (``decode.jit_compile=true``);
* ``nms=tf``: `soft_nms_tf`, TF's fused kernel (not bit-exact).

Candidates: boxes of 20-400 px in a 800 x 600 image, 80 classes, scores
skewed low (``u^3``) so that every run makes the full 100 selections; two
``--cases`` (valid/classes): all 2000 valid, 80 classes; 400 valid (the
rest rejected with score -1, as pairing and the central-region filter
leave most of them), 80 classes; and 2000 valid of one class, the worst
case of the class-parallel loop (one selection per iteration).

    python benchmarks/soft_nms.py [--repeats 30] [--batch 1] [--before-ref main]

Prints one table of ms per image (median and minimum over interleaved
rounds; the minimum is the steadier figure on a loaded machine) and the
speed-up of ``default`` over ``before``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tf_centernet.decode import resolve_soft_nms_impl, soft_nms, soft_nms_tf  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_before(ref):
    """`soft_nms` of ``git show ref:tf_centernet/decode/soft_nms.py``."""
    source = subprocess.run(
        ["git", "-C", REPO, "show", f"{ref}:tf_centernet/decode/soft_nms.py"],
        check=True, capture_output=True, text=True,
    ).stdout
    folder = tempfile.mkdtemp(prefix="soft_nms_before_")
    path = os.path.join(folder, "soft_nms_before.py")
    with open(path, "w") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location("soft_nms_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.soft_nms


def candidates(batch, n, valid, num_classes, seed=0):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, [800, 600], (batch, n, 2))
    wh = rng.uniform(20, 400, (batch, n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=-1).astype(np.float32)
    scores = (rng.uniform(0.0, 1.0, (batch, n)) ** 3 * 0.9 + 0.01).astype(np.float32)
    for b in range(batch):
        scores[b, rng.permutation(n)[valid:]] = -1.0
    classes = rng.integers(0, num_classes, (batch, n)).astype(np.int32)
    return tf.constant(boxes), tf.constant(scores), tf.constant(classes)


def modes(before):
    """name -> a `tf.function` of (boxes, scores, classes)."""
    return {
        "before": tf.function(lambda b, s, c: before(b, s, c)),
        "before+xla": tf.function(lambda b, s, c: before(b, s, c), jit_compile=True),
        "default": tf.function(lambda b, s, c: soft_nms(b, s, c)),
        "loop": tf.function(lambda b, s, c: soft_nms(b, s, c, impl="loop")),
        "xla": tf.function(lambda b, s, c: soft_nms(b, s, c, static_shapes=True),
                           jit_compile=True),
        "nms=tf": tf.function(lambda b, s, c: soft_nms_tf(b, s, c)),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--candidates", type=int, default=2000)
    parser.add_argument("--cases", nargs="+", default=["2000/80", "400/80", "2000/1"],
                        help="valid candidates/classes per case")
    parser.add_argument("--before-ref", default="main")
    args = parser.parse_args(argv)

    fns = modes(load_before(args.before_ref))
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores, batch {args.batch}, "
          f"{args.candidates} candidates, {args.repeats} interleaved rounds, ms per image; "
          f"default = soft_nms_impl auto -> {resolve_soft_nms_impl('auto')}")
    names = list(fns)
    header = (f"{'valid/classes':>13} | {'stat':>6} | "
              + " | ".join(f"{n:>10}" for n in names) + " | default speed-up")
    print(header)
    print("-" * len(header))
    for case in args.cases:
        valid, num_classes = (int(v) for v in case.split("/"))
        data = candidates(args.batch, args.candidates, valid, num_classes)
        times = {name: [] for name in names}
        for name, fn in fns.items():
            for _ in range(3):  # trace, compile, warm up
                out = fn(*data)
            assert int(out["num_detections"][0]) == 100, (name, out["num_detections"])
        # Interleaved rounds, so that load changes hit every mode alike.
        for _ in range(args.repeats):
            for name, fn in fns.items():
                start = time.perf_counter()
                fn(*data)["num_detections"].numpy()
                times[name].append(1e3 * (time.perf_counter() - start) / args.batch)
        for stat, reduce in (("median", statistics.median), ("min", min)):
            row = {name: reduce(t) for name, t in times.items()}
            cells = " | ".join(f"{row[n]:>10.2f}" for n in names)
            print(f"{case:>13} | {stat:>6} | {cells} | {row['before'] / row['default']:>6.1f}x",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
