"""Exports (`tf_centernet.export`, `tf-centernet export`) against the Keras model.

The detector is the `demo` CenterNet (small hourglass) with random weights,
one class (COCO category 18, "dog") and its embedding heads scaled by 0.01:
untrained, a 3-class model's top-left and bottom-right corners rarely share
a class and every pair fails the embedding test, so nothing would be
detected; this one finds 2-35 boxes per coco-tiny image, which makes the
comparisons below about real detections, after soft-NMS.

Tolerances (boxes in pixels of the image, scores in [0, 1]):

| format              | head outputs       | detections                                 |
|---------------------|--------------------|--------------------------------------------|
| SavedModel (fresh   | 1e-4               | same count, classes; boxes 1e-3 px,        |
| process)            |                    | scores 1e-5                                |
| TFLite float32      | -                  | same count; boxes 0.01 px, scores 1e-4     |
| TFLite float16      | -                  | each of the top 10: a box at IoU >= 0.7    |
| TFLite int8 (dynamic| -                  | 70% of the top 10: a box at IoU >= 0.7     |
| range)              |                    |                                            |
| TFLite int8 (full   | -                  | 50% of the top 10 (random weights): IoU    |
| integer, network)   |                    | >= 0.7; int8 tensors only in the network   |
| ONNX (onnxruntime)  | -                  | same count; boxes 0.01 px, scores 1e-4     |

The tests are spread over test_export*.py (one file per format family, so that
``-n 2 --dist loadfile`` runs them in both processes); the detector, images
and comparisons are tests/support/export_case.py's, the fixtures
tests/export/conftest.py's.

TFLite runs need `ai-edge-litert` and ONNX `tf2onnx` + `onnxruntime` (the
``test`` extra installs them); without them those tests are skipped. TF-TRT
is converted only where TensorRT is available; elsewhere the clear error is
tested.
"""

import json
import os
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest
import tensorflow as tf

from support.decode_helpers import iou
from support.export_case import CATEGORY_ID, FIXED_SIZE, assert_same_detections, exported_detections
from support.tiny import TINY_MODEL
from tf_centernet import export as export_lib
from tf_centernet.cli import main
from tf_centernet.config import load_config
from tf_centernet.inference import pad_batch, preprocess_images
from tf_centernet.models import build_model

# ---------------------------------------------------------------------------
# Graph pieces.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1.0, 0.75])
def test_static_preprocess_equals_dynamic(scale):
    mean, std = [0.4, 0.45, 0.5], [0.28, 0.27, 0.29]
    batch = np.random.default_rng(0).integers(0, 256, (2, 150, 201, 3), dtype=np.uint8)
    sizes = np.array([[150, 201]] * 2, np.int32)
    canvas, geo = preprocess_images(tf.constant(batch), tf.constant(sizes), scale, mean, std)
    static_canvas, static_geo = export_lib.static_preprocess(tf.constant(batch), scale, mean, std)
    np.testing.assert_array_equal(static_canvas, canvas)
    for name in ("borders", "sizes", "ratios"):
        np.testing.assert_array_equal(getattr(static_geo, name), getattr(geo, name))
    assert static_geo.scale == geo.scale


def test_to_detection_api_normalises_and_maps_categories():
    detections = {
        "boxes": tf.constant([[[10.0, 20.0, 110.0, 70.0], [0.0, 0.0, 0.0, 0.0]]]),
        "scores": tf.constant([[0.9, 0.0]]),
        "classes": tf.constant([[2, 0]], tf.int32),
        "num_detections": tf.constant([1], tf.int32),
    }
    out = export_lib.to_detection_api(detections, tf.constant([[100, 200]]), [1, 5, 90])
    np.testing.assert_allclose(out["detection_boxes"][0, 0], [0.2, 0.05, 0.7, 0.55])
    np.testing.assert_array_equal(out["detection_classes"], [[90.0, 0.0]])
    np.testing.assert_array_equal(out["num_detections"], [1.0])
    assert {v.dtype for v in out.values()} == {tf.float32}


