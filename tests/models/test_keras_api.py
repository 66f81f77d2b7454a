"""The detector as a keras-hub user holds it: `predict` on raw images, presets, `.keras`, `export`.

The detectors are the tiny CenterNet / CornerNet of tests/tiny.py with one
class, their embedding heads scaled by 0.01 and (CenterNet) center
keypoints nearly everywhere, so that the untrained models pair corners and
find boxes (as in test_export.py). The
independent expectation is `Predictor` (the test-time loop around any
callable) fed the same pictures one at a time as uint8 RGB: the detector's
own `predict` must agree with it on images of any size, in original-image
pixels.
"""

import os
import subprocess
import sys
import textwrap

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

import tf_centernet
from support import REPO_ROOT
from support.tiny import TINY_MODEL
from tf_centernet.config import DecodeConfig, load_config
from tf_centernet.decode import Decoder
from tf_centernet.inference import Predictor
from tf_centernet.models import build_model

SIZE = 127
# An untrained network finds corner pairs on some initialisations only; this
# seed finds some in every picture, for both detectors (the tests assert it).
SEED = 5
TOP_K = 70
CT_BIAS = 3.0
REPO = REPO_ROOT


def make_detector(architecture, flip_test=True):
    overrides = ["model.num_classes=1", f"decode.top_k={TOP_K}", f"model.architecture={architecture}",
                 f"decode.flip_test={str(flip_test).lower()}", *TINY_MODEL]
    config = load_config("demo", overrides)
    keras.utils.set_random_seed(SEED)
    model = build_model(config.model, config.loss, config.decode, config.data)
    model.build((None, SIZE, SIZE, 3))
    for modules in model.stack_modules:
        for key in ("tl_embedding", "br_embedding"):
            kernel = modules[key].out.kernel
            kernel.assign(kernel * 0.01)
        if "ct_heatmap" in modules:
            # Center keypoints nearly everywhere (scores about 0.95, still
            # ranked by the image): the central-region filter keeps boxes.
            head = modules["ct_heatmap"].out
            head.kernel.assign(head.kernel * 0.1)
            head.bias.assign(tf.fill(head.bias.shape, CT_BIAS))
    return model, config, overrides


@pytest.fixture(scope="module")
def pictures(coco_tiny):
    """Three real pictures of different sizes: RGB, grayscale (2-D), and one resized to 1000x300."""
    import cv2

    _, image_dir = coco_tiny["val"]
    names = sorted(os.listdir(image_dir))[:3]
    rgb = [cv2.imread(os.path.join(image_dir, name))[..., ::-1] for name in names]
    gray = cv2.cvtColor(rgb[1], cv2.COLOR_RGB2GRAY)
    tall = cv2.resize(rgb[2], (300, 1000))
    return [np.ascontiguousarray(rgb[0]), gray, np.ascontiguousarray(tall)]


def as_rgb(image):
    return np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image


def assert_same_detections(got, expected, box_tol=1e-3):
    """`got`: a padded dict (keras-hub layout); `expected`: one dict per image or padded."""
    got = {k: np.asarray(v) for k, v in got.items()}
    if isinstance(expected, list):
        np.testing.assert_array_equal(got["num_detections"], [len(e["scores"]) for e in expected])
    else:
        expected = [
            {k: np.asarray(expected[k])[i, :n] for k in ("boxes", "scores", "classes")}
            for i, n in enumerate(np.asarray(expected["num_detections"]))
        ]
    for i, ref in enumerate(expected):
        n = len(ref["scores"])
        np.testing.assert_array_equal(got["classes"][i, :n], ref["classes"])
        np.testing.assert_allclose(got["boxes"][i, :n], ref["boxes"], atol=box_tol, rtol=0)
        np.testing.assert_allclose(got["scores"][i, :n], ref["scores"], atol=1e-5, rtol=0)
        # keras-hub's padding: class -1 and zeros past num_detections.
        assert np.all(got["classes"][i, n:] == -1) and not np.any(got["boxes"][i, n:])


@pytest.mark.parametrize("architecture,flip_test", [
    ("centernet", True), ("centernet", False), ("cornernet", True), ("cornernet", False),
])
def test_predict_on_images_of_any_size_matches_predictor(architecture, flip_test, pictures):
    model, config, _ = make_detector(architecture, flip_test)
    expected = Predictor(model, config).predict_images([as_rgb(p) for p in pictures])
    assert all(len(e["scores"]) > 0 for e in expected)
    got = model.predict(pictures, verbose=0)
    assert got["boxes"].shape == (3, config.decode.max_detections, 4)
    assert_same_detections(got, expected)
    # In original-image pixels: the 1000x300 picture's boxes reach past the canvas of the others.
    n = got["num_detections"][2]
    assert got["boxes"][2, :n, 3].max() > 300 and got["boxes"][2, :n].min() >= 0
    if flip_test:  # each image gets its own canvas: batching does not change the detections
        assert_same_detections(model.predict(pictures, batch_size=3, verbose=0), expected)


