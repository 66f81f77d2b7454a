"""All speed figures of issue 14 in one run, as ratios side by side.

    python benchmarks/run.py [--full] [--repeats 5] [--base 0f82836]

Sections (each prints a table as it finishes; a summary at the end):

1. Input pipeline on coco-tiny (train2017) at 511: JPEG decode, augmentation
   and target encoding per image on one thread (wall and CPU ms), and the
   whole `build_train_dataset` (parallel, default options): images/s and
   images per CPU-second. "before" is the code of the base revision
   (``--base``, unpacked with ``git archive`` into a temporary folder),
   "after" this checkout; each runs in its own subprocess. Also the peak
   RSS, and "after" with the sparse targets training uses (keypoints
   instead of heatmaps, drawn in the loss).
2. Directional pooling (4, 128, 128, 128) float32, top and left: plain copy,
   compiled op, scan, scan under XLA; forward and forward+backward (pieces
   of benchmarks/pooling.py). "scan fwd+bwd before" differentiates the
   scan's steps (the gradient before the custom one).
3. Decoding (flip test) of random CenterNet heads at 511 (128x128 grid, 80
   classes), in a `tf.function`, with each ``decode.nms`` option,
   ``decode.soft_nms_impl`` (compiled op by default, "loop" the TensorFlow
   loop) and ``decode.jit_compile`` (the soft-NMS step alone, before/after:
   benchmarks/soft_nms.py).
4. Forward pass at 511, batch 1: CenterNet-52 with ``--full`` (about 10 s
   per forward here, plus minutes of XLA compilation), else the small
   CenterNet at 255; compiled pooling, scan, scan under XLA, bf16.
5. Training step at batch 2 (the small CenterNet at 255, random weights,
   Adam): compiled pooling, scan with the custom gradient, scan with the
   old step-by-step gradient.

CPU time comes from `resource.getrusage` (all threads of the process).
Times are medians of ``--repeats`` runs. On a shared machine absolute
figures move; compare the ratios, measured side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
COCO = os.path.join(REPO, "..", "shared", "data", "coco-tiny")

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def median_ms(fn, repeats, warmup=1):
    """Median wall time of `fn()` in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def interleaved_ms(fns, repeats, warmup=1):
    """{name: median ms}, every round running each function once in turn.

    A load change on a shared machine then hits all candidates alike, so
    their ratios hold better than those of back-to-back medians.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(values) for name, values in times.items()}


# --------------------------------------------------------------------------
# 1. Input pipeline (runs in a worker subprocess, once per code version).
# --------------------------------------------------------------------------


def pipeline_worker(mode, num_images, input_size, batches):
    """Figures of the `tf_centernet` first on sys.path, as a JSON dict."""
    import tensorflow as tf

    if mode == "stages":
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    from tf_centernet.config import Config
    from tf_centernet.data import CocoDataset, augment_for_training, build_train_dataset, decode_image
    from tf_centernet.targets import encode_targets

    dataset = CocoDataset(
        os.path.join(COCO, "annotations", "instances_train2017.json"), os.path.join(COCO, "train2017")
    )
    config = Config()
    config.data.input_size = input_size
    data = config.data
    if mode in ("pipeline", "pipeline-sparse"):
        config.train.batch_size = 8
        # "pipeline-sparse": the keypoints instead of the heatmaps (what
        # training uses since the sparse targets; not in older revisions).
        options = {"heatmaps": "sparse"} if mode == "pipeline-sparse" else {}
        pipeline = iter(build_train_dataset(dataset, config, **options))
        for _ in range(2):
            next(pipeline)
        cpu, wall = cpu_seconds(), time.perf_counter()
        for _ in range(batches):
            next(pipeline)
        cpu, wall = cpu_seconds() - cpu, time.perf_counter() - wall
        images = batches * config.train.batch_size
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux: KiB)
        return {"images_per_s": images / wall, "images_per_cpu_s": images / cpu, "cores": cpu / wall,
                "peak_rss_mib": peak}

    records = dataset.records[:num_images]
    decode = tf.function(decode_image)
    augment = tf.function(
        lambda image, boxes, classes, seed: augment_for_training(image, boxes, classes, data, seed=seed)
    )
    encode = tf.function(
        lambda boxes, classes: encode_targets(
            boxes,
            classes,
            input_size=data.input_size,
            output_size=data.output_size,
            num_classes=80,
            max_objects=data.max_objects,
            with_centers=True,
        ),
        reduce_retracing=True,
    )
    stages = {"decode": [0.0, 0.0], "augment": [0.0, 0.0], "encode": [0.0, 0.0]}
    for rounds in (0, 1):  # a warm-up round (tracing), then the timed one
        for number, record in enumerate(records):
            seed = tf.constant([0, number], tf.int64)
            results = {}
            for stage, call in (
                ("decode", lambda: decode(tf.constant(record.file_name))),
                ("augment", lambda: augment(results["decode"], record.boxes, record.classes, seed)),
                ("encode", lambda: encode(results["augment"][1], results["augment"][2])),
            ):
                cpu, wall = cpu_seconds(), time.perf_counter()
                results[stage] = call()
                tf.nest.map_structure(lambda t: t.numpy(), results[stage])
                if rounds:
                    stages[stage][0] += 1e3 * (time.perf_counter() - wall) / len(records)
                    stages[stage][1] += 1e3 * (cpu_seconds() - cpu) / len(records)
    return {f"{stage}_{kind}": value[i] for stage, value in stages.items() for i, kind in enumerate(("ms", "cpu_ms"))}


def run_worker(source_root, mode, args):
    """Runs `pipeline_worker` in a subprocess with `source_root` first on the path."""
    env = dict(os.environ, PYTHONPATH=source_root, TF_CPP_MIN_LOG_LEVEL="3")
    command = [
        sys.executable, os.path.abspath(__file__), "--worker", mode,
        "--images", str(args.images), "--input-size", str(args.input_size), "--batches", str(args.batches),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    if result.returncode:
        raise RuntimeError(f"worker {mode} in {source_root} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def base_checkout(revision):
    """The base revision's tf_centernet/ unpacked into a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="tfc-base-") as folder:
        archive = subprocess.run(
            ["git", "-C", REPO, "archive", revision, "tf_centernet"], capture_output=True, check=True
        ).stdout
        archive_path = os.path.join(folder, "base.tar")
        with open(archive_path, "wb") as f:
            f.write(archive)
        with tarfile.open(archive_path) as tar:
            tar.extractall(folder)
        yield folder


