"""This project next to the authors' PyTorch release (Duankaiwen/CenterNet), same machine, same run.

    python benchmarks/release_side.py --release /work/release-centernet \\
        [--rows pipeline,train,detect] [--rounds 3] [--json out.json]

``--release`` is an unpacked checkout of https://github.com/Duankaiwen/CenterNet
(nothing of it is copied here: its modules are imported from that path).
Each side runs in its own fresh subprocess (TensorFlow and torch never
share a process); every round runs the release, then ours, and the tables
give the median over ``--rounds`` rounds, with ratios ours / release (lower
is better). CenterNet-52 (CenterNet511-52, 80 classes) throughout, with the
settings of the release's ``config/CenterNet-52.json``; random weights
(seeded), so the timings are those of trained models but the detections are
not meaningful.

Rows:

1. ``pipeline``: the steady-state training input pipeline on coco-tiny
   ``train2017`` at 511, batch 4, ONE iterator, after ``--pipeline-warmup``
   batches, over ``--pipeline-batches`` batches: CPU seconds per image
   (``resource.getrusage(RUSAGE_SELF)`` user + sys, all threads), wall
   images/s and the subprocess's peak RSS (``ru_maxrss``). Release: its
   ``sample/coco.py`` ``kp_detection(db, k_ind, data_aug=True, debug=False)``
   (random crop over ``rand_scales`` 0.6-1.3, border 128, colour jitter and
   lighting, Gaussian corner / centre heatmaps, ``torch.from_numpy`` of the
   outputs), called in a loop in one process (the release trains with
   several sampler processes; one iterator here). Ours:
   `tf_centernet.data.build_train_dataset` with ``heatmaps="sparse"`` (what
   training uses), and with ``heatmaps="dense"`` as a third column.
2. ``train``: one training step at batch 2, 511x511, after ``--train-warmup``
   steps, median of ``--train-steps`` steps, on one fixed batch from each
   side's own sampler. Release: ``models/CenterNet-52.py`` ``model`` and
   ``loss`` (random init, ``torch.manual_seed(317)``), driven by
   ``nnet/py_factory.py``'s ``NetworkFactory.train`` (zero_grad, forward,
   loss, backward, Adam step; lr 2.5e-4 set with its ``set_lr``), torch's
   default threads. Ours: ``centernet_hg52`` built, compiled and with the
   optimizer of ``tf_centernet/training/task.py`` (`build_optimizer`:
   Adam behind `NonFiniteGuardOptimizer`; ``train.jit_compile`` as
   configured, off), sparse targets from our pipeline, timed per
   ``train_on_batch`` call (Keras' compiled ``train_function``, what
   ``fit`` runs per step), TensorFlow's default threads.
3. ``detect``: the per-image detect path on the first ``--images`` images of
   coco-tiny ``val2017`` (after one warm-up image), flip test, K=70,
   Gaussian soft-NMS (``exp_soft_nms``, Nt 0.5), 100 detections. Release:
   its ``test/coco.py`` ``kp_detection`` called once per image (``db_inds``
   set to that image): ``cv2.imread``, resize / pad to ``size | 127``,
   normalisation, network forward on the image and its flip, its
   ``_decode``, the centre-region filtering and rescoring, per-class
   soft-NMS from ``external/nms.pyx`` and the top-100 cut. The release's
   random ``state_dict`` is saved as a release-format snapshot (keys
   ``module.*``) and converted with `tf_centernet.convert.convert_snapshot`,
   so both sides run the same weights. Ours: (a) Keras: read the image
   (`load_image_rgb`) and ``predict_images([image])`` (the model directory's
   decode settings: flip test, top-k 70, soft-NMS), (b) ``tflite-int8-full``
   exported at the most common size of the timed images (other sizes are
   resized to it, as ``benchmarks/cpu_engines.py`` does), calibrated on
   ``--calibration-images`` training images, run with the TFLite
   interpreter (XNNPACK, all cores). "first call" is model load plus the
   first image. "max box diff" compares the release's 10 best boxes with
   the nearest Keras box of the same class (pixels; random weights give
   many near-equal scores, so it is a sanity check, not a parity test).

Substitutions on the release side (it targets torch 0.4 and CUDA):

- Corner pooling: the C++ extension's forward (``models/py_utils/_cpools/
  src/*.cpp``) is compiled unchanged with ``torch.utils.cpp_extension.load``
  into ``--build-dir``, minus its backward function, which allocates CUDA
  tensors (``torch::CUDA``) and does not compile against torch >= 2
  (``at::zeros(Type, sizes)``). The backward of the four pools is a CPU
  substitute: the argmax is recomputed with ``torch.cummax`` along the
  pooling direction and the output gradient scatter-added to it (on ties
  cummax picks the last position, the release's loop the first: same cost).
- Soft-NMS: ``external/nms.pyx`` is compiled with Cython into the build
  dir after two type fixes in the hard-NMS function ``nms`` that the test
  path does not call (``np.float`` -> ``double``, ``np.int_t`` ->
  ``np.intp_t``: both gone in NumPy 2 / Cython 3).
- Data: the release's own ``db/coco.py`` ``MSCOCO`` reads coco-tiny through
  links in the build dir named as it expects (``trainval2014`` = train2017,
  ``minival2014`` = val2017). ``evaluate`` (the COCO evaluation after the
  loop) is skipped in ``detect``.
- No CUDA: no ``DataParallel`` (NetworkFactory's ``__init__`` moves the
  network to CUDA, so its ``train`` / ``test`` are used on a factory built
  without it; ``test``'s ``.cuda()`` copy of the inputs is left out).
- ``test/coco.py`` imports matplotlib for its debug drawings, which never
  run here: an empty stand-in module is installed when it is missing.

CPU time comes from `resource.getrusage` (all threads of the process).
The machine is usually shared: the load average is printed with each row.
"""

