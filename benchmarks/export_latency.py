"""Artifact sizes and single-image CPU latency of every export format.

Exports one model in each format `tf_centernet.export` writes here
(SavedModel, TFLite float32 / float16 / int8, ONNX; TF-TRT only where
TensorRT is available), then times one image through each, against the
Keras model's `Predictor.predict` (the same preprocessing, network and
decoding as a `tf.function`). All formats see the same uint8 image of the
fixed export size, so they do the same work; the SavedModel's
``serving_bytes`` also decodes the JPEG.

Timing: every round runs each format once, in turn, and the median over
rounds is reported, so that a load change on a shared machine hits all
formats alike. The agreement columns compare each format's detections with
the Keras model's on that image.

Usage (a trained checkpoint gives realistic decoding work; random weights
detect little, which makes soft-NMS nearly free):

    python benchmarks/export_latency.py --config centernet_small \\
        --checkpoint runs/small/checkpoints/ckpt-1500.weights.h5 --repeats 30
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from tf_centernet import export as export_lib  # noqa: E402
from tf_centernet.config import load_config  # noqa: E402
from tf_centernet.inference import Predictor  # noqa: E402
from tf_centernet.models import build_model  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_IMAGE_DIR = os.path.join(os.path.dirname(REPO), "shared", "data", "coco-tiny", "val2017")


def folder_size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def detections(out, height, width):
    """Detection-API outputs of image 0 -> (boxes [x1, y1, x2, y2] px, scores)."""
    n = int(np.asarray(out["num_detections"])[0])
    boxes = np.asarray(out["detection_boxes"])[0, :n] * [height, width, height, width]
    return boxes[:, [1, 0, 3, 2]], np.asarray(out["detection_scores"])[0, :n]


def iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih
    return iw * ih / union if union > 0 else 0.0


def agreement(ref, got):
    """Detections of one format against the Keras model's.

    Returns:
        (count, matched, box_diff): the number of detections; the share of
        the reference's top 10 with a box at IoU >= 0.7; the median over
        those top-10 boxes of the largest coordinate difference (pixels) to
        their best-overlapping counterpart.
    """
    (rb, _), (gb, gs) = ref, got
    matched, diffs = [], []
    for box in rb[:10]:
        overlaps = [iou(box, other) for other in gb]
        if not overlaps:
            matched.append(False)
            continue
        best = int(np.argmax(overlaps))
        matched.append(overlaps[best] >= 0.7)
        diffs.append(float(np.abs(gb[best] - box).max()))
    share = float(np.mean(matched)) if matched else float("nan")
    return len(gs), share, (float(np.median(diffs)) if diffs else float("nan"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="centernet_small")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--checkpoint", help=".weights.h5 (default: random weights, seed 0)")
    parser.add_argument("--input-size", type=int, nargs="+", help="SIZE or HEIGHT WIDTH (default: data.input_size)")
    parser.add_argument("--image", help="an image file (default: the first coco-tiny val image)")
    parser.add_argument("--repeats", type=int, default=20, help="timed rounds (default: 20)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="TFLite / onnxruntime threads (default: 2)")
    parser.add_argument("--output-dir", help="keep the artifacts here (default: a temporary folder)")
    parser.add_argument("--json", help="also write the results as JSON")
    args = parser.parse_args(argv)

    config = load_config(args.config, args.set)
    keras.utils.set_random_seed(0)
    model = build_model(config.model)
    model.build((None, config.data.input_size, config.data.input_size, 3))
    if args.checkpoint:
        model.load_weights(args.checkpoint)
    size = args.input_size or [config.data.input_size]
    height, width = (size[0], size[0]) if len(size) == 1 else size
    path = args.image or os.path.join(DEFAULT_IMAGE_DIR, sorted(os.listdir(DEFAULT_IMAGE_DIR))[0])
    image = cv2.resize(cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB), (width, height), interpolation=cv2.INTER_AREA)
    jpeg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()

    out_dir = args.output_dir or tempfile.mkdtemp(prefix="export_latency_")
    os.makedirs(out_dir, exist_ok=True)
    predictor = Predictor(model, config)
    batch = tf.constant(image[None])
    sizes = tf.constant([[height, width]], tf.int32)
    runners, artifact_sizes, export_seconds = {}, {}, {}

    def keras_predict():
        out = predictor.predict(batch, sizes)
        return export_lib.to_detection_api(out, sizes, list(range(1, config.model.num_classes + 1)))

    runners["keras Predictor.predict"] = lambda: {k: v.numpy() for k, v in keras_predict().items()}

    def timed_export(name, fn):
        start = time.perf_counter()
        result = fn()
        export_seconds[name] = time.perf_counter() - start
        artifact_sizes[name] = folder_size(result)
        return result

    ids = list(range(1, config.model.num_classes + 1))
    saved = timed_export("savedmodel", lambda: export_lib.export_saved_model(
        model, config, os.path.join(out_dir, "saved_model", "1"), category_ids=ids))
    loaded = tf.saved_model.load(saved)
    serve, serve_bytes = loaded.signatures["serving_default"], loaded.signatures["serving_bytes"]
    runners["savedmodel serving_default"] = lambda: {k: v.numpy() for k, v in serve(images=batch).items()}
    encoded = tf.constant([jpeg])
    runners["savedmodel serving_bytes (+JPEG decode)"] = lambda: {
        k: v.numpy() for k, v in serve_bytes(image_bytes=encoded).items()}
    artifact_sizes["savedmodel serving_default"] = artifact_sizes["savedmodel serving_bytes (+JPEG decode)"] = (
        artifact_sizes.pop("savedmodel"))

    try:
        import ai_edge_litert  # noqa: F401
        have_litert = True
    except ImportError:
        have_litert = False
        print("ai-edge-litert missing: TFLite rows skipped", file=sys.stderr)
    if have_litert:
        for fmt in ("tflite", "tflite-fp16", "tflite-int8"):
            file = timed_export(fmt, lambda fmt=fmt: export_lib.export(
                model, config, os.path.join(out_dir, fmt + ".tflite"), format=fmt,
                input_size=(height, width), category_ids=ids))
            runner = export_lib.tflite_interpreter(file, num_threads=args.threads).get_signature_runner()
            runners[fmt] = lambda runner=runner: runner(images=image[None])

    try:
        import onnxruntime as ort
        import tf2onnx  # noqa: F401
    except ImportError:
        ort = None
        print("tf2onnx/onnxruntime missing: ONNX row skipped", file=sys.stderr)
    if ort is not None:
        file = timed_export("onnx", lambda: export_lib.export(
            model, config, os.path.join(out_dir, "model.onnx"), format="onnx",
            input_size=(height, width), category_ids=ids))
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        session = ort.InferenceSession(file, options, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        runners["onnx (onnxruntime)"] = lambda: dict(zip(names, session.run(None, {"images": image[None]})))

    if export_lib.tensorrt_status()[0]:  # pragma: no cover - GPU machines
        trt_dir = timed_export("tftrt", lambda: export_lib.export(
            model, config, os.path.join(out_dir, "tftrt", "1"), format="tftrt",
            input_size=(height, width), category_ids=ids))
        trt_serve = tf.saved_model.load(trt_dir).signatures["serving_default"]
        runners["tftrt"] = lambda: {k: v.numpy() for k, v in trt_serve(images=batch).items()}
    else:
        print("TF-TRT skipped: " + export_lib.tensorrt_status()[1], file=sys.stderr)

    outputs = {}
    for name, run in runners.items():
        for _ in range(args.warmup):
            outputs[name] = run()
    times = {name: [] for name in runners}
    for _ in range(args.repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)

    reference = detections(outputs["keras Predictor.predict"], height, width)
    base = statistics.median(times["keras Predictor.predict"])
    rows = []
    for name in runners:
        median = statistics.median(times[name])
        count, matched, box_diff = agreement(reference, detections(outputs[name], height, width))
        rows.append({
            "format": name,
            "size_mb": artifact_sizes.get(name, artifact_sizes.get(name.split()[0], 0)) / 1e6 or None,
            "median_ms": median * 1e3,
            "ratio": median / base,
            "detections": count,
            "top10_matched": matched,
            "median_box_diff_px": box_diff,
        })
    weights = sum(int(np.prod(w.shape)) for w in model.weights)
    print(f"\nModel {args.config} ({weights:,} weights, {weights * 4 / 1e6:.1f} MB float32), "
          f"input {height}x{width}, flip_test={config.decode.flip_test}, image {os.path.basename(path)}; "
          f"median of {args.repeats} rounds, TFLite/ORT threads={args.threads}\n")
    print("| format | size (MB) | median (ms) | / Keras | detections | top-10 matched | median box diff (px) |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        size_text = f"{row['size_mb']:.2f}" if row["size_mb"] else "-"
        print(f"| {row['format']} | {size_text} | {row['median_ms']:.1f} | {row['ratio']:.2f} | "
              f"{row['detections']} | {row['top10_matched']:.2f} | {row['median_box_diff_px']:.3g} |")
    print("\nExport times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in export_seconds.items()))
    print(f"Artifacts in {out_dir}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"rows": rows, "export_seconds": export_seconds}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