def section_pipeline(args):
    figures = {}
    with base_checkout(args.base) as base:
        for label, root in (("before", base), ("after", REPO)):
            figures[label] = run_worker(root, "stages", args)
            figures[label].update(run_worker(root, "pipeline", args))
        sparse = run_worker(REPO, "pipeline-sparse", args)
    rows = []
    for stage in ("decode", "augment", "encode"):
        for kind, unit in (("ms", "ms/image, 1 thread"), ("cpu_ms", "CPU ms/image, 1 thread")):
            key = f"{stage}_{kind}"
            rows.append((f"{stage} ({unit})", figures["before"][key], figures["after"][key]))
    for key, label in (("images_per_s", "pipeline images/s"), ("images_per_cpu_s", "pipeline images/CPU-s"),
                       ("cores", "pipeline cores busy"), ("peak_rss_mib", "pipeline peak RSS (MiB)")):
        rows.append((label, figures["before"].get(key, float("nan")), figures["after"][key]))
    # After, with the sparse targets training uses: against the dense "before".
    for key, label in (("images_per_s", "pipeline, sparse targets, images/s"),
                       ("images_per_cpu_s", "pipeline, sparse targets, images/CPU-s"),
                       ("peak_rss_mib", "pipeline, sparse targets, peak RSS (MiB)")):
        rows.append((label, figures["before"].get(key, float("nan")), sparse[key]))
    print_table(
        f"1. Input pipeline, coco-tiny train at {args.input_size} (before = {args.base})",
        ("figure", "before", "after", "after/before"),
        [(name, b, a, a / b) for name, b, a in rows],
    )
    return rows


# --------------------------------------------------------------------------
# 2-5. In this process.
# --------------------------------------------------------------------------


def section_pooling(args):
    import numpy as np
    import tensorflow as tf

    sys.path.insert(0, HERE)
    import pooling as pooling_bench  # benchmarks/pooling.py

    from tf_centernet.ops import custom, pooling

    custom.load()
    shape = (4, 128, 128, 128)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=shape).astype(np.float32))
    upstream = tf.constant(rng.normal(size=shape).astype(np.float32))
    rows = []
    for direction in ("top", "left"):
        axis, toward_end = pooling._DIRECTIONS[direction]

        def old_step(t, g):
            with tf.GradientTape() as tape:
                tape.watch(t)
                y = pooling._cummax_scan(t, axis, toward_end)  # differentiated step by step
            return y, tape.gradient(y, t, output_gradients=g)

        old = tf.function(old_step)
        fns = {"copy": lambda: tf.raw_ops.DeepCopy(x=x)}
        for impl, jit in (("custom", False), ("scan", False), ("scan", True)):
            name = impl + ("+xla" if jit else "")
            forward = pooling_bench.forward_fn(direction, impl, jit)
            both = pooling_bench.forward_backward_fn(direction, impl, jit)
            fns[f"{name} fwd"] = lambda forward=forward: forward(x)
            fns[f"{name} fwd+bwd"] = lambda both=both: both(x, upstream)
        fns["scan fwd+bwd before"] = lambda: old(x, upstream)
        times = interleaved_ms(fns, args.repeats)
        rows.append((direction, times))
    table = []
    for direction, t in rows:
        table.append((
            direction, t["copy"], t["custom fwd"], t["scan fwd"], t["scan+xla fwd"],
            t["custom fwd+bwd"], t["scan fwd+bwd"], t["scan+xla fwd+bwd"], t["scan fwd+bwd before"],
            t["scan fwd+bwd"] / t["scan fwd"], t["scan fwd+bwd before"] / t["scan fwd"],
            t["scan fwd+bwd before"] / t["scan fwd+bwd"], t["custom fwd"] / t["copy"],
        ))
    print_table(
        f"2. Directional pooling {shape} float32, ms (median of {args.repeats})",
        ("dir", "copy", "custom", "scan", "scan+xla", "custom f+b", "scan f+b", "xla f+b", "scan f+b before",
         "f+b/f", "before f+b/f", "speed-up f+b", "custom/copy"),
        table,
    )
    return table


