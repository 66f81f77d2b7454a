"""ONNX export (tf2onnx, run by onnxruntime) against the Keras model.

Detector, images, tolerances: tests/export/test_export.py's docstring and
tests/support/export_case.py.
"""

import pytest

from support.export_case import FIXED_SIZE, assert_same_detections, exported_detections
from tf_centernet import export as export_lib


def test_onnx_matches_keras(detector, images, keras_fixed, tmp_path):
    pytest.importorskip("tf2onnx")
    ort = pytest.importorskip("onnxruntime")
    path = export_lib.export(
        detector.model, str(tmp_path / "model.onnx"), format="onnx", input_size=FIXED_SIZE
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    (spec,) = session.get_inputs()
    assert spec.name == "images" and spec.type == "tensor(uint8)" and spec.shape == [1, *FIXED_SIZE, 3]
    names = [o.name for o in session.get_outputs()]
    assert sorted(names) == sorted(export_lib.DETECTION_KEYS)
    for image, ref in zip(images.fixed, keras_fixed):
        out = dict(zip(names, session.run(None, {"images": image[None]})))
        got = exported_detections(out, 0, *FIXED_SIZE)
        assert_same_detections(ref, got, box_tol=0.01, score_tol=1e-4)
