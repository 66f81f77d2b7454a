"""Training throughput side by side: 1 vs 2 local workers, XLA off/on, precision.

Usage::

    python benchmarks/scaling.py [--steps 8] [--batch 4] [--size 127]

Each variant trains the demo config (small hourglass) on a synthetic data
set in fresh processes, CPU only:

- ``1 worker``: one process, one device, global batch B;
- ``2 workers``: two processes on 127.0.0.1 under MultiWorkerMirroredStrategy
  (TF_CONFIG per process), global batch B (B/2 per worker);
- ``XLA``: one process with ``train.jit_compile=true`` (pure-TF scans);
- ``bfloat16`` / ``float16``: one process with ``model.compute_dtype``.

Steps/s is the inverse of the median time between optimizer steps after
the first two (tracing, XLA compilation) and images/s is steps/s x B. On a
machine with fewer free cores than workers the 2-worker figure shows the
overhead of the collective runtime, not a speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

WORKER = r"""
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras, numpy as np
from tf_centernet.config import load_config
from tf_centernet.training import train
stamps = []
class Clock(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        stamps.append(time.perf_counter())
train(load_config("demo", sys.argv[2:]), extra_callbacks=[Clock()], progress="none")
gaps = np.diff(stamps)[2:]
with open(sys.argv[1], "w") as f:
    json.dump({"median_step_s": float(np.median(gaps)) if len(gaps) else float("nan")}, f)
"""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_variant(name, workers, overrides, work, timeout):
    """Starts `workers` processes; returns the chief's median step time in seconds."""
    ports = [_free_port() for _ in range(workers)]
    procs, outs = [], []
    for index in range(workers):
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        if workers > 1:
            env["TF_CONFIG"] = json.dumps({
                "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                "task": {"type": "worker", "index": index},
            })
        out = os.path.join(work, f"{name.replace(' ', '_')}-{index}.json")
        outs.append(out)
        model_dir = os.path.join(work, name.replace(" ", "_"))
        procs.append(subprocess.Popen(
            [sys.executable, "-c", WORKER, out, f"train.model_dir={model_dir}", *overrides],
            env=env, stdout=subprocess.DEVNULL, stderr=open(out + ".log", "w"),
        ))
    deadline = time.monotonic() + timeout
    try:
        for proc in procs:
            proc.wait(timeout=max(1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass  # reported as nan
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if procs[0].returncode != 0 or not os.path.isfile(outs[0]):
        return float("nan")
    with open(outs[0]) as f:
        return json.load(f)["median_step_s"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=127)
    parser.add_argument("--timeout", type=int, default=900, help="seconds per variant")
    parser.add_argument("--variants", default="1 worker,2 workers,XLA,bfloat16")
    args = parser.parse_args(argv)
    sys.path.insert(0, ROOT)
    from tf_centernet.data.synthetic import make_synthetic_coco

    work = tempfile.mkdtemp(prefix="scaling-")
    images, annotations = make_synthetic_coco(os.path.join(work, "data"), num_images=16, seed=0)
    common = [
        f"train_data.images={images}", f"train_data.annotations={annotations}",
        f"data.input_size={args.size}", f"train.batch_size={args.batch}",
        f"train.total_steps={args.steps}", f"train.steps_per_epoch={args.steps}",
        f"train.checkpoint_every={10 * args.steps}",
    ]
    variants = {
        "1 worker": (1, []),
        "2 workers": (2, []),
        "XLA": (1, ["train.jit_compile=true"]),
        "bfloat16": (1, ["model.compute_dtype=bfloat16"]),
        "float16": (1, ["model.compute_dtype=float16"]),
    }
    rows = []
    for name in [v.strip() for v in args.variants.split(",")]:
        workers, extra = variants[name]
        seconds = run_variant(name, workers, common + extra, work, args.timeout)
        rows.append((name, workers, seconds))
        print(f"  done: {name}", file=sys.stderr, flush=True)
    base = rows[0][2]
    print(f"demo config, input {args.size}px, global batch {args.batch}, {args.steps} steps, "
          f"{os.cpu_count()} CPU cores")
    print(f"{'variant':<12} {'workers':>7} {'s/step':>8} {'steps/s':>8} {'images/s':>9} {'vs first':>9}")
    for name, workers, seconds in rows:
        print(f"{name:<12} {workers:>7} {seconds:>8.3f} {1 / seconds:>8.3f} {args.batch / seconds:>9.2f} "
              f"{base / seconds:>8.2f}x")


if __name__ == "__main__":
    main()
