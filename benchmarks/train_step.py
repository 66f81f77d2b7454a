"""The training step, profiled per op type, under the settings TensorFlow offers.

    python benchmarks/train_step.py [--config centernet_hg52] [--size 511] [--batch 2]
        [--variants default,eigen,bf16,xla] [--steps 3] [--release PATH]

Each variant runs in its own subprocess (environment variables such as
``TF_ENABLE_ONEDNN_OPTS`` only take effect at import): the model of
``--config`` with random weights, compiled as `tf_centernet.training.train`
compiles it (the optimizer of ``train.optimizer`` behind the non-finite guard,
``train.jit_compile``), one batch of the real input pipeline (coco-tiny,
the targets training asks for) repeated, so only the step is timed: forward,
loss, backward and the optimizer update. After ``--warmup`` steps, the
median of ``--steps`` wall times, then two steps under the TensorFlow
profiler, whose CPU op events are summed by op type (``name:Type``).

Variants:

- ``default``: TensorFlow as installed (oneDNN on where TensorFlow enables
  it: CPUs with AVX-512; off on AVX2-only CPUs up to TF 2.20 unless set).
- ``onednn`` / ``eigen``: ``TF_ENABLE_ONEDNN_OPTS=1`` / ``0``.
- ``bf16``: ``model.compute_dtype=bfloat16`` (mixed precision; changes the
  numerics: not the release's contract, listed as a setting tried).
- ``xla``: ``train.jit_compile=true`` (dense targets, the pooling scans).

``--before PATH`` adds the variant ``before``: the default settings with the
``tf_centernet`` of another checkout (e.g. ``git worktree add /tmp/base
BASE``), for a before/after pair in one run.

``--isa avx2`` caps oneDNN (``ONEDNN_MAX_CPU_ISA``, in TensorFlow and in
torch) and torch's own kernels (``ATEN_CPU_CAPABILITY``) at AVX2, to see on
an AVX-512 machine what an AVX2-only CPU gets (TensorFlow's Eigen kernels do
not depend on it; on an AVX2-only CPU TensorFlow 2.20 runs them by default,
the ``eigen`` variant).

With ``--release PATH`` (a checkout of the authors' CenterNet), the release's
step runs first (CenterNet-52 at 511 whatever ``--config``; the release's
model, loss and Adam step as `release_side.py` beside this file builds
them, with its substitutions), profiled with `torch.profiler` (self CPU
time per aten op; torch's ``convolution_backward`` computes the input and
the filter gradient in one op). The summary's last column is each
variant's step time over the first one's (the release's when given).
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
COCO = os.path.join(REPO, "..", "shared", "data", "coco-tiny")

VARIANTS = {
    "default": ({}, []),
    "onednn": ({"TF_ENABLE_ONEDNN_OPTS": "1"}, []),
    "eigen": ({"TF_ENABLE_ONEDNN_OPTS": "0"}, []),
    "bf16": ({}, ["model.compute_dtype=bfloat16"]),
    "xla": ({}, ["train.jit_compile=true"]),
}


def op_type_totals(logdir):
    """{op type: milliseconds} summed over the TensorFlow op events of the profile in `logdir`."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    path = sorted(glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb")))[-1]
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    totals = collections.Counter()
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        for line in plane.lines:
            if not line.name.startswith("tf_"):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                op_type = name.rsplit(":", 1)[1] if ":" in name else None  # "scope/op_name:OpType"
                if op_type and op_type != "Process":  # "Process": a whole function's span, not an op
                    totals[op_type] += event.duration_ps / 1e9
    return totals


def worker(args):
    """One variant in this process; prints a JSON dict."""
    import tensorflow as tf

    from tf_centernet.config import load_config
    from tf_centernet.data import CocoDataset, build_train_dataset
    from tf_centernet.models.presets import build_model
    from tf_centernet.training.optimizer import build_optimizer
    try:
        from tf_centernet.training.task import target_heatmaps
    except ImportError:  # revisions before train.heatmaps: sparse, dense under XLA

        def target_heatmaps(train_config):
            return "dense" if train_config.jit_compile else "sparse"

    config = load_config(args.config, [f"data.input_size={args.size}", f"train.batch_size={args.batch}", *args.set])
    if config.train.jit_compile:
        config.model.pooling_impl = "scan"
    dataset = CocoDataset(os.path.join(COCO, "annotations", "instances_train2017.json"), os.path.join(COCO, "train2017"))
    model = build_model(config.model, config.loss, config.decode, config.data)
    model.build((None, args.size, args.size, 3))
    optimizer = build_optimizer(config.train)
    model.compile(optimizer=optimizer, jit_compile=bool(config.train.jit_compile))
    optimizer.build(model.trainable_variables)
    data = build_train_dataset(dataset, config, batch_size=args.batch, heatmaps=target_heatmaps(config.train))
    batch = next(iter(data))
    iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
    model.make_train_function()
    step = model.train_function
    start = time.perf_counter()
    for _ in range(args.warmup):
        float(step(iterator)["loss"])
    warmup = time.perf_counter() - start
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        float(step(iterator)["loss"])
        times.append(time.perf_counter() - start)
    logdir = os.path.join(args.work, f"profile-{os.getpid()}")
    tf.profiler.experimental.start(logdir)
    for _ in range(2):
        float(step(iterator)["loss"])
    tf.profiler.experimental.stop()
    totals = op_type_totals(logdir)
    print(json.dumps({
        "step_s": statistics.median(times), "times": times, "warmup_s": warmup,
        "ops_ms_per_step": {k: v / 2 for k, v in totals.most_common()},
    }))


