"""The command line end to end: demo, and train/evaluate/detect on coco-tiny."""

import json
import os

import cv2
import pytest

from support.tiny import TINY_MODEL
from tf_centernet.cli import main

COCO_METRICS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


def test_bad_override_is_a_clear_error(caplog):
    code = main(["train", "--config", "demo", "--set", "train.no_such_key=1"])
    assert code == 2
    assert "no_such_key" in caplog.text


def test_set_takes_only_overrides_and_can_come_anywhere():
    from tf_centernet.cli import build_parser, split_set_values

    # The README's line: images right after the overrides.
    args = build_parser().parse_args(split_set_values(
        ["detect", "--model-dir", "M", "--set", "decode.flip_test=false", "photo.jpg", "second.jpg"]))
    assert args.set == ["decode.flip_test=false"] and args.images == ["photo.jpg", "second.jpg"]
    # Every KEY=VALUE word after --set is an override (even one that looks like a path), repeatable.
    argv = ["detect", "--set", "decode.flip_test=false", "a=b.jpg", "--model-dir", "M", "--set", "decode.top_k=50",
            "--set=decode.nms=merge", "photo.jpg"]
    args = build_parser().parse_args(split_set_values(argv))
    assert args.set == ["decode.flip_test=false", "a=b.jpg", "decode.top_k=50", "decode.nms=merge"]
    assert args.images == ["photo.jpg"] and args.model_dir == "M"
    with pytest.raises(SystemExit) as error:
        build_parser().parse_args(split_set_values(["train", "--set", "--config", "demo"]))
    assert error.value.code == 2


def test_version_names_the_toolchain(capsys):
    with pytest.raises(SystemExit) as error:
        main(["--version"])
    assert error.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("tf-centernet 0.1.0 (TensorFlow 2.20") and "keras-hub 0.32" in out


def test_no_cuda_noise_on_a_machine_without_gpu():
    """TensorFlow's "failed call to cuInit" error line is dropped where no NVIDIA driver exists; other lines stay."""
    import subprocess
    import sys

    from tf_centernet import runtime

    if runtime.has_nvidia_driver():
        pytest.skip("an NVIDIA driver is loaded: the CUDA probe's lines are real information here")
    script = (
        "import sys; sys.stderr.write('before\\n'); import tf_centernet; import tensorflow as tf; "
        "print(float(tf.reduce_sum(tf.ones(3))))"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "3.0", done.stderr
    assert "before" in done.stderr  # standard error still works
    assert "cuInit" not in done.stderr and "cuda drivers" not in done.stderr, done.stderr
    # Without the package the same script prints the line: the test can fail.
    bare = subprocess.run([sys.executable, "-c", script.replace("import tf_centernet; ", "")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert "cuInit" in bare.stderr


def test_unknown_config_name_lists_known_ones(caplog):
    assert main(["train", "--config", "no_such_config"]) == 2
    assert "centernet_hg104" in caplog.text


def test_demo_runs_end_to_end(tmp_path):
    out = str(tmp_path / "demo")
    code = main(["demo", "--output", out, "--steps", "2", "--set", "train.batch_size=2", "decode.flip_test=false",
                 *TINY_MODEL])
    assert code == 0
    with open(os.path.join(out, "eval", "metrics.json")) as f:
        metrics = json.load(f)
    assert all(name in metrics["metrics"] for name in COCO_METRICS)
    drawn = sorted(os.listdir(os.path.join(out, "detections")))
    assert drawn == ["000001_detections.jpg", "000002_detections.jpg", "detections.json"]


def test_train_evaluate_detect_on_coco_tiny(coco_tiny, tmp_path, capsys):
    (train_ann, train_dir), (val_ann, val_dir) = coco_tiny["train"], coco_tiny["val"]
    model_dir = str(tmp_path / "small")
    data = [
        f"train_data.images={train_dir}", f"train_data.annotations={train_ann}",
        f"validation_data.images={val_dir}", f"validation_data.annotations={val_ann}",
    ]
    assert main([
        "train", "--config", "centernet_small", "--model-dir", model_dir, "--set", *data,
        *TINY_MODEL, "data.input_size=127", "train.batch_size=2", "train.total_steps=2", "train.checkpoint_every=1",
        "train.eval_every=0", "train.image_summary_every=0",  # evaluated below, by the command
    ]) == 0
    assert sorted(os.listdir(os.path.join(model_dir, "checkpoints"))) == ["ckpt-1.weights.h5", "ckpt-2.weights.h5"]
    with open(os.path.join(model_dir, "classes.json")) as f:
        classes = json.load(f)
    with open(train_ann) as f:
        categories = sorted(json.load(f)["categories"], key=lambda c: c["id"])
    assert classes["category_ids"] == [c["id"] for c in categories]
    assert classes["names"] == [c["name"] for c in categories]
    # evaluate and detect read the trained model's config.yaml.
    assert main(["evaluate", "--model-dir", model_dir, "--max-images", "3", "--set", "decode.flip_test=false"]) == 0
    printed = capsys.readouterr().out
    assert all(name in printed for name in COCO_METRICS)
    with open(os.path.join(model_dir, "eval", "metrics.json")) as f:
        assert set(COCO_METRICS) <= set(json.load(f)["metrics"])
    image = os.path.join(val_dir, sorted(os.listdir(val_dir))[0])
    out = str(tmp_path / "detections")
    assert main(["detect", "--model-dir", model_dir, image, "--output", out]) == 0
    drawn = cv2.imread(os.path.join(out, os.path.basename(image).replace(".jpg", "_detections.jpg")))
    original = cv2.imread(image)
    assert drawn.shape == original.shape
    with open(os.path.join(out, "detections.json")) as f:
        detections = json.load(f)
    for det in detections:
        assert det["file_name"] == os.path.basename(image)
        assert det["category_id"] in classes["category_ids"] and len(det["bbox"]) == 4
        assert det["category"] == classes["names"][classes["category_ids"].index(det["category_id"])]