from __future__ import annotations

import argparse
import glob
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
COCO = os.path.abspath(os.path.join(REPO, "..", "shared", "data", "coco-tiny"))
if not os.path.isdir(COCO):
    COCO = "/work/shared/data/coco-tiny"
ROWS = ("pipeline", "train", "detect")
SEED = 317
POOLS = {  # name: (axis, scanned from the last index)
    "top_pool": (2, True), "bottom_pool": (2, False), "left_pool": (3, True), "right_pool": (3, False),
}

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def version(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def machine():
    """CPU model, ISA flags, cores, library versions."""
    model, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name") and model in ("unknown", "x86_64", ""):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {
        "cpu": model, "cores": os.cpu_count(),
        "isa": {flag: flag in flags for flag in ("avx2", "avx512f", "avx512_bf16", "amx_tile")},
        "python": platform.python_version(), "tensorflow": version("tensorflow"), "keras": version("keras"),
        "torch": version("torch"), "numpy": version("numpy"), "opencv": version("opencv-python") if version(
            "opencv-python") != "missing" else version("opencv-python-headless"),
    }


def load_average():
    return round(os.getloadavg()[0], 2)


# --------------------------------------------------------------------------
# The release side (runs in a torch-only subprocess).
# --------------------------------------------------------------------------


def coco_links(build_dir):
    """coco-tiny under the names the release's MSCOCO reads (``data_dir``/coco/...)."""
    root = os.path.join(build_dir, "data", "coco")
    for folder in ("annotations", "images"):
        os.makedirs(os.path.join(root, folder), exist_ok=True)
    for release_name, ours in (("trainval2014", "train2017"), ("minival2014", "val2017")):
        links = {
            os.path.join(root, "annotations", f"instances_{release_name}.json"):
                os.path.join(COCO, "annotations", f"instances_{ours}.json"),
            os.path.join(root, "images", release_name): os.path.join(COCO, ours),
        }
        for link, target in links.items():
            if not os.path.islink(link):
                os.symlink(target, link)
    return os.path.dirname(root)


def build_pools(release, build_dir):
    """The release's corner-pooling forward ops, compiled; ``{name: module}``."""
    from torch.utils import cpp_extension

    modules = {}
    for name in POOLS:
        with open(os.path.join(release, "models", "py_utils", "_cpools", "src", f"{name}.cpp"), encoding="utf-8") as f:
            source = f.read()
        forward = re.search(r"std::vector<at::Tensor>\s+(\w+_forward)\s*\(", source).group(1)
        backward = re.search(r"std::vector<at::Tensor>\s+\w+_backward\s*\(", source).start()
        # The release's forward unchanged; its CUDA-only backward left out.
        source = source[:backward] + (
            f'PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {{ m.def("forward", &{forward}, '
            f'py::call_guard<py::gil_scoped_release>()); }}\n'
        )
        folder = os.path.join(build_dir, "cpools", name)
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{name}_forward.cpp")
        old = None
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                old = f.read()
        if old != source:
            with open(path, "w", encoding="utf-8") as f:
                f.write(source)
        modules[name] = cpp_extension.load(name=name, sources=[path], build_directory=folder, verbose=False)
    return modules