def test_one_decoder_and_a_swappable_one(pictures):
    model, _, _ = make_detector("centernet")
    decoders = [layer for layer in model._flatten_layers() if isinstance(layer, Decoder)]
    assert decoders == [model.decoder]
    before = model.predict(pictures[:1], verbose=0)
    model.decoder = Decoder(DecodeConfig(top_k=40, num_dets=200, max_detections=5), use_centers=True)
    got = model.predict(pictures[:1], verbose=0)  # retraced with the new decoder
    assert got["boxes"].shape == (1, 5, 4) and got["num_detections"][0] <= 5
    assert [layer for layer in model._flatten_layers() if isinstance(layer, Decoder)] == [model.decoder]
    np.testing.assert_allclose(got["boxes"][0, :2], before["boxes"][0, :2], atol=1e-4)
    with pytest.raises(TypeError, match="Decoder"):
        model.decoder = "gaussian"
    with pytest.raises(ValueError, match="1 among the test scales|lack it"):
        Decoder(DecodeConfig(test_scales=[0.5]), use_centers=True)


def test_canvas_input_without_preprocessor(pictures):
    """With ``preprocessor=None`` `predict` takes normalised canvases (boxes in canvas pixels)."""
    import cv2

    model, config, _ = make_detector("centernet")
    images = np.stack([cv2.resize(as_rgb(p), (SIZE, SIZE)) for p in pictures[:2]])
    expected = model.predict(list(images), verbose=0)
    canvases = model.image_converter.normalize(images).numpy()
    model.preprocessor = None
    assert_same_detections(model.predict(canvases, batch_size=2, verbose=0), expected)


def test_bad_images_are_clear_errors():
    model, _, _ = make_detector("centernet")
    with pytest.raises(ValueError, match="Image 1 has shape"):
        model.predict([np.zeros((20, 30, 3), np.uint8), np.zeros((20, 30, 2), np.uint8)])
    with pytest.raises(ValueError, match="Image 0 is empty"):
        model.predict([np.zeros((0, 30, 3), np.uint8)])
    with pytest.raises(TypeError, match="Image 0 is a str"):
        model.predict(["image.jpg"])


FRESH_PROCESS = textwrap.dedent("""
    import sys
    import keras, keras_hub, numpy as np
    import tf_centernet  # registers the detectors with Keras
    preset, keras_file, images, out = sys.argv[1:5]
    pictures = list(np.load(images, allow_pickle=True)["pictures"])
    results = {}
    for kind, model in (("preset", keras_hub.models.ObjectDetector.from_preset(preset)),
                        ("keras", keras.saving.load_model(keras_file))):
        results[f"{kind}/kind"] = type(model).__name__
        for key, value in model.predict(pictures, verbose=0).items():
            results[f"{kind}/{key}"] = value
    np.savez(out, **results)
""")


def run_fresh(preset, keras_file, pictures, tmp_path):
    """Both reloads in one new process: {"preset": outputs, "keras": outputs} (with "kind")."""
    images, out = str(tmp_path / "images.npz"), str(tmp_path / "fresh.npz")
    holder = np.empty(len(pictures), dtype=object)
    holder[:] = pictures
    np.savez(images, pictures=holder)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO] + sys.path), TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-c", FRESH_PROCESS, preset, keras_file, images, out],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = dict(np.load(out))
    return {kind: {k.split("/", 1)[1]: v for k, v in saved.items() if k.startswith(kind + "/")}
            for kind in ("preset", "keras")}


@pytest.mark.slow
def test_preset_and_keras_file_reload_in_a_fresh_process(pictures, tmp_path):
    model, _, _ = make_detector("centernet")
    model.category_ids, model.class_names = [7], ["cell"]
    expected = model.predict(pictures, verbose=0)
    preset = str(tmp_path / "preset")
    model.save_to_preset(preset)
    assert {"config.json", "task.json", "preprocessor.json", "metadata.json", "model.weights.h5",
            "task.weights.h5"} <= set(os.listdir(preset))
    keras_file = str(tmp_path / "model.keras")
    model.save(keras_file)
    for kind, got in run_fresh(preset, keras_file, pictures, tmp_path).items():
        assert str(got.pop("kind")) == "CenterNetObjectDetector", kind
        assert_same_detections(got, expected, box_tol=1e-4)

    # In this process too, with the class-level loaders and the labels.
    loaded = tf_centernet.CenterNetObjectDetector.from_preset(preset)
    assert loaded.category_ids == [7] and loaded.class_names == ["cell"]
    assert isinstance(keras_hub.models.ObjectDetector.from_preset(preset), tf_centernet.CenterNetObjectDetector)
    with pytest.raises(ValueError, match="not a CornerNetObjectDetector"):
        tf_centernet.CornerNetObjectDetector.from_preset(preset)

def readme_python_blocks(section):
    """The ```python blocks of one README section, verbatim."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        text = f.read()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return [block.split("\n```", 1)[0] for block in body.split("```python\n")[1:]]


@pytest.mark.slow
def test_readme_python_api_runs_as_written(pictures, tmp_path, monkeypatch):
    """The README's "Python API" blocks, run verbatim on a tiny detector saved where they look."""
    import cv2

    model, _, _ = make_detector("centernet")
    model.category_ids, model.class_names = [1], ["thing"]
    for folder in ("runs/demo/model", "runs/centernet_hg104"):
        model.save_to_preset(str(tmp_path / folder))
    cv2.imwrite(str(tmp_path / "photo.jpg"), np.ascontiguousarray(pictures[0][..., ::-1]))
    monkeypatch.chdir(tmp_path)
    blocks = readme_python_blocks("Python API")
    assert len(blocks) == 3
    namespace = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["out"]["boxes"].shape == (1, 100, 4) and namespace["n"] > 0
    assert os.path.isfile("photo_detections.jpg") and os.path.isfile("detector.keras")
    assert os.path.isfile("serving/my_detector/1/saved_model.pb")
    assert type(namespace["model"]).__name__ == "CenterNetObjectDetector"