def section_decode(args):
    import numpy as np
    import tensorflow as tf

    from tf_centernet import decode
    from tf_centernet.config import DecodeConfig

    rng = np.random.default_rng(1)
    batch, grid, classes = 2, 128, 80  # one image and its flipped copy
    outputs = {}
    for key, channels in (("tl_heatmap", classes), ("br_heatmap", classes), ("ct_heatmap", classes),
                          ("tl_embedding", 1), ("br_embedding", 1), ("tl_offset", 2), ("br_offset", 2),
                          ("ct_offset", 2)):
        scale = 3.0 if key.endswith("heatmap") else 1.0
        outputs[key] = tf.constant(
            (rng.normal(size=(batch, grid, grid, channels)) * scale - (4.0 if scale > 1 else 0)).astype(np.float32)
        )
    geometry = decode.ScaleGeometry(
        scale=1.0,
        borders=tf.constant([[0.0, 511.0, 0.0, 511.0]]),
        sizes=tf.constant([[511.0, 511.0]]),
        ratios=tf.constant([[grid / 511.0, grid / 511.0]]),
    )
    # Each NMS option (benchmarks/soft_nms.py times the soft-NMS step alone,
    # before/after); "gaussian+xla" is decode.jit_compile (the `Decoder`'s
    # compiled function).
    modes = {
        "gaussian": DecodeConfig(),
        "gaussian, loop": DecodeConfig(soft_nms_impl="loop"),
        "gaussian+xla": DecodeConfig(jit_compile=True),
        "merge": DecodeConfig(nms="merge"),
        "merge, loop": DecodeConfig(nms="merge", soft_nms_impl="loop"),
        "tf": DecodeConfig(nms="tf"),
        "none": DecodeConfig(nms="none"),
    }
    fns = {}
    for name, config in modes.items():
        decoder = decode.Decoder(config, use_centers=True)
        fn = tf.function(lambda out, d=decoder: d.decode(out, geometry, flip_test=True))
        fns[name] = lambda fn=fn: fn(outputs)["boxes"].numpy()
    # Interleaved rounds: the options differ by a few ms of about 30.
    rows = list(interleaved_ms(fns, args.repeats, warmup=2).items())
    print_table("3. Decoding at 511 (flip test), ms per image", ("nms", "ms"), rows)
    return rows[0][1]


def _forward_models(args):
    import dataclasses

    from tf_centernet.config import load_config

    if args.full:
        config, size = load_config("centernet_hg52", []), 511
    else:
        config, size = load_config("centernet_small", []), 255
    model = config.model
    return [
        ("custom", dataclasses.replace(model, pooling_impl="custom"), False),
        ("scan", dataclasses.replace(model, pooling_impl="scan"), False),
        ("scan+xla", dataclasses.replace(model, pooling_impl="auto"), True),
        ("bf16 custom", dataclasses.replace(model, pooling_impl="custom", compute_dtype="bfloat16"), False),
    ], size, config


def section_forward(args):
    import keras
    import numpy as np
    import tensorflow as tf

    from tf_centernet.models.presets import build_model

    variants, size, config = _forward_models(args)
    image = tf.constant(np.random.default_rng(2).normal(size=(1, size, size, 3)).astype(np.float32))
    weights = None
    fns, firsts = {}, {}
    for name, model_config, jit in variants:
        keras.utils.set_random_seed(0)
        model = build_model(model_config)
        model.build((None, size, size, 3))
        if weights is None:
            weights = model.get_weights()
        model.set_weights(weights)
        fn = tf.function(lambda t, model=model: model(t, training=False), jit_compile=jit)
        start = time.perf_counter()
        fn(image)  # tracing (and XLA compilation)
        firsts[name] = time.perf_counter() - start
        fns[name] = lambda fn=fn: fn(image)["tl_heatmap"].numpy()
        print(f"  forward {name}: first call {firsts[name]:.1f} s", flush=True)
    times = interleaved_ms(fns, args.forward_repeats, warmup=1)
    rows = [(name, times[name], firsts[name]) for name in fns]
    base = rows[0][1]
    label = f"CenterNet-52 at {size}" if args.full else f"small CenterNet (centernet_small) at {size}"
    print_table(
        f"4. Forward pass, {label}, batch 1, ms (median of {args.forward_repeats})",
        ("variant", "ms", "vs custom", "first call s"),
        [(n, ms, ms / base, first) for n, ms, first in rows],
    )
    return rows


