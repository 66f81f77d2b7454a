"""`tf-centernet convert` and `train --init-from`, as a user runs them."""

import json
import logging
import os
import sys

import keras
import numpy as np
import pytest

pytest.importorskip("torch", reason="the convert extra (torch) is not installed")

from tf_centernet.cli import _load_config, build_parser, main  # noqa: E402
from tf_centernet.config import load_config  # noqa: E402
from tf_centernet.convert import read_snapshot, release_entries, release_state, save_snapshot  # noqa: E402
from tf_centernet.training import train  # noqa: E402

# The fixtures' architecture (their README), as --set overrides.
ARCH = [
    "model.levels=2", "model.widths=[32,32,48]", "model.blocks=[1,1,2]",
    "model.stem_channels=16", "model.head_channels=32", "model.pool_channels=128",
]


@pytest.mark.slow
def test_convert_then_detect_then_export_with_no_further_flag(fixtures_dir, coco_tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths, as a new user types them
    snapshot = os.path.join(fixtures_dir, "centernet_small.pkl")
    assert main([
        "convert", snapshot, "--config", "centernet_small", "--set", *ARCH, "model.num_classes=3",
        "--model-dir", "runs/converted",
    ]) == 0
    model_dir = tmp_path / "runs" / "converted"
    # A keras-hub preset that is also a model directory (config.yaml, classes.json).
    assert sorted(os.listdir(model_dir)) == [
        "classes.json", "config.json", "config.yaml", "image_converter.json", "metadata.json",
        "model.weights.h5", "preprocessor.json", "task.json", "task.weights.h5",
    ]
    with open(model_dir / "classes.json") as f:
        assert json.load(f) == {"category_ids": [1, 2, 3], "names": ["1", "2", "3"]}

    val_dir = coco_tiny["val"][1]
    image = os.path.join(val_dir, sorted(os.listdir(val_dir))[0])
    assert main(["detect", "--model-dir", "runs/converted", image]) == 0
    assert os.path.isfile(tmp_path / "detections" / "detections.json")
    assert main(["export", "--model-dir", "runs/converted"]) == 0
    assert os.path.isfile(model_dir / "export" / "saved_model" / "1" / "saved_model.pb")
    # Converting again into the same folder would shadow nothing silently.
    assert main([
        "convert", snapshot, "--config", "centernet_small", "--set", *ARCH, "model.num_classes=3",
        "--model-dir", "runs/converted",
    ]) == 2


def test_convert_mismatching_architecture_is_one_clear_error(fixtures_dir, tmp_path, caplog):
    model_dir = tmp_path / "converted"
    code = main([
        "convert", os.path.join(fixtures_dir, "cornernet_small.pkl"), "--config", "centernet_small",
        "--set", *ARCH, "model.num_classes=3", "--model-dir", str(model_dir),
    ])
    assert code == 2
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1
    message = errors[0].getMessage()
    assert "cornernet_small.pkl does not match" in message
    assert "tl_cnvs.0.look_conv1.conv.weight" in message  # the first missing key
    assert "model.architecture=cornernet" in message
    assert not model_dir.exists()  # nothing written


def test_convert_without_torch_names_the_extra(fixtures_dir, tmp_path, caplog, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    code = main([
        "convert", os.path.join(fixtures_dir, "centernet_small.pkl"), "--config", "centernet_small",
        "--set", *ARCH, "model.num_classes=3", "--model-dir", str(tmp_path / "m"),
    ])
    assert code == 2
    assert 'pip install "tf-centernet[convert]"' in caplog.text


def test_train_init_from_flag_sets_an_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["train", "--config", "demo", "--init-from", "runs/converted"])
    assert _load_config(args).train.init_from == str(tmp_path / "runs" / "converted")


def eighty_class_snapshot(fixtures_dir, path):
    """The CenterNet fixture with 80-class heatmap outputs (random)."""
    state = read_snapshot(os.path.join(fixtures_dir, "centernet_small.pkl"))
    rng = np.random.default_rng(1)
    for key in [k for k in state if k.split(".")[0].endswith("_heats") and k.split(".")[2] == "1"]:
        shape = (80,) + state[key].shape[1:]
        state[key] = (0.01 * rng.standard_normal(shape) - (2.19 if key.endswith("bias") else 0)).astype(np.float32)
    save_snapshot(state, path)
    return state


class CaptureAtStart(keras.callbacks.Callback):
    """The model's release state when `fit` starts (after initialization)."""

    def on_train_begin(self, logs=None):
        self.state = release_state(self.model, with_batch_counts=False)
        self.heatmap_outputs = [e for e in release_entries(self.model)[0] if e.heatmap_output]


@pytest.mark.slow
def test_init_from_converted_80_class_model_into_3_classes_trains(fixtures_dir, synthetic_coco, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="tf_centernet")
    snapshot = str(tmp_path / "eighty.pkl")
    state = eighty_class_snapshot(fixtures_dir, snapshot)
    converted = str(tmp_path / "converted80")
    assert main([
        "convert", snapshot, "--config", "centernet_small", "--set", *ARCH, "model.num_classes=80",
        "--model-dir", converted,
    ]) == 0
    with open(os.path.join(converted, "classes.json")) as f:
        assert json.load(f)["names"][:2] == ["person", "bicycle"]

    image_dir, annotations = synthetic_coco  # 3 classes
    config = load_config("centernet_small", [
        *ARCH, "model.num_classes=3", "model.pooling_impl=scan",
        f"train_data.images={image_dir}", f"train_data.annotations={annotations}", "data.input_size=127",
        "data.max_objects=16", "data.border=32", f"train.model_dir={tmp_path / 'finetuned'}",
        f"train.init_from={converted}", "train.batch_size=4", "train.learning_rate=5e-4",
        "train.decay_steps=[]", "train.total_steps=12", "train.steps_per_epoch=1", "train.checkpoint_every=12",
    ])
    capture = CaptureAtStart()
    _, history = train(config, verbose=0, extra_callbacks=[capture])

    # Everything but the heatmap output layers equals the snapshot.
    heatmap_keys = {e.key for e in capture.heatmap_outputs}
    assert len(heatmap_keys) == 12  # (tl, br, ct) x 2 stacks x (kernel, bias)
    for key, value in capture.state.items():
        if key not in heatmap_keys:
            np.testing.assert_array_equal(value, state[key], err_msg=key)
    for entry in capture.heatmap_outputs:
        value = capture.state[entry.key]
        assert value.shape[0] == 3
        if entry.key.endswith("bias"):
            np.testing.assert_array_equal(value, np.full(3, -2.19, np.float32))
    assert "heatmap output layers re-initialized" in caplog.text and "tl_heats.0.1" in caplog.text

    loss = history.history["loss"]
    assert len(loss) == 12 and np.isfinite(loss).all()
    assert np.mean(loss[-3:]) < np.mean(loss[:3])
