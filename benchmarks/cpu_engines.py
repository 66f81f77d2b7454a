"""CPU serving engines side by side: per-image time, first call, size and AP of each export.

Given a trained model directory (``config.yaml`` + checkpoints), exports the
model in each format into a folder and runs every engine on every validation
image of the model's configuration (BCCD ``test``: 72 images), against the
Keras model on the same images:

- ``keras``: ``model.predict_images([image])`` (the path `tf-centernet
  evaluate` and ``model.predict`` take; compiled pooling ops where built).
- ``savedmodel``: ``serving_default`` of the SavedModel export
  (``tf.saved_model.load``).
- ``tflite``: TFLite float32 (XNNPACK, ``--threads``).
- ``tflite-int8``: TFLite dynamic-range int8 (int8 weights, float activations).
- ``tflite-int8-full``: TFLite full-integer int8, calibrated on
  ``--calibration-images`` images of the TRAINING split
  (`tf_centernet.export.tflite.quantize_network_only`: int8 network, float
  head outputs, preprocessing and decoding).
- ``onnxruntime``: the ``onnx`` export in onnxruntime (CPU provider,
  ``intra_op_num_threads = --threads``).
- ``openvino-onnx`` / ``openvino-savedmodel``: OpenVINO's CPU plugin on the
  ONNX file / the SavedModel (``ov.convert_model``, reshaped to the export
  size, saved as IR with float32 weights; ``INFERENCE_NUM_THREADS =
  --threads``, latency hint).

The timed path of an engine is the whole per-image path from the uint8 RGB
image to detections as NumPy arrays, including the resize that the
fixed-size formats (TFLite, ONNX, OpenVINO) need for images of another size
than the export's (default: the most common size of the images, so BCCD's
640x480 images need none). Timing is interleaved: for every image, every
engine runs once, in an order rotated from image to image, so that load
changes on a shared machine hit all engines alike; the table gives the
median over images (and rounds). "first call" is loading the artifact plus
the first image (``load_detector`` plus the first ``predict_images`` for
Keras, where tracing dominates).

AP and AP50 are COCO box AP of each engine's detections on those images
(`tf_centernet.evaluation.coco_metrics` against
`tf_centernet.data.records.coco_ground_truth`), the Detection-API outputs
mapped back to pixels and 0-based classes. "top-10 agree" is the share of
the Keras model's top 10 detections per image that the engine reproduces (a
box of the same class at IoU >= 0.7).

Ratios: "/ Keras" and "/ TFLite" are per-image time ratios from the same
interleaved run. "est. / release" scales the ratio to Keras by the Keras
detect path's ratio to the authors' PyTorch release, measured side by side
with CenterNet-52 at 511 by ``benchmarks/release_side.py`` (detect row:
``RELEASE_RATIO_KERAS``): an estimate for this model, since the release
only builds its own CenterNet-52/104 (hourglass_small at 640x480 here).

Usage:

    nice -n 10 python benchmarks/cpu_engines.py --model-dir runs/bccd_small \\
        --output-dir /tmp/cpu_engines --json cpu_engines.json
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

ENGINES = (
    "keras", "savedmodel", "tflite", "tflite-int8", "tflite-int8-full",
    "onnxruntime", "openvino-onnx", "openvino-savedmodel",
)
# benchmarks/release_side.py, detect row (CenterNet-52 at 511, flip test, this
# project's 2-core AVX-512 EPYC): our Keras detect path's time / the release's.
RELEASE_RATIO_KERAS = 0.49


def folder_size(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


class Engine:
    """One engine: ``load() -> run`` where ``run(image) -> dict`` of Detection-API arrays or pixel detections."""

    def __init__(self, name: str, load: Callable, artifact: Optional[str], pixels: bool = False):
        self.name, self.load, self.artifact, self.pixels = name, load, artifact, pixels
        self.run = None
        self.first_call = None
        self.times: List[float] = []
        self.detections: Dict[int, dict] = {}


def detection_api_to_pixels(out, height, width, category_ids):
    """Detection-API outputs of image 0 -> ``boxes`` xyxy pixels, ``scores``, 0-based ``classes``."""
    n = int(np.asarray(out["num_detections"]).reshape(-1)[0])
    boxes = np.asarray(out["detection_boxes"]).reshape(-1, 4)[:n] * [height, width, height, width]
    ids = np.asarray(out["detection_classes"]).reshape(-1)[:n]
    index = {int(c): i for i, c in enumerate(category_ids)}
    return {
        "boxes": boxes[:, [1, 0, 3, 2]].astype(np.float32),
        "scores": np.asarray(out["detection_scores"]).reshape(-1)[:n].astype(np.float32),
        "classes": np.array([index[int(round(c))] for c in ids], np.int32),
    }


def iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih
    return iw * ih / union if union > 0 else 0.0


def top10_agreement(reference, got):
    """Share of the reference's top 10 with a same-class box at IoU >= 0.7 in `got`."""
    hits = []
    for box, cls in zip(reference["boxes"][:10], reference["classes"][:10]):
        same = [b for b, c in zip(got["boxes"], got["classes"]) if c == cls]
        hits.append(any(iou(box, b) >= 0.7 for b in same))
    return hits


