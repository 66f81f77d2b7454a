"""The export tests' fixtures (built by tests/support/export_case.py), once per test file."""

import pytest

from support.export_case import FIXED_SIZE, load_images, make_detector


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    """The test detector, its checkpoint and the config overrides to rebuild it."""
    return make_detector(tmp_path_factory.mktemp("export_detector"))


@pytest.fixture(scope="module")
def images(coco_tiny):
    """Real coco-tiny images: files, full-size RGB arrays, and FIXED_SIZE copies."""
    return load_images(coco_tiny)


@pytest.fixture(scope="module")
def keras_fixed(detector, images):
    """Keras `Predictor` detections of the FIXED_SIZE images."""
    return [detector.predictor.predict_images([image])[0] for image in images.fixed]


@pytest.fixture(scope="module")
def saved_model_dir(detector):
    """The SavedModel written by `tf-centernet export` (the CLI path)."""
    from tf_centernet.cli import main

    output = str(detector.root / "serving" / "centernet" / "1")
    code = main([
        "export", "--config", "demo", "--set", *detector.overrides,
        "--checkpoint", detector.checkpoint, "--output", output,
    ])
    assert code == 0
    return output


@pytest.fixture(scope="module")
def tflite_float32(detector, tmp_path_factory):
    """The float32 TFLite export of the detector at FIXED_SIZE."""
    pytest.importorskip("ai_edge_litert")
    from tf_centernet import export as export_lib

    return export_lib.export(
        detector.model, str(tmp_path_factory.mktemp("tflite") / "model.tflite"),
        format="tflite", input_size=FIXED_SIZE,
    )
