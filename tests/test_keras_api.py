"""Detections from Keras' own API: `model.predict`, a `.keras` file, `model.export`.

The detector is the tiny CenterNet of tests/tiny.py (127x127
inputs, flip test on) with one class and its embedding heads scaled by 0.01,
so that the untrained model pairs corners and finds real boxes (as in
test_export.py). Two different images: `model.predict` on the normalised
images must give, image by image, the detections `Predictor` gives for the
uint8 images (at 127x127 the releases' canvas is the image itself, so both
decode the same network outputs with the same geometry).
"""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_centernet.config import DecodeConfig, load_config
from tiny import TINY_MODEL
from tf_centernet.decode import Decoder
from tf_centernet.inference import Predictor
from tf_centernet.models import build_model

SIZE = 127


@pytest.fixture(scope="module")
def setup(synthetic_coco):
    import cv2

    config = load_config("demo", ["model.num_classes=1", "decode.top_k=40", *TINY_MODEL])
    keras.utils.set_random_seed(0)
    model = build_model(config.model, decode_config=config.decode)
    model.build((None, SIZE, SIZE, 3))
    for modules in model.stack_modules:
        for key in ("tl_embedding", "br_embedding"):
            kernel = modules[key].out.kernel
            kernel.assign(kernel * 0.01)
    image_dir, _ = synthetic_coco
    names = sorted(os.listdir(image_dir))[:2]
    images = np.stack([
        cv2.resize(cv2.imread(os.path.join(image_dir, name))[..., ::-1], (SIZE, SIZE))
        for name in names
    ]).astype(np.uint8)
    assert not np.array_equal(images[0], images[1])
    normalised = ((tf.cast(images, tf.float32) / 255.0 - tf.constant(config.data.mean, tf.float32))
                  / tf.constant(config.data.std, tf.float32)).numpy()
    expected = {k: v.numpy() for k, v in Predictor(model, config)(images).items()}
    return model, config, images, normalised, expected


def assert_same_detections(got, expected):
    got = {k: np.asarray(v) for k, v in got.items()}
    np.testing.assert_array_equal(got["num_detections"], expected["num_detections"])
    for i, n in enumerate(expected["num_detections"]):
        np.testing.assert_array_equal(got["classes"][i, :n], expected["classes"][i, :n])
        np.testing.assert_allclose(got["boxes"][i, :n], expected["boxes"][i, :n], atol=1e-3)
        np.testing.assert_allclose(got["scores"][i, :n], expected["scores"][i, :n], atol=1e-5)
        # keras-hub's padding: class -1 past num_detections.
        assert np.all(got["classes"][i, n:] == -1)


def test_predict_gives_predictor_detections(setup):
    model, config, images, normalised, expected = setup
    assert expected["num_detections"].min() > 0
    got = model.predict(normalised, batch_size=2, verbose=0)
    assert sorted(got) == ["boxes", "classes", "num_detections", "scores"]
    assert got["boxes"].shape == (2, config.decode.max_detections, 4)
    assert_same_detections(got, expected)
    # The images differ, and so do their detections.
    n = expected["num_detections"].min()
    assert not np.allclose(got["boxes"][0, :n], got["boxes"][1, :n])


def test_decoder_is_swappable(setup):
    model, config, _, normalised, _ = setup
    original = model.decoder
    try:
        model.decoder = Decoder(DecodeConfig(top_k=40, num_dets=200, max_detections=5), use_centers=True)
        got = model.predict(normalised, verbose=0)
        assert got["boxes"].shape == (2, 5, 4)
        assert np.all(got["num_detections"] <= 5)
    finally:
        model.decoder = original


@pytest.mark.slow
def test_keras_file_reloads_in_a_fresh_process(setup, tmp_path):
    model, _, _, normalised, expected = setup
    path = str(tmp_path / "model.keras")
    model.save(path)
    np.save(tmp_path / "images.npy", normalised)
    script = textwrap.dedent(f"""
        import numpy as np, keras
        import tf_centernet.models  # registers the classes
        model = keras.saving.load_model({path!r})
        out = model.predict(np.load({str(tmp_path / 'images.npy')!r}), verbose=0)
        np.savez({str(tmp_path / 'out.npz')!r}, **out)
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(__file__))] + sys.path))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    got = dict(np.load(tmp_path / "out.npz"))
    assert_same_detections(got, expected)


def test_model_export_serves_detections(setup, tmp_path):
    model, _, _, normalised, expected = setup
    path = str(tmp_path / "saved")
    model.export(path)
    loaded = tf.saved_model.load(path)
    got = loaded.serve(tf.constant(normalised))
    assert_same_detections(got, expected)
    heads = loaded.serve_heads(tf.constant(normalised))
    assert heads["tl_heatmap"].shape == (2, 32, 32, 1)
