"""The exported detector's input limits: size limit from the header, dtype/rank, empty batches."""

import io
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from support.corpus import huge_declared_png, jpeg_bytes, pattern
from support.tiny import TINY_MODEL
from tf_centernet.export.module import declared_pixels  # noqa: E402


def _encoded(image, fmt):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP"])
def test_declared_pixels_read_from_the_header(fmt):
    image = pattern(height=37, width=91)
    assert int(declared_pixels(tf.constant(_encoded(image, fmt)))) == 37 * 91


def test_declared_pixels_of_a_huge_header_and_of_garbage():
    assert int(declared_pixels(tf.constant(huge_declared_png(60000, 50000)))) == 60000 * 50000
    assert int(declared_pixels(tf.constant(b"not an image"))) == 0


CHILD = r"""
import json, resource, sys, time
import numpy as np, tensorflow as tf
from tf_centernet.config import load_config
from tf_centernet.models import build_model
from tf_centernet.export.module import DetectionModule
config = load_config("demo", ["model.num_classes=1", "decode.flip_test=false",
                              "train.model_dir=" + sys.argv[3], *json.loads(sys.argv[4])])
model = build_model(config.model, decode_config=config.decode)
model.build((None, 63, 63, 3))
module = DetectionModule(model, category_ids=[1], max_megapixels=float(sys.argv[2]))
report = {}
small = open(sys.argv[1] + ".small", "rb").read()
report["small"] = int(module.serve_bytes(tf.constant([small]))["num_detections"].shape[0])
data = open(sys.argv[1], "rb").read()
start = time.time()
try:
    module.serve_bytes(tf.constant([data]))
    report["error"] = None
except tf.errors.InvalidArgumentError as error:
    report["error"] = error.message
report["seconds"] = time.time() - start
report["empty"] = {k: list(v.shape) for k, v in module.serve(tf.zeros([0, 40, 50, 3], tf.uint8)).items()}
report["empty_bytes"] = list(module.serve_bytes(tf.zeros([0], tf.string))["num_detections"].shape)
for name, value in [("dtype", tf.zeros([1, 40, 50, 3], tf.float32)), ("rank", tf.zeros([40, 50, 3], tf.uint8))]:
    try:
        module.serve(value)
        report[name] = None
    except (TypeError, ValueError) as error:
        report[name] = str(error)[:400]
# VmHWM: this process's own peak (ru_maxrss also counts the parent's RSS
# at the fork, which a long pytest run makes gigabytes).
try:
    with open("/proc/self/status") as status:
        peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
except (OSError, StopIteration):
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
report["max_rss_mb"] = peak_kb / 1024
print("REPORT" + json.dumps(report))
"""


@pytest.mark.slow
def test_8000x8000_jpeg_is_rejected_fast_with_bounded_memory(tmp_path, repo_root):
    path = str(tmp_path / "huge.jpg")
    cv2.imwrite(path, np.full((8000, 8000, 3), 127, np.uint8))
    with open(path + ".small", "wb") as f:
        f.write(jpeg_bytes(pattern()))
    env = dict(os.environ, PYTHONPATH=repo_root, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [sys.executable, "-c", CHILD, path, "8", str(tmp_path / "model"), json.dumps(TINY_MODEL)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.split("REPORT", 1)[1])
    assert report["small"] == 1
    assert report["error"] is not None and "8000000 pixels" in report["error"]
    assert "--max-megapixels" in report["error"]
    assert report["seconds"] < 10
    assert report["max_rss_mb"] < 2048, report
    assert report["empty"]["detection_boxes"] == [0, 100, 4] and report["empty"]["num_detections"] == [0]
    assert report["empty_bytes"] == [0]
    for key in ("dtype", "rank"):  # the signature names the expected input
        assert report[key] is not None and "images" in report[key] and "uint8" in report[key]
        assert "(None, None, None, 3)" in report[key]
    print(f"8000x8000 JPEG: rejected in {report['seconds']:.2f} s, peak RSS {report['max_rss_mb']:.0f} MiB")