def output_map(names_per_output):
    """Detection-API key -> output index, from each output's tensor names (converters rename them)."""
    from tf_centernet.export import DETECTION_KEYS

    found = {}
    for key in DETECTION_KEYS:
        for i, names in enumerate(names_per_output):
            if any(key in name for name in names):
                found[key] = i
                break
    missing = [k for k in DETECTION_KEYS if k not in found]
    if missing:
        raise RuntimeError(f"outputs {names_per_output} lack {missing}")
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", required=True, help="trained model directory (config.yaml, checkpoints)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    parser.add_argument("--max-images", type=int, help="first N validation images (default: all)")
    parser.add_argument("--rounds", type=int, default=1, help="timed passes over the images (default: 1)")
    parser.add_argument("--threads", type=int, default=2, help="threads of every engine (default: 2)")
    parser.add_argument("--input-size", type=int, nargs="+",
                        help="export size SIZE or HEIGHT WIDTH (default: the most common image size)")
    parser.add_argument("--calibration-images", type=int, default=100,
                        help="training images calibrating tflite-int8-full (default: 100)")
    parser.add_argument("--output-dir", help="keep the exports here and reuse those present (default: temporary)")
    parser.add_argument("--json", help="also write the results as JSON")
    args = parser.parse_args(argv)

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    from tf_centernet import export as export_lib
    from tf_centernet.config import load_config
    from tf_centernet.data.records import coco_ground_truth, open_dataset
    from tf_centernet.evaluation import coco_metrics, detections_to_coco, load_image_rgb
    from tf_centernet.export.tflite import resize_for_export
    from tf_centernet.inference import load_detector

    model_dir = os.path.abspath(args.model_dir)
    config = load_config(os.path.join(model_dir, "config.yaml"), [*args.set, f"train.model_dir={model_dir}"])
    start = time.perf_counter()
    model = load_detector(model_dir, args.set)
    keras_load = time.perf_counter() - start
    category_ids = list(model.category_ids)

    def read(record):
        if record.encoded is None:
            return load_image_rgb(record.file_name)
        from tf_centernet.data.images import decode_image_bytes

        return decode_image_bytes(record.encoded, record.display_name)

    dataset = open_dataset(config, "val", class_names=model.class_names)
    coco_gt = coco_ground_truth(dataset)
    records = sorted(dataset.records, key=lambda r: r.image_id)[: args.max_images]
    image_ids = [int(r.image_id) for r in records]
    images = [read(r) for r in records]
    if args.input_size:
        size = args.input_size
        height, width = (size[0], size[0]) if len(size) == 1 else size[:2]
    else:
        (height, width), _ = collections.Counter(im.shape[:2] for im in images).most_common(1)[0]

    out_dir = args.output_dir or tempfile.mkdtemp(prefix="cpu_engines_")
    os.makedirs(out_dir, exist_ok=True)
    export_seconds = {}

    def exported(fmt, path, **options):
        path = os.path.join(out_dir, path)
        if os.path.exists(path):
            print(f"reusing {path}", file=sys.stderr)
            return path
        start = time.perf_counter()
        model.export(path, format=fmt, input_size=(height, width), **options)
        export_seconds[fmt] = time.perf_counter() - start
        return path

    engines: Dict[str, Engine] = {}
    failed: Dict[str, str] = {}
    wanted = set(args.engines)

    def keras_load_fn():
        return lambda image: model.predict_images([image])[0]

    engines["keras"] = Engine("keras", keras_load_fn, None, pixels=True)

    def fixed(run):
        """A fixed-size engine's per-image path: resize, run, Detection API -> pixels."""
        def detect(image):
            out = run(resize_for_export(image, height, width)[None])
            return detection_api_to_pixels(out, image.shape[0], image.shape[1], category_ids)
        return detect

    if "savedmodel" in wanted or "openvino-savedmodel" in wanted:
        saved = exported("savedmodel", os.path.join("saved_model", "1"))

        def load_saved():
            serve = tf.saved_model.load(saved).signatures["serving_default"]

            def detect(image):
                out = {k: v.numpy() for k, v in serve(images=tf.constant(image[None])).items()}
                return detection_api_to_pixels(out, image.shape[0], image.shape[1], category_ids)
            return detect

        engines["savedmodel"] = Engine("savedmodel", load_saved, saved)

    def tflite_engine(name, path):
        def load():
            runner = export_lib.tflite_interpreter(path, num_threads=args.threads).get_signature_runner()
            return fixed(lambda x: runner(images=x))
        engines[name] = Engine(name, load, path)

    if "tflite" in wanted:
        tflite_engine("tflite", exported("tflite", "model.tflite"))
    if "tflite-int8" in wanted:
        tflite_engine("tflite-int8", exported("tflite-int8", "model_int8.tflite"))
    if "tflite-int8-full" in wanted:
        count = args.calibration_images
        tflite_engine("tflite-int8-full", exported(
            "tflite-int8-full", "model_int8_full.tflite", calibration_images=count,
            representative_images=export_lib.representative_training_images(config, count, model.class_names)))

    onnx_path = None
    if {"onnxruntime", "openvino-onnx"} & wanted:
        onnx_path = exported("onnx", "model.onnx")
    if "onnxruntime" in wanted:
        def load_ort():
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = args.threads
            options.inter_op_num_threads = 1
            session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
            names = [o.name for o in session.get_outputs()]
            index = output_map([[n] for n in names])

            def run(x):
                values = session.run(None, {"images": x})
                return {key: values[i] for key, i in index.items()}
            return fixed(run)

        engines["onnxruntime"] = Engine("onnxruntime", load_ort, onnx_path)

    def openvino_engine(name, source):
        import openvino as ov

        xml = os.path.join(out_dir, name, "model.xml")
        if not os.path.exists(xml):
            start = time.perf_counter()
            try:
                ov_model = ov.convert_model(source)
                ov_model.reshape({ov_model.inputs[0]: ov.PartialShape([1, height, width, 3])})
            except Exception as error:  # the converter's own exception types vary by frontend
                lines = [line for line in str(error).splitlines() if line.strip()]
                failed[name] = f"{type(error).__name__}: " + " / ".join(lines[-6:])[:400]
                print(f"{name}: conversion failed: {failed[name]}", file=sys.stderr, flush=True)
                return
            ov.save_model(ov_model, xml, compress_to_fp16=False)
            export_seconds[name] = time.perf_counter() - start

        def load():
            core = ov.Core()
            core.set_property("CPU", {"INFERENCE_NUM_THREADS": args.threads, "PERFORMANCE_HINT": "LATENCY"})
            compiled = core.compile_model(core.read_model(xml), "CPU")
            request = compiled.create_infer_request()
            index = output_map([list(o.get_names()) for o in compiled.outputs])

            def run(x):
                result = request.infer({0: x})
                values = list(result.values())
                return {key: values[i] for key, i in index.items()}
            return fixed(run)

        engines[name] = Engine(name, load, os.path.dirname(xml))

    if "openvino-onnx" in wanted:
        openvino_engine("openvino-onnx", onnx_path)
    if "openvino-savedmodel" in wanted:
        openvino_engine("openvino-savedmodel", saved)
    engines = {name: e for name, e in engines.items() if name in wanted or name == "keras"}

    # First calls (load + first image), then one more call each (warm caches).
    for engine in engines.values():
        start = time.perf_counter()
        engine.run = engine.load()
        engine.run(images[0])
        engine.first_call = time.perf_counter() - start + (keras_load if engine.name == "keras" else 0.0)
        engine.run(images[0])
        print(f"{engine.name}: first call {engine.first_call:.1f} s", file=sys.stderr, flush=True)

    names = list(engines)
    loads = [os.getloadavg()[0]]
    for round_index in range(args.rounds):
        for i, image in enumerate(images):
            shift = (i + round_index) % len(names)
            for name in names[shift:] + names[:shift]:
                engine = engines[name]
                start = time.perf_counter()
                result = engine.run(image)
                engine.times.append(time.perf_counter() - start)
                if round_index == 0:
                    engine.detections[image_ids[i]] = result
            if i % 10 == 0:
                loads.append(os.getloadavg()[0])
                print(f"round {round_index + 1}: image {i + 1}/{len(images)}, load {loads[-1]:.1f}",
                      file=sys.stderr, flush=True)
    loads.append(os.getloadavg()[0])

    reference = engines["keras"].detections
    have_tflite = "tflite" in engines

    def per_image(engine, base):
        """Median over images of the per-image time ratio (same image, same moment: steadier than medians)."""
        return statistics.median(t / b for t, b in zip(engine.times, engines[base].times))
    rows = []
    for name, engine in engines.items():
        results = []
        for image_id, det in engine.detections.items():
            results += detections_to_coco(image_id, det["boxes"], det["scores"], det["classes"], category_ids)
        metrics = coco_metrics(coco_gt, results, image_ids)
        agree = [h for image_id in image_ids for h in top10_agreement(reference[image_id], engine.detections[image_id])]
        ms = statistics.median(engine.times) * 1e3
        rows.append({
            "engine": name,
            "median_ms": ms,
            "first_call_s": engine.first_call,
            "size_mb": folder_size(engine.artifact) / 1e6 if engine.artifact else None,
            "AP": metrics["AP"], "AP50": metrics["AP50"],
            "top10_agree": float(np.mean(agree)) if agree else float("nan"),
            "vs_keras": per_image(engine, "keras"),
            "vs_tflite": per_image(engine, "tflite") if have_tflite else None,
            "est_vs_release": per_image(engine, "keras") * RELEASE_RATIO_KERAS,
        })

    keras_row = rows[0]
    weights = sum(int(np.prod(w.shape)) for w in model.weights)
    print(f"\nModel {model_dir} ({config.model.backbone}, {weights:,} weights), {len(images)} validation images, "
          f"export size {height}x{width}, flip_test={config.decode.flip_test}; {args.threads} threads per engine; "
          f"{args.rounds} round(s), engines interleaved per image; load average {min(loads):.1f}-{max(loads):.1f} "
          f"on {os.cpu_count()} CPUs\n")
    print("| engine | ms / image | / Keras | / TFLite fp32 | est. / release | AP | AP50 | dAP vs Keras | "
          "top-10 agree | size (MB) | first call (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        size = f"{row['size_mb']:.1f}" if row["size_mb"] else "-"
        vs_tflite = f"{row['vs_tflite']:.2f}" if row["vs_tflite"] is not None else "-"
        print(f"| {row['engine']} | {row['median_ms']:.0f} | {row['vs_keras']:.2f} | {vs_tflite} | "
              f"{row['est_vs_release']:.2f} | {100 * row['AP']:.1f} | {100 * row['AP50']:.1f} | "
              f"{100 * (row['AP'] - keras_row['AP']):+.1f} | {row['top10_agree']:.2f} | {size} | "
              f"{row['first_call_s']:.1f} |")
    print(f"\nest. / release = (/ Keras) x {RELEASE_RATIO_KERAS} (the Keras detect path / the release's, "
          "benchmarks/release_side.py)")
    for name, reason in failed.items():
        print(f"{name}: not run, conversion failed ({reason})")
    if export_seconds:
        print("Export times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in export_seconds.items()))
    print(f"Artifacts in {out_dir}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"rows": rows, "failed": failed, "export_seconds": export_seconds, "images": len(images),
                       "input_size": [height, width], "threads": args.threads, "rounds": args.rounds,
                       "load_average": [min(loads), max(loads)]}, f, indent=1)
    if not args.output_dir:
        shutil.rmtree(out_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