def test_module_docstring_example():
    import doctest

    result = doctest.testmod(export_lib, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_export_uses_the_scan_pooling():
    # The tiny hourglass has every pooling layer (corner, cascade corner, center) of the demo's.
    config = load_config("demo", ["model.pooling_impl=auto", *TINY_MODEL])
    model = build_model(config.model)
    model.build((None, 63, 63, 3))
    scanned = export_lib.scan_pooling_model(model)
    assert scanned is not model and scanned.pooling_impl == "scan"
    impls = {layer.impl for layer in scanned._flatten_layers() if hasattr(layer, "impl")}
    assert impls == {"scan"}
    x = tf.random.stateless_normal([1, 63, 63, 3], seed=[1, 2])
    expected, got = model(x, training=False), scanned(x, training=False)
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], atol=1e-5)


# ---------------------------------------------------------------------------
# SavedModel.
# ---------------------------------------------------------------------------

FRESH_PROCESS = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    path, data, out = sys.argv[1:4]
    inputs = np.load(data)
    loaded = tf.saved_model.load(path)
    results = {}
    serve = loaded.signatures["serving_default"]
    for i in range(int(inputs["count"])):
        for key, value in serve(images=tf.constant(inputs[f"image{i}"][None])).items():
            results[f"default{i}/{key}"] = value.numpy()
    encoded = tf.constant([bytes(inputs["jpeg"]), bytes(inputs["png"])])
    for key, value in loaded.signatures["serving_bytes"](image_bytes=encoded).items():
        results[f"bytes/{key}"] = value.numpy()
    for key, value in loaded.heads(tf.constant(inputs["canvas"])).items():
        results[f"heads/{key}"] = value.numpy()
    results["imported"] = np.array(sorted(m for m in sys.modules if m.startswith("tf_centernet")), dtype=str)
    np.savez(out, **results)
    """
)


def test_saved_model_signatures(saved_model_dir):
    loaded = tf.saved_model.load(saved_model_dir)
    assert set(loaded.signatures) == {"serving_default", "serving_bytes"}
    default = loaded.signatures["serving_default"]
    (spec,) = default.structured_input_signature[1].values()
    assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, None, None, 3]
    (spec,) = loaded.signatures["serving_bytes"].structured_input_signature[1].values()
    assert spec.dtype == tf.string and spec.shape.as_list() == [None]
    outputs = default.structured_outputs
    assert set(outputs) == set(export_lib.DETECTION_KEYS)
    assert outputs["detection_boxes"].shape.as_list() == [None, 100, 4]
    assert all(o.dtype == tf.float32 for o in outputs.values())
    with open(os.path.join(saved_model_dir, "assets", "label_map.json"), encoding="utf-8") as f:
        assert json.load(f) == [{"id": CATEGORY_ID, "name": "dog"}]
    # Standard TensorFlow ops only: nothing a stock TF Serving lacks.
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    graph = proto.meta_graphs[0].graph_def
    ops = {n.op for n in graph.node} | {n.op for fn in graph.library.function for n in fn.node_def}
    assert ops - set(dir(tf.raw_ops)) == set()
    with pytest.raises(FileExistsError):
        export_lib.export_saved_model(None, saved_model_dir)


def test_model_export_writes_what_the_cli_writes(detector, images, saved_model_dir, tmp_path):
    """One SavedModel contract: ``model.export`` and ``tf-centernet export`` agree on signatures and outputs."""
    from_python = detector.model.export(str(tmp_path / "python" / "1"))
    image = tf.constant(images.fixed[0][None])
    encoded = tf.constant([tf.io.encode_png(images.fixed[1]).numpy()])
    results = []
    for path in (from_python, saved_model_dir):
        loaded = tf.saved_model.load(path)
        assert set(loaded.signatures) == {"serving_default", "serving_bytes"}
        default, by_bytes = loaded.signatures["serving_default"], loaded.signatures["serving_bytes"]
        with open(os.path.join(path, "assets", "label_map.json"), encoding="utf-8") as f:
            labels = json.load(f)
        results.append((
            default.structured_input_signature, default.structured_outputs,
            by_bytes.structured_input_signature, labels,
            {k: v.numpy() for k, v in default(images=image).items()},
            {k: v.numpy() for k, v in by_bytes(image_bytes=encoded).items()},
        ))
    python, cli = results
    for a, b in zip(python[:4], cli[:4]):
        assert a == b
    assert python[3] == [{"id": CATEGORY_ID, "name": "dog"}]
    assert python[4]["num_detections"][0] > 0
    for got, expected in ((python[4], cli[4]), (python[5], cli[5])):
        assert got.keys() == expected.keys()
        for key in got:
            np.testing.assert_allclose(got[key], expected[key], atol=1e-5, err_msg=key)


@pytest.mark.slow
def test_saved_model_in_a_fresh_process_matches_keras(detector, images, saved_model_dir, tmp_path):
    # Network inputs: full-size images (any size) and the FIXED_SIZE copies.
    inputs = images.full[:2] + images.fixed
    with open(images.files[0], "rb") as f:
        jpeg = f.read()
    png = cv2.imencode(".png", cv2.cvtColor(images.fixed[1], cv2.COLOR_RGB2BGR))[1].tobytes()
    batch, sizes = pad_batch([images.fixed[0]])
    canvas, _ = preprocess_images(
        tf.constant(batch), tf.constant(sizes), 1.0, detector.config.data.mean, detector.config.data.std
    )
    data = str(tmp_path / "inputs.npz")
    np.savez(
        data, count=len(inputs), jpeg=np.frombuffer(jpeg, np.uint8), png=np.frombuffer(png, np.uint8),
        canvas=canvas.numpy(), **{f"image{i}": image for i, image in enumerate(inputs)},
    )
    out = str(tmp_path / "outputs.npz")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    run = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, saved_model_dir, data, out],
        cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = np.load(out)
    assert results["imported"].size == 0  # tf_centernet was never imported

    found = 0
    for i, image in enumerate(inputs):
        ref = detector.predictor.predict_images([image])[0]
        got = exported_detections(
            {k.split("/", 1)[1]: results[k] for k in results.files if k.startswith(f"default{i}/")},
            0, *image.shape[:2],
        )
        assert_same_detections(ref, got, box_tol=1e-3, score_tol=1e-5)
        found += len(ref["scores"])
    assert found > 0

    # serving_bytes: TensorFlow's JPEG decoding (it may differ from OpenCV's
    # by a level here and there) and a lossless PNG, one request.
    decoded = tf.io.decode_jpeg(jpeg, channels=3).numpy()
    bytes_out = {k.split("/", 1)[1]: results[k] for k in results.files if k.startswith("bytes/")}
    for index, image in enumerate([decoded, images.fixed[1]]):
        ref = detector.predictor.predict_images([image])[0]
        got = exported_detections(bytes_out, index, *image.shape[:2])
        assert_same_detections(ref, got, box_tol=1e-3, score_tol=1e-5)

    expected = detector.model(canvas, training=False)
    for key, value in expected.items():
        np.testing.assert_allclose(results[f"heads/{key}"], value, atol=1e-4)


# ---------------------------------------------------------------------------
# TF-TRT.
# ---------------------------------------------------------------------------


@pytest.mark.skipif(export_lib.tensorrt_status()[0], reason="TensorRT is available here")
def test_tftrt_without_tensorrt_is_a_clear_error(detector, tmp_path, caplog):
    with pytest.raises(RuntimeError, match="TensorRT") as error:
        export_lib.export(detector.model, str(tmp_path / "trt"), format="tftrt")
    assert "--format savedmodel" in str(error.value)
    assert not os.path.exists(tmp_path / "trt")
    # The CLI says so before loading any checkpoint.
    code = main(["export", "--config", "demo", "--format", "tftrt", "--checkpoint", str(tmp_path / "none")])
    assert code == 2
    assert "Cannot export to TF-TRT" in caplog.text and "TensorRT" in caplog.text


@pytest.mark.skipif(not export_lib.tensorrt_status()[0], reason="TensorRT is not available")
def test_tftrt_conversion_matches_keras(detector, images, tmp_path):  # pragma: no cover - GPU only
    path = export_lib.export(
        detector.model, str(tmp_path / "trt" / "1"), format="tftrt", input_size=FIXED_SIZE
    )
    serve = tf.saved_model.load(path).signatures["serving_default"]
    for image in images.fixed:
        ref = detector.predictor.predict_images([image])[0]
        got = exported_detections(serve(images=tf.constant(image[None])), 0, *FIXED_SIZE)
        for box in ref["boxes"][:10]:  # FP16 engines: as the TFLite float16 test
            assert max([iou(box, other) for other in got["boxes"]], default=0.0) >= 0.7


def test_cli_export_rejects_bad_input_size(caplog):
    assert main(["export", "--config", "demo", "--format", "tflite", "--input-size", "1", "2", "3"]) == 2
    assert "--input-size" in caplog.text
