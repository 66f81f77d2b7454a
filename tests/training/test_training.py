"""Training with fit: falling loss, distribution, checkpoints, resume."""

import ast
import glob
import inspect
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from support import REPO_ROOT
from support.tiny import TINY_MODEL
from tf_centernet.config import load_config
from tf_centernet.inference import load_trained_model
from tf_centernet.training import train
from tf_centernet.training.distribute import get_strategy
from tf_centernet.training.optimizer import learning_rate_schedule


def demo_overrides(synthetic_coco, model_dir, **train):
    image_dir, annotation_file = synthetic_coco
    overrides = [
        f"train_data.images={image_dir}",
        f"train_data.annotations={annotation_file}",
        f"train.model_dir={model_dir}",
        "train.batch_size=4",
        *TINY_MODEL,
    ]
    overrides += [f"train.{k}={v}" for k, v in train.items()]
    return overrides


def test_learning_rate_schedule_steps_down():
    config = load_config("centernet_hg104")
    schedule = learning_rate_schedule(config.train)
    assert float(schedule(0)) == pytest.approx(2.5e-4)
    assert float(schedule(449_999)) == pytest.approx(2.5e-4)
    assert float(schedule(450_001)) == pytest.approx(2.5e-5)



def test_learning_rate_schedule_cosine_with_warmup():
    """``train.lr_schedule=cosine``: linear warmup from 0, half cosine to 0 at total_steps."""
    overrides = ["train.lr_schedule=cosine", "train.learning_rate=2e-3", "train.total_steps=1100",
                 "train.warmup_steps=100"]
    schedule = learning_rate_schedule(load_config("bccd_small", overrides).train)
    assert float(schedule(0)) == pytest.approx(0.0)
    assert float(schedule(50)) == pytest.approx(1e-3)
    assert float(schedule(100)) == pytest.approx(2e-3)
    assert float(schedule(600)) == pytest.approx(1e-3)  # half way down
    assert float(schedule(1100)) == pytest.approx(0.0, abs=1e-9)
    no_warmup = learning_rate_schedule(load_config("bccd_small", overrides[:-1] + ["train.warmup_steps=0"]).train)
    assert float(no_warmup(0)) == pytest.approx(2e-3) and float(no_warmup(550)) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="train.lr_schedule"):
        load_config("bccd_small", ["train.lr_schedule=linear"])

def test_fit_two_replicas_loss_falls_and_checkpoints(synthetic_coco, tmp_path):
    model_dir = str(tmp_path / "model")
    config = load_config(
        "demo", demo_overrides(synthetic_coco, model_dir, total_steps=24, steps_per_epoch=12, checkpoint_every=12)
    )
    strategy = get_strategy("mirrored")
    assert strategy.num_replicas_in_sync == 2  # two logical CPUs (conftest)
    model, history = train(config, strategy=strategy, verbose=0)
    loss = history.history["loss"]
    assert len(loss) == 2 and loss[1] < loss[0]
    for term in ("focal_corner", "focal_center", "pull", "push", "offset_corner", "offset_center"):
        assert np.isfinite(history.history[term]).all()
    assert int(model.optimizer.iterations.numpy()) == 24
    # Two replicas take the detector's own train_step / symbolic-build hook:
    # no instance attribute shadows a method of its class (no monkeypatching)
    # but those Keras itself sets on every model (Layer wraps build and
    # quantize per instance; compile stores loss).
    shadowed = {k for k in vars(model) if inspect.isfunction(getattr(type(model), k, None))}
    assert shadowed <= {"build", "quantize", "loss"}, shadowed
    saved = sorted(os.listdir(os.path.join(model_dir, "checkpoints")))
    assert saved == ["ckpt-12.weights.h5", "ckpt-24.weights.h5"]
    # Every variable comes back from the checkpoint (none silently left at
    # its initial value).
    restored = load_trained_model(config, model_dir)
    assert len(restored.weights) == len(model.weights)
    for trained, loaded in zip(model.weights, restored.weights):
        np.testing.assert_array_equal(np.asarray(trained.value), np.asarray(loaded.value), err_msg=trained.path)
    # TensorBoard scalars of each loss term.
    events = glob.glob(os.path.join(model_dir, "logs", "train", "events.out.tfevents.*"))
    assert events
    tags = set()
    for event_file in events:
        for event in tf.compat.v1.train.summary_iterator(event_file):
            tags.update(v.tag for v in event.summary.value)
    assert {"epoch_focal_corner", "epoch_pull", "epoch_loss", "epoch_learning_rate"} <= tags
    # Already complete: a second call makes no step.
    model2, history2 = train(config, strategy=get_strategy("one_device"), verbose=0)
    assert int(model2.optimizer.iterations.numpy()) == 24 and not history2.history