def section_train_step(args):
    import keras
    import numpy as np
    import tensorflow as tf

    from tf_centernet.config import load_config
    from tf_centernet.models.presets import build_model
    from tf_centernet.ops import pooling
    from tf_centernet.targets import encode_targets

    config = load_config("centernet_small", [])
    size, out = config.data.input_size, config.data.output_size
    rng = np.random.default_rng(3)
    images = rng.normal(size=(2, size, size, 3)).astype(np.float32)
    boxes = [np.array([[10, 20, 120, 200], [100, 30, 240, 90]], np.float32)] * 2
    targets = [
        encode_targets(b, [1, 5], input_size=size, output_size=out, num_classes=80,
                       max_objects=config.data.max_objects)
        for b in boxes
    ]
    targets = {k: tf.stack([t[k] for t in targets]) for k in targets[0]}
    original = pooling._scan_with_gradient
    fns = {}
    # "bf16": model.compute_dtype=bfloat16 (bf16 activations, float32
    # weights and loss; no loss scaling is needed for bfloat16).
    for name, impl, old_gradient, dtype in (("custom", "custom", False, "float32"),
                                            ("scan", "scan", False, "float32"),
                                            ("scan, gradient before", "scan", True, "float32"),
                                            ("custom, bf16", "custom", False, "bfloat16")):
        if old_gradient:
            pooling._scan_with_gradient = pooling._cummax_scan
        try:
            keras.utils.set_random_seed(0)
            model_config = dataclasses_replace(config.model, pooling_impl=impl, compute_dtype=dtype)
            model = build_model(model_config, config.loss)
            model.build((None, size, size, 3))
            model.compile(optimizer=keras.optimizers.Adam(1e-4), jit_compile=False)
            model.train_on_batch(images, targets)  # traced now, with this gradient
        finally:
            pooling._scan_with_gradient = original
        fns[name] = lambda model=model: model.train_on_batch(images, targets)
    times = interleaved_ms(fns, args.repeats, warmup=1)
    rows = [(name, times[name]) for name in fns]
    print_table(
        f"5. Training step, centernet_small at {size}, batch 2, ms (median of {args.repeats})",
        ("pooling", "ms", "vs custom"),
        [(n, ms, ms / rows[0][1]) for n, ms in rows],
    )
    return rows


def dataclasses_replace(obj, **changes):
    import dataclasses

    return dataclasses.replace(obj, **changes)


def print_table(title, header, rows):
    print(f"\n{title}")
    widths = [max(len(str(h)), 10) for h in header]
    widths[0] = max([len(str(h)) for h in header[:1]] + [len(str(r[0])) for r in rows])
    print("  ".join(str(h).rjust(w) if i else str(h).ljust(w) for i, (h, w) in enumerate(zip(header, widths))))
    for row in rows:
        cells = []
        for i, (value, w) in enumerate(zip(row, widths)):
            text = f"{value:.3g}" if isinstance(value, float) else str(value)
            cells.append(text.ljust(w) if i == 0 else text.rjust(w))
        print("  ".join(cells), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="forward pass of CenterNet-52 at 511 (slow)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per figure (median)")
    parser.add_argument("--forward-repeats", type=int, default=2, help="timed forward passes (median)")
    parser.add_argument("--base", default="0f82836", help="git revision for the 'before' pipeline")
    parser.add_argument("--images", type=int, default=24, help="images for the per-stage figures")
    parser.add_argument("--input-size", type=int, default=511)
    parser.add_argument("--batches", type=int, default=12, help="timed pipeline batches of 8")
    parser.add_argument(
        "--sections", nargs="+", default=["pipeline", "pooling", "decode", "forward", "train"],
        choices=["pipeline", "pooling", "decode", "forward", "train"],
    )
    parser.add_argument("--worker", choices=["stages", "pipeline", "pipeline-sparse"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(pipeline_worker(args.worker, args.images, args.input_size, args.batches)))
        return 0
    import tensorflow as tf

    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores, load average "
          f"{os.getloadavg()[0]:.1f} at start")
    sections = {
        "pipeline": section_pipeline,
        "pooling": section_pooling,
        "decode": section_decode,
        "forward": section_forward,
        "train": section_train_step,
    }
    for name in args.sections:
        sections[name](args)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