def release_worker(args):
    """The release's step (`release_side.ReleaseSide`) under `torch.profiler`; prints a JSON dict."""
    import importlib

    import torch

    sys.path.insert(0, HERE)
    import release_side

    side = release_side.ReleaseSide(args.release, args.build_dir, args.batch)
    db = side.db("trainval")
    sample = importlib.import_module("sample.coco")
    with release_side.contextlib_quiet():
        batch, _ = sample.kp_detection(db, 0, True, False)
        factory = side.factory(db)
    factory.train_mode()

    def step():
        with release_side.contextlib_quiet():
            return float(factory.train(batch["xs"], batch["ys"])[0])

    start = time.perf_counter()
    for _ in range(args.warmup):
        step()
    warmup = time.perf_counter() - start
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        for _ in range(2):
            step()
    totals = collections.Counter()
    for event in profile.key_averages():  # self time: an op's own work, not its callees'
        if event.self_cpu_time_total > 0:
            totals[event.key] += event.self_cpu_time_total / 1e3
    print(json.dumps({
        "step_s": statistics.median(times), "times": times, "warmup_s": warmup, "threads": torch.get_num_threads(),
        "ops_ms_per_step": {k: v / 2 for k, v in totals.most_common()},
    }))


def group(op_type):
    """A coarse class of a TensorFlow op type (or a torch op name) for the summary table."""
    if op_type.startswith("aten::") or "Backward" in op_type or op_type.startswith("Optimizer"):
        return torch_group(op_type)
    name = op_type.replace("_MklNative", "").replace("_Mkl", "")
    if "Conv2D" in name:
        if "BackpropFilter" in name:
            return "conv filter gradient"
        if "BackpropInput" in name:
            return "conv input gradient"
        return "conv forward"
    if "BatchNorm" in name:
        return "batch norm"
    if "DirectionalPool" in name or "Cum" in name:
        return "corner/center pooling"
    if name.startswith("ResourceApply") or name.startswith("Assign"):
        return "optimizer update"
    if name in ("IsFinite", "All"):
        return "non-finite guard"
    return "other element-wise / loss"


def torch_group(name):
    """`group` for the release's torch ops (its convolution backward computes both gradients in one op)."""
    if "convolution_backward" in name:
        return "conv input + filter gradient"
    if "convolution" in name or "conv2d" in name:
        return "conv forward"
    if "batch_norm" in name:
        return "batch norm"
    if name.startswith("Optimizer") or name in ("aten::lerp_", "aten::addcmul_", "aten::addcdiv_", "aten::_foreach_add_"):
        return "optimizer update"
    if "Pool" in name or "pool" in name or "cummax" in name or "scatter_add" in name:
        return "corner/center pooling"
    return "other element-wise / loss"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="centernet_hg52")
    parser.add_argument("--size", type=int, default=511)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--variants", default="default,eigen,bf16,xla")
    parser.add_argument("--set", nargs="*", default=[], help="config overrides for every variant")
    parser.add_argument("--work", default="/tmp/train_step_profile")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--isa", help="cap oneDNN's (TensorFlow's and torch's) and torch's kernels at this ISA, e.g. avx2")
    parser.add_argument("--before", help="a checkout of an earlier revision: its step runs as variant 'before' (default settings)")
    parser.add_argument("--release", help="a checkout of the authors' CenterNet: profile its step too (release_side.py)")
    parser.add_argument("--build-dir", default="/tmp/release_side_build", help="release_side.py's build folder")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--release-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.worker:
        return worker(args)
    if args.release_worker:
        return release_worker(args)
    os.makedirs(args.work, exist_ok=True)
    results = {}
    names = (["release"] if args.release else []) + (["before"] if args.before else []) + args.variants.split(",")
    for name in names:
        env_vars, overrides = VARIANTS.get(name, ({}, []))
        common = ["--size", str(args.size), "--batch", str(args.batch), "--steps", str(args.steps),
                  "--warmup", str(args.warmup), "--work", args.work]
        if name == "release":
            command = [sys.executable, os.path.abspath(__file__), "--release-worker", "--release", args.release,
                       "--build-dir", args.build_dir, *common]
        else:
            command = [sys.executable, os.path.abspath(__file__), "--worker", "--config", args.config, *common,
                       "--set", *args.set, *overrides]
        code = os.path.abspath(args.before) if name == "before" else REPO
        env = dict(os.environ, PYTHONPATH=code + os.pathsep + os.environ.get("PYTHONPATH", ""), **env_vars)
        if args.isa:
            env.update(ONEDNN_MAX_CPU_ISA=args.isa.upper(), ATEN_CPU_CAPABILITY=args.isa.lower())
        out = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if out.returncode:
            print(f"{name}: failed\n{out.stderr[-2000:]}")
            continue
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
        report(name, results[name])
    if len(results) > 1:
        base = next(iter(results.values()))["step_s"]
        print("\nvariant        step s   / first")
        for name, result in results.items():
            print(f"{name:12s} {result['step_s']:8.2f} {result['step_s'] / base:8.2f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)


def report(name, result):
    ops = result["ops_ms_per_step"]
    total = sum(ops.values())
    groups = collections.Counter()
    for op_type, ms in ops.items():
        groups[group(op_type)] += ms
    print(f"\n{name}: {result['step_s']:.2f} s per step (median of {len(result['times'])}; "
          f"op time {total / 1e3:.2f} s over all threads)")
    for label, ms in groups.most_common():
        print(f"  {label:28s} {ms / 1e3:8.2f} s {100 * ms / total:5.1f} %")
    print("  top op types: " + ", ".join(f"{k} {100 * v / total:.1f}%" for k, v in list(ops.items())[:8]))


if __name__ == "__main__":
    main()