@pytest.mark.slow
def test_killed_training_resumes_from_last_checkpoint(synthetic_coco, tmp_path, repo_root):
    model_dir = str(tmp_path / "model")
    command = [
        sys.executable, "-m", "tf_centernet", "train", "--config", "demo", "--set",
        *demo_overrides(synthetic_coco, model_dir, total_steps=80, steps_per_epoch=10, checkpoint_every=5),
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    first = subprocess.Popen(command, cwd=repo_root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoints = os.path.join(model_dir, "checkpoints")
    deadline = time.time() + 300
    while time.time() < deadline and first.poll() is None:
        if glob.glob(os.path.join(checkpoints, "ckpt-*.weights.h5")):
            break
        time.sleep(0.2)
    assert first.poll() is None, "training ended before it could be interrupted"
    first.send_signal(signal.SIGKILL)
    first.wait()
    saved = sorted(
        int(re.search(r"ckpt-(\d+)", p).group(1)) for p in glob.glob(os.path.join(checkpoints, "ckpt-*.weights.h5"))
    )
    assert saved and saved[-1] < 80
    second = subprocess.run(command, cwd=repo_root, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    resumed = re.search(r"Resumed from \S+ \(step (\d+)\)", second.stderr)
    assert resumed, second.stderr[-3000:]
    assert int(resumed.group(1)) >= saved[-1] >= 5
    assert os.path.exists(os.path.join(checkpoints, "ckpt-80.weights.h5"))


# Attributes code outside the detector's class may set on a model: Keras'
# callback protocol (stop_training) and the detector's public label
# attributes (constructor arguments, not behaviour).
ALLOWED_MODEL_ATTRIBUTES = {"stop_training", "class_names", "category_ids"}
# Known, reported for its owner to change: the converter records the
# configured pooling implementation on a model built with the scans.
KNOWN_MODEL_ATTRIBUTES = {("convert/model_dir.py", "pooling_impl")}
# TensorFlow's own private switches, not a model's: the TFLite converter's
# calibrate-only mode (the route of tf.lite's QuantizationDebugger).
ALLOWED_PRIVATE = {("export/tflite.py", "converter", "_experimental_calibrate_only")}
MODEL_CLASS_FILES = {"models/object_detector.py", "models/detection.py", "models/training_hooks.py"}


def _attribute_stores(tree):
    """(line, owner source, attribute) of every ``owner.attr = ...`` and ``setattr(owner, ...)``."""
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else [])
        for target in targets:
            for sub in ast.walk(target):
                if isinstance(sub, ast.Attribute) and isinstance(sub.ctx, ast.Store):
                    yield node.lineno, ast.unparse(sub.value), sub.attr
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("setattr", "delattr") and node.args:
            name = node.args[1].value if len(node.args) > 1 and isinstance(node.args[1], ast.Constant) else "?"
            yield node.lineno, ast.unparse(node.args[0]), name


def test_nothing_outside_the_detector_class_sets_model_attributes():
    """An AST scan of tf_centernet/: no code outside the detector's class files assigns (or setattr's)
    a method of the detector or any attribute of an object named like a model, but for the allowed
    public attributes; and no code anywhere sets a private attribute of another object."""
    from tf_centernet.models import KeypointObjectDetector

    methods = {name for name in dir(KeypointObjectDetector) if callable(getattr(KeypointObjectDetector, name, None))}
    root = os.path.join(REPO_ROOT, "tf_centernet")
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read())
            classes = {node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}
            for line, owner, attr in _attribute_stores(tree):
                if (owner == "self" and rel in MODEL_CLASS_FILES) or owner.split(".")[0] in classes:
                    continue  # the detector's own state; a class of this file setting its own
                last = owner.split(".")[-1].lower()
                model_like = any(word in last for word in ("model", "detector", "net"))
                if owner != "self" and attr.startswith("_") and not attr.startswith("__"):
                    if (rel, owner, attr) in ALLOWED_PRIVATE:
                        continue
                    found.append(f"{rel}:{line}: {owner}.{attr} (private attribute of another object)")
                elif (model_like or (attr in methods and owner != "self")) and attr not in ALLOWED_MODEL_ATTRIBUTES:
                    if (rel, attr) not in KNOWN_MODEL_ATTRIBUTES:
                        found.append(f"{rel}:{line}: {owner}.{attr}")
    assert found == []
