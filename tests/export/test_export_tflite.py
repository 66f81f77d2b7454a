"""TFLite exports (float32, float16, dynamic-range int8) against the Keras model.

Detector, images, tolerances: tests/export/test_export.py's docstring and
tests/support/export_case.py. Full-integer int8: test_export_tflite_int8_full.py.
"""

import os

import numpy as np

from support.decode_helpers import iou
from support.export_case import (
    CATEGORY_ID,
    FIXED_SIZE,
    assert_same_detections,
    exported_detections,
    run_tflite,
)
from tf_centernet import export as export_lib


def test_tflite_float32_matches_keras(detector, images, keras_fixed, tflite_float32):
    path = tflite_float32
    found = 0
    for image, ref in zip(images.fixed, keras_fixed):
        got = exported_detections(run_tflite(path, image), 0, *FIXED_SIZE)
        assert_same_detections(ref, got, box_tol=0.01, score_tol=1e-4)
        found += len(ref["scores"])
    assert found > 0


def test_tflite_float16_and_int8(detector, images, keras_fixed, tflite_float32, tmp_path):
    model = detector.model
    fp16 = export_lib.export(model, str(tmp_path / "fp16.tflite"), format="tflite-fp16", input_size=FIXED_SIZE)
    int8 = export_lib.export(model, str(tmp_path / "int8.tflite"), format="tflite-int8", input_size=FIXED_SIZE)
    # Against the float32 file (the graph itself is the same size in all
    # three): float16 saves 2 of the 4 bytes of (almost) every weight, int8 3.
    weight_bytes = sum(int(np.prod(w.shape)) for w in model.weights) * 4
    fp32_file = os.path.getsize(tflite_float32)
    assert fp32_file - os.path.getsize(fp16) > 0.4 * weight_bytes
    assert fp32_file - os.path.getsize(int8) > 0.6 * weight_bytes
    # Quantisation moves scores by ~1e-4 (fp16) to ~1e-2 (int8), which flips
    # some of the untrained model's borderline decisions (central region,
    # top-K membership): compare by overlap, not one to one.
    matched = {"fp16": [], "int8": []}
    for image, ref in zip(images.fixed, keras_fixed):
        for name, path in (("fp16", fp16), ("int8", int8)):
            got = exported_detections(run_tflite(path, image), 0, *FIXED_SIZE)
            assert np.all((got["boxes"] >= 0) & (got["boxes"] <= max(FIXED_SIZE) + 1e-3))
            assert np.all(np.diff(got["scores"]) <= 0)
            np.testing.assert_array_equal(got["classes"], CATEGORY_ID)
            for box in ref["boxes"][:10]:
                matched[name].append(max([iou(box, other) for other in got["boxes"]], default=0.0) >= 0.7)
    assert np.all(matched["fp16"])
    assert np.mean(matched["int8"]) >= 0.7, np.mean(matched["int8"])