def cpu_pool_backward(axis, reverse):
    """CPU gradient of a release pool: cummax argmax along `axis`, gradient scatter-added there."""
    import torch

    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        if reverse:
            x, grad_output = x.flip(axis), grad_output.flip(axis)
        index = torch.cummax(x, axis)[1]
        grad = torch.zeros_like(x).scatter_add_(axis, index, grad_output)
        return grad.flip(axis) if reverse else grad

    return staticmethod(backward)


def build_nms(release, build_dir):
    """``external/nms.pyx`` compiled with Cython (two type fixes in the unused hard NMS)."""
    folder = os.path.join(build_dir, "nms")
    os.makedirs(folder, exist_ok=True)
    built = glob.glob(os.path.join(folder, "nms*.so"))
    if not built:
        with open(os.path.join(release, "external", "nms.pyx"), encoding="utf-8") as f:
            source = f.read()
        source = source.replace("np.float thresh", "double thresh").replace("np.int_t", "np.intp_t")
        with open(os.path.join(folder, "nms.pyx"), "w", encoding="utf-8") as f:
            f.write(source)
        script = (
            "import numpy\nfrom setuptools import Extension, setup\nfrom Cython.Build import cythonize\n"
            "setup(name='nms', script_args=['build_ext', '--inplace'], ext_modules=cythonize([Extension('nms', ['nms.pyx'], "
            "include_dirs=[numpy.get_include()], extra_compile_args=['-Wno-cpp', '-Wno-unused-function'])], quiet=True))\n"
        )
        result = subprocess.run([sys.executable, "-c", script], cwd=folder, capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(f"Cython build of nms.pyx failed:\n{result.stderr[-3000:]}")
        built = glob.glob(os.path.join(folder, "nms*.so"))
    spec = importlib.util.spec_from_file_location("nms", built[0])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ReleaseSide:
    """The release's modules imported from `release`, with the substitutions of the docstring."""

    def __init__(self, release, build_dir, batch_size):
        import numpy as np
        import torch

        self.release, self.build_dir = release, build_dir
        sys.path.insert(0, release)
        with open(os.path.join(release, "config", "CenterNet-52.json"), encoding="utf-8") as f:
            self.configs = json.load(f)
        system = dict(self.configs["system"])
        system.update(
            batch_size=batch_size, data_dir=coco_links(build_dir), cache_dir=os.path.join(build_dir, "cache"),
            result_dir=os.path.join(build_dir, "results"), snapshot_name="CenterNet-52",
        )
        from config import system_configs

        system_configs.update_config(system)
        self.system_configs = system_configs
        np.random.seed(SEED)
        torch.manual_seed(SEED)

    def db(self, split):
        from db.coco import MSCOCO

        with contextlib_quiet():
            return MSCOCO(self.configs["db"], split)

    def model_module(self):
        import torch

        for name, module in build_pools(self.release, self.build_dir).items():
            sys.modules[name] = module
        import models.py_utils._cpools as cpools

        for name, (axis, reverse) in POOLS.items():
            function = getattr(cpools, "".join(part.title() for part in name.split("_")) + "Function")
            function.backward = cpu_pool_backward(axis, reverse)
        path = os.path.join(self.release, "models", "CenterNet-52.py")
        spec = importlib.util.spec_from_file_location("models.CenterNet_52", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        torch.manual_seed(SEED)
        return module

    def factory(self, db, snapshot=None):
        """A NetworkFactory as ``__init__`` builds it, without DataParallel / CUDA."""
        import torch

        module = self.model_module()  # first: installs the compiled pools that models.py_utils imports
        from nnet.py_factory import DummyModule, Network, NetworkFactory

        torch.manual_seed(SEED)
        factory = NetworkFactory.__new__(NetworkFactory)
        factory.model = DummyModule(module.model(db))
        factory.loss = module.loss
        factory.network = Network(factory.model, factory.loss)
        factory.optimizer = torch.optim.Adam(filter(lambda p: p.requires_grad, factory.model.parameters()))
        with contextlib_quiet():
            factory.set_lr(self.system_configs.learning_rate)
        if snapshot:
            factory.model.load_state_dict(torch.load(snapshot, map_location="cpu", weights_only=True))
        return factory


class contextlib_quiet:
    """Sends stdout to stderr (the release prints; a worker's stdout carries its JSON)."""

    def __enter__(self):
        self.saved = sys.stdout
        sys.stdout = sys.stderr

    def __exit__(self, *exc):
        sys.stdout = self.saved


def release_pipeline(args):
    import importlib

    side = ReleaseSide(args.release, args.build_dir, args.pipeline_batch)
    db = side.db("trainval")
    sample = importlib.import_module("sample.coco")
    state = {"k_ind": 0}

    def next_batch():
        with contextlib_quiet():
            _, state["k_ind"] = sample.kp_detection(db, state["k_ind"], True, False)

    return measure_pipeline(next_batch, args)


def measure_pipeline(next_batch, args):
    for _ in range(args.pipeline_warmup):
        next_batch()
    cpu, wall = cpu_seconds(), time.perf_counter()
    for _ in range(args.pipeline_batches):
        next_batch()
    cpu, wall = cpu_seconds() - cpu, time.perf_counter() - wall
    images = args.pipeline_batches * args.pipeline_batch
    return {"cpu_ms_per_image": 1e3 * cpu / images, "images_per_s": images / wall, "cores_used": cpu / wall,
            "peak_rss_mib": peak_rss_mib()}


def release_train(args):
    import torch

    side = ReleaseSide(args.release, args.build_dir, args.train_batch)
    db = side.db("trainval")
    import importlib

    sample = importlib.import_module("sample.coco")
    with contextlib_quiet():
        batch, _ = sample.kp_detection(db, 0, True, False)
    factory = side.factory(db)
    factory.train_mode()

    def step():
        with contextlib_quiet():
            return float(factory.train(batch["xs"], batch["ys"])[0])

    result = measure_steps(step, args.train_warmup, args.train_steps)
    result["threads"] = torch.get_num_threads()
    return result


def measure_steps(step, warmup, steps):
    start = time.perf_counter()
    losses = [step()]
    first = time.perf_counter() - start
    for _ in range(warmup - 1):
        losses.append(step())
    times, cpus = [], []
    for _ in range(steps):
        cpu, wall = cpu_seconds(), time.perf_counter()
        losses.append(step())
        times.append(time.perf_counter() - wall)
        cpus.append(cpu_seconds() - cpu)
    return {"step_s": statistics.median(times), "step_cpu_s": statistics.median(cpus), "first_step_s": first,
            "losses": losses, "peak_rss_mib": peak_rss_mib()}


def release_prepare(args):
    """Saves the release model's random weights as a release snapshot (``module.*`` keys)."""
    import torch

    side = ReleaseSide(args.release, args.build_dir, 1)
    db = side.db("minival")
    factory = side.factory(db)
    path = snapshot_path(args)
    torch.save(factory.model.state_dict(), path + ".part")
    os.replace(path + ".part", path)
    return {"snapshot": path, "entries": len(factory.model.state_dict())}


def snapshot_path(args):
    return os.path.join(args.build_dir, "CenterNet-52_random.pth")


def release_detect(args):
    import torch

    side = ReleaseSide(args.release, args.build_dir, 1)
    nms = build_nms(args.release, args.build_dir)
    sys.modules.setdefault("external", types.ModuleType("external"))
    sys.modules["external.nms"] = nms
    if importlib.util.find_spec("matplotlib") is None:
        for name in ("matplotlib", "matplotlib.pyplot"):
            sys.modules[name] = types.ModuleType(name)
    spec = importlib.util.spec_from_file_location("release_test_coco", os.path.join(args.release, "test", "coco.py"))
    test = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(test)

    start = time.perf_counter()
    db = side.db("minival")
    factory = side.factory(db, snapshot_path(args))
    factory.eval_mode()
    found = {}
    convert = db.convert_to_coco

    def capture(all_bboxes):
        for image_id, per_class in all_bboxes.items():
            found[image_id] = [[*map(float, box[:5]), cls - 1] for cls, boxes in per_class.items() for box in boxes]
        return convert(all_bboxes)

    db.convert_to_coco = capture
    db.evaluate = lambda *a, **k: None  # the COCO evaluation after the loop

    class Net:  # NetworkFactory.test without the .cuda() copies
        def test(self, xs, **kwargs):
            with torch.no_grad():
                return factory.model(*xs, **kwargs)

    net, result_dir = Net(), os.path.join(args.build_dir, "results", "release")
    all_inds = db.db_inds.copy()
    order = sorted(range(len(all_inds)), key=lambda i: db.image_ids(all_inds[i]))[: args.images]

    def detect(i):
        db._db_inds = all_inds[i:i + 1]
        with contextlib_quiet():
            test.kp_detection(db, net, result_dir, debug=False)

    detect(order[0])
    first = time.perf_counter() - start
    times, cpus = [], []
    for i in order:
        cpu, wall = cpu_seconds(), time.perf_counter()
        detect(i)
        times.append(time.perf_counter() - wall)
        cpus.append(cpu_seconds() - cpu)
    detections = {name: sorted(boxes, key=lambda b: -b[4])[:100] for name, boxes in found.items()}
    return {"ms": 1e3 * statistics.median(times), "cpu_ms": 1e3 * statistics.median(cpus), "first_call_s": first,
            "threads": torch.get_num_threads(), "detections": detections, "peak_rss_mib": peak_rss_mib()}


# --------------------------------------------------------------------------
# Our side (a TensorFlow-only subprocess).
# --------------------------------------------------------------------------


def our_config(overrides=()):
    from tf_centernet.config import load_config

    return load_config(["centernet_hg52", "coco_tiny"], list(overrides))


def our_dataset(split="train"):
    from tf_centernet.data import CocoDataset

    name = "train2017" if split == "train" else "val2017"
    return CocoDataset(os.path.join(COCO, "annotations", f"instances_{name}.json"), os.path.join(COCO, name))


def ours_pipeline(args, heatmaps):
    from tf_centernet.data import build_train_dataset

    config = our_config()
    batches = iter(build_train_dataset(our_dataset(), config, batch_size=args.pipeline_batch, heatmaps=heatmaps))
    return measure_pipeline(lambda: next(batches), args)


def ours_train(args):
    import keras
    import tensorflow as tf

    from tf_centernet.data import build_train_dataset
    from tf_centernet.models.presets import build_model
    from tf_centernet.training.optimizer import build_optimizer
    from tf_centernet.training.task import target_heatmaps

    keras.utils.set_random_seed(SEED)
    config = our_config([f"train.batch_size={args.train_batch}"])
    tc, size = config.train, config.data.input_size
    heatmaps = target_heatmaps(tc)
    images, targets = next(iter(build_train_dataset(our_dataset(), config, batch_size=args.train_batch, heatmaps=heatmaps)))
    model = build_model(config.model, config.loss, config.decode, config.data)
    model.build((None, size, size, 3))
    optimizer = build_optimizer(tc)
    model.compile(optimizer=optimizer, jit_compile=bool(tc.jit_compile))
    optimizer.build(model.trainable_variables)

    def step():
        logs = model.train_on_batch(images, targets, return_dict=True)
        return float(logs["loss"])

    result = measure_steps(step, args.train_warmup, args.train_steps)
    result.update(threads=tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count(),
                  jit_compile=bool(tc.jit_compile), heatmaps=heatmaps, pooling_impl=config.model.pooling_impl)
    return result


def detect_records(count):
    dataset = our_dataset("val")
    return sorted(dataset.records, key=lambda r: os.path.basename(r.file_name))[:count]


def ours_prepare(args):
    """Converts the release snapshot into a model directory and exports tflite-int8-full from it."""
    import collections

    import cv2

    from tf_centernet import export as export_lib
    from tf_centernet.convert import convert_snapshot
    from tf_centernet.inference import load_detector

    model_dir = os.path.join(args.build_dir, "converted")
    result = {}
    if not os.path.exists(os.path.join(model_dir, "config.yaml")):
        start = time.perf_counter()
        convert_snapshot(snapshot_path(args), our_config(), model_dir)
        result["convert_s"] = time.perf_counter() - start
    sizes = [cv2.imread(r.file_name).shape[:2] for r in detect_records(args.images)]
    (height, width), _ = collections.Counter(sizes).most_common(1)[0]
    path = os.path.join(args.build_dir, f"int8_full_{height}x{width}_cal{args.calibration_images}.tflite")
    if not os.path.exists(path):
        start = time.perf_counter()
        model = load_detector(model_dir)
        config = our_config()
        count = args.calibration_images
        model.export(path + ".part", format="tflite-int8-full", input_size=(height, width), calibration_images=count,
                     representative_images=export_lib.representative_training_images(config, count, model.class_names))
        os.replace(path + ".part", path)
        result["export_s"] = time.perf_counter() - start
    result.update(model_dir=model_dir, tflite=path, export_size=[height, width])
    return result


def ours_detect(args, prepared):
    import numpy as np

    from tf_centernet import export as export_lib
    from tf_centernet.evaluation import load_image_rgb
    from tf_centernet.export.tflite import resize_for_export
    from tf_centernet.inference import load_detector

    records = detect_records(args.images)
    height, width = prepared["export_size"]
    start = time.perf_counter()
    model = load_detector(prepared["model_dir"])

    def keras_detect(record):
        return model.predict_images([load_image_rgb(record.file_name)])[0]

    keras_detect(records[0])
    first = {"keras": time.perf_counter() - start}
    start = time.perf_counter()
    runner = export_lib.tflite_interpreter(prepared["tflite"], num_threads=os.cpu_count()).get_signature_runner()

    def tflite_detect(record):
        out = runner(images=resize_for_export(load_image_rgb(record.file_name), height, width)[None])
        return int(np.asarray(out["num_detections"]).reshape(-1)[0])

    tflite_detect(records[0])
    first["tflite-int8-full"] = time.perf_counter() - start
    times = {"keras": [], "tflite-int8-full": []}
    cpus = {"keras": [], "tflite-int8-full": []}
    detections = {}
    for i, record in enumerate(records):
        engines = [("keras", keras_detect), ("tflite-int8-full", tflite_detect)]
        for name, fn in engines[i % 2:] + engines[:i % 2]:
            cpu, wall = cpu_seconds(), time.perf_counter()
            out = fn(record)
            times[name].append(time.perf_counter() - wall)
            cpus[name].append(cpu_seconds() - cpu)
            if name == "keras":
                detections[os.path.basename(record.file_name)] = [
                    [*map(float, box), float(score), int(cls)]
                    for box, score, cls in zip(out["boxes"], out["scores"], out["classes"])
                ]
    return {"ms": {k: 1e3 * statistics.median(v) for k, v in times.items()},
            "cpu_ms": {k: 1e3 * statistics.median(v) for k, v in cpus.items()},
            "first_call_s": first, "detections": detections, "peak_rss_mib": peak_rss_mib()}


# --------------------------------------------------------------------------
# Driver.
# --------------------------------------------------------------------------


def worker(args):
    name = args.worker
    if name == "release-pipeline":
        return release_pipeline(args)
    if name == "release-train":
        return release_train(args)
    if name == "release-prepare":
        return release_prepare(args)
    if name == "release-detect":
        return release_detect(args)
    if name in ("ours-pipeline-sparse", "ours-pipeline-dense"):
        return ours_pipeline(args, name.rsplit("-", 1)[1])
    if name == "ours-train":
        return ours_train(args)
    if name == "ours-prepare":
        return ours_prepare(args)
    if name == "ours-detect":
        return ours_detect(args, json.loads(args.prepared))
    raise ValueError(f"unknown worker {name}")


def run_worker(name, args, extra=()):
    """One worker in a fresh subprocess; its JSON dict (the last stdout line)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    # Ours imports this checkout; the release side adds --release itself.
    env["PYTHONPATH"] = REPO if name.startswith("ours") else ""
    command = [sys.executable, os.path.abspath(__file__), "--worker", name, "--release", args.release,
               "--build-dir", args.build_dir, *extra]
    for key in ("pipeline_batch", "pipeline_warmup", "pipeline_batches", "train_batch", "train_warmup", "train_steps",
                "images", "calibration_images"):
        command += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=args.build_dir)
    if result.returncode:
        raise RuntimeError(f"worker {name} failed:\n{result.stderr[-4000:]}")
    out = json.loads(result.stdout.strip().splitlines()[-1])
    out["worker_s"] = time.perf_counter() - start
    print(f"  {name}: {out['worker_s']:.0f} s, load {load_average()}", file=sys.stderr, flush=True)
    return out


def median_of(rounds, *keys):
    values = []
    for r in rounds:
        for key in keys:
            r = r[key]
        values.append(r)
    return statistics.median(values)


def ratio(ours, release):
    return ours / release if release else float("nan")


def alternate(args, row, workers):
    """{side: [one result per round]}: every round runs each worker of `workers` ({side: (name, extra)}) in turn."""
    rounds = {side: [] for side in workers}
    for i in range(args.rounds):
        print(f"{row} round {i + 1}/{args.rounds}", file=sys.stderr, flush=True)
        for side, (name, extra) in workers.items():
            rounds[side].append(run_worker(name, args, extra))
    return rounds


def row_pipeline(args):
    rounds = alternate(args, "pipeline", {"release": ("release-pipeline", ()), "sparse": ("ours-pipeline-sparse", ()),
                                          "dense": ("ours-pipeline-dense", ())})
    figures = {side: {key: median_of(r, key) for key in ("cpu_ms_per_image", "images_per_s", "peak_rss_mib", "cores_used")}
               for side, r in rounds.items()}
    rel = figures["release"]
    lines = [
        f"Input pipeline: coco-tiny train2017 at 511, batch {args.pipeline_batch}, one iterator, "
        f"{args.pipeline_warmup} warm-up + {args.pipeline_batches} timed batches; median of {args.rounds} rounds",
        "",
        "| figure | release (NumPy sampler) | ours sparse | ours dense | sparse / release | dense / release |",
        "|---|---|---|---|---|---|",
    ]
    for key, label, fmt in (("cpu_ms_per_image", "CPU ms / image", "{:.1f}"), ("images_per_s", "images / s (wall; higher is better)", "{:.1f}"),
                            ("cores_used", "cores busy (CPU / wall)", "{:.2f}"), ("peak_rss_mib", "peak RSS (MiB)", "{:.0f}")):
        s, d = figures["sparse"][key], figures["dense"][key]
        lines.append(f"| {label} | {fmt.format(rel[key])} | {fmt.format(s)} | {fmt.format(d)} | "
                     f"{ratio(s, rel[key]):.2f} | {ratio(d, rel[key]):.2f} |")
    cpu_ratio = ratio(figures["sparse"]["cpu_ms_per_image"], rel["cpu_ms_per_image"])
    lines.append("")
    lines.append(f"Acceptance: sparse CPU / image {cpu_ratio:.2f}x the release's (target <= 0.7: "
                 f"{'met' if cpu_ratio <= 0.7 else 'NOT met'}); sparse peak RSS {figures['sparse']['peak_rss_mib']:.0f} MiB vs "
                 f"dense {figures['dense']['peak_rss_mib']:.0f} MiB ("
                 f"{'lower' if figures['sparse']['peak_rss_mib'] < figures['dense']['peak_rss_mib'] else 'NOT lower'}).")
    return {"figures": figures, "rounds": rounds, "cpu_ratio_sparse": cpu_ratio}, lines


def row_train(args):
    rounds = alternate(args, "train", {"release": ("release-train", ()), "ours": ("ours-train", ())})
    figures = {side: {key: median_of(r, key) for key in ("step_s", "step_cpu_s", "first_step_s", "peak_rss_mib")}
               for side, r in rounds.items()}
    rel, ours = figures["release"], figures["ours"]
    info = rounds["ours"][0]
    lines = [
        f"Training step: CenterNet-52 at 511, batch {args.train_batch}, Adam 2.5e-4, random init; "
        f"{args.train_warmup} warm-up + {args.train_steps} timed steps; median of {args.rounds} rounds",
        f"(release: torch {rounds['release'][0]['threads']} threads, C++ pool forward + cummax backward substitute; "
        f"ours: jit_compile={info['jit_compile']}, {info['heatmaps']} targets, pooling_impl={info['pooling_impl']})",
        "",
        "| figure | release | ours | ours / release |",
        "|---|---|---|---|",
    ]
    for key, label, fmt in (("step_s", "step (s, wall)", "{:.2f}"), ("step_cpu_s", "step (CPU s)", "{:.2f}"),
                            ("first_step_s", "first step (s)", "{:.1f}"), ("peak_rss_mib", "peak RSS (MiB)", "{:.0f}")):
        lines.append(f"| {label} | {fmt.format(rel[key])} | {fmt.format(ours[key])} | {ratio(ours[key], rel[key]):.2f} |")
    return {"figures": figures, "rounds": rounds}, lines


def box_difference(release, ours):
    """Max over the release's 10 best boxes of the distance (max abs, px) to the nearest same-class Keras box.

    None when the release kept no detection (random weights: its centre-region
    filtering drops every box without a matching centre keypoint).
    """
    if not any(release.values()):
        return None
    worst = 0.0
    for image, boxes in release.items():
        candidates = ours.get(image, [])
        for box in boxes[:10]:
            same = [c for c in candidates if c[5] == box[5]]
            if not same:
                return float("inf")
            worst = max(worst, min(max(abs(a - b) for a, b in zip(box[:4], c[:4])) for c in same))
    return worst


def row_detect(args):
    print("detect: preparing the snapshot, the converted model and the tflite-int8-full export", file=sys.stderr, flush=True)
    if not os.path.exists(snapshot_path(args)):
        run_worker("release-prepare", args)
    prepared = run_worker("ours-prepare", args)
    rounds = alternate(args, "detect", {"release": ("release-detect", ()),
                                        "ours": ("ours-detect", ["--prepared", json.dumps(prepared)])})
    rel = {key: median_of(rounds["release"], key) for key in ("ms", "cpu_ms", "first_call_s", "peak_rss_mib")}
    engines = {}
    for name in ("keras", "tflite-int8-full"):
        engines[name] = {"ms": median_of(rounds["ours"], "ms", name), "cpu_ms": median_of(rounds["ours"], "cpu_ms", name),
                         "first_call_s": median_of(rounds["ours"], "first_call_s", name)}
    difference = box_difference(rounds["release"][0]["detections"], rounds["ours"][0]["detections"])
    height, width = prepared["export_size"]
    lines = [
        f"Detect path: {args.images} coco-tiny val2017 images, CenterNet-52 (random weights, the same in both), flip test, "
        f"K=70, Gaussian soft-NMS, 100 detections; median over images, then over {args.rounds} rounds",
        f"(tflite-int8-full exported at {height}x{width}, {args.calibration_images} calibration images, "
        f"{os.cpu_count()} threads; ours' peak RSS {median_of(rounds['ours'], 'peak_rss_mib'):.0f} MiB holds both engines, "
        f"release {rel['peak_rss_mib']:.0f} MiB)",
        "",
        "| path | ms / image | CPU ms / image | ours / release | first call (s) |",
        "|---|---|---|---|---|",
        f"| release (test/coco.py kp_detection) | {rel['ms']:.0f} | {rel['cpu_ms']:.0f} | 1.00 | {rel['first_call_s']:.1f} |",
    ]
    for name, e in engines.items():
        lines.append(f"| ours {name} | {e['ms']:.0f} | {e['cpu_ms']:.0f} | {ratio(e['ms'], rel['ms']):.2f} | "
                     f"{e['first_call_s']:.1f} |")
    lines.append("")
    counts = [sum(len(b) for b in rounds[side][0]["detections"].values()) for side in ("release", "ours")]
    lines.append(f"Detections kept (first round, all images): release {counts[0]}, ours Keras {counts[1]}; max box difference, "
                 "release top-10 vs nearest same-class Keras box: "
                 + (f"{difference:.2g} px" if difference is not None else "n/a (the release kept no box)")
                 + " (random weights)")
    for key in ("convert_s", "export_s"):
        if key in prepared:
            lines.append(f"{key.replace('_s', '')}: {prepared[key]:.0f} s")
    for side in rounds.values():
        for r in side:
            r.pop("detections", None)
    return {"release": rel, "ours": engines, "rounds": rounds, "prepared": prepared, "max_box_difference_px": difference}, lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--release", required=True, help="unpacked Duankaiwen/CenterNet checkout")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {','.join(ROWS)}")
    parser.add_argument("--rounds", type=int, default=3, help="alternating release/ours rounds (default: 3)")
    parser.add_argument("--json", help="also write the results as JSON")
    parser.add_argument("--build-dir", default=os.path.join("/tmp", "release_side_build"),
                        help="compiled release extensions, snapshot, conversions (default: /tmp/release_side_build)")
    parser.add_argument("--pipeline-batch", type=int, default=4)
    parser.add_argument("--pipeline-warmup", type=int, default=5, help="batches before timing (default: 5)")
    parser.add_argument("--pipeline-batches", type=int, default=30, help="timed batches (default: 30)")
    parser.add_argument("--train-batch", type=int, default=2)
    parser.add_argument("--train-warmup", type=int, default=1, help="steps before timing, the first included (default: 1)")
    parser.add_argument("--train-steps", type=int, default=2, help="timed steps (default: 2)")
    parser.add_argument("--images", type=int, default=3, help="val2017 images timed in detect (default: 3)")
    parser.add_argument("--calibration-images", type=int, default=8, help="tflite-int8-full calibration (default: 8)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--prepared", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.release = os.path.abspath(args.release)
    args.build_dir = os.path.abspath(args.build_dir)
    os.makedirs(args.build_dir, exist_ok=True)

    if args.worker:
        print(json.dumps(worker(args)), flush=True)
        return 0

    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {ROWS}")
    head = subprocess.run(["git", "-C", args.release, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    info = machine()
    isa = ", ".join(f"{flag} {'yes' if present else 'no'}" for flag, present in info["isa"].items())
    header = [
        f"Machine: {info['cpu']}, {info['cores']} cores ({isa}); Python {info['python']}, TensorFlow {info['tensorflow']}, "
        f"Keras {info['keras']}, torch {info['torch']}, NumPy {info['numpy']}, OpenCV {info['opencv']}",
        f"Release: {args.release}{' @ ' + head if head else ''}; ratios are ours / release (lower is better)",
    ]
    print("\n".join(header) + "\n", flush=True)
    results = {"machine": info, "release": args.release, "release_commit": head or None, "rounds": args.rounds,
               "options": {k: v for k, v in vars(args).items() if k not in ("worker", "prepared")}, "rows": {}}
    for row in rows:
        start, before = time.perf_counter(), load_average()
        try:
            data, lines = {"pipeline": row_pipeline, "train": row_train, "detect": row_detect}[row](args)
        except RuntimeError as error:
            data, lines = {"error": str(error)}, [f"{row}: FAILED", str(error)[-2000:]]
        data.update(seconds=time.perf_counter() - start, load_average=[before, load_average()])
        lines.append(f"({row}: {data['seconds']:.0f} s; 1-min load average {before} at start, {load_average()} at end, "
                     f"{os.cpu_count()} CPUs)")
        print("\n".join(lines) + "\n", flush=True)
        results["rows"][row] = data
        if args.json:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
