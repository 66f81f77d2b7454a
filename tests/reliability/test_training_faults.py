"""Training faults: NaN losses, a busy model directory, SIGTERM, damaged checkpoints.

Trains a one-stack, two-level hourglass on 63-pixel synthetic images for a
few steps: the faults, not the model, are under test.
"""

import glob
import logging
import os
import re
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from support.tiny import TINY_MODEL
from tf_centernet import losses
from tf_centernet.checkpoints import checkpoint_path, list_checkpoints
from tf_centernet.config import load_config
from tf_centernet.inference import load_trained_model
from tf_centernet.model_dir import ModelDirLock, ModelDirLocked
from tf_centernet.training import train
from tf_centernet.training.callbacks import NonFiniteLossError
from tf_centernet.training.distribute import get_strategy

TINY = [
    *TINY_MODEL, "data.input_size=63", "train.batch_size=2", "train.decay_steps=[]",
]


def tiny_overrides(synthetic_coco, model_dir, **train):
    image_dir, annotation_file = synthetic_coco
    overrides = [f"train_data.images={image_dir}", f"train_data.annotations={annotation_file}",
                 f"train.model_dir={model_dir}", *TINY]
    return overrides + [f"train.{k}={v}" for k, v in train.items()]


def steps_on_disk(model_dir):
    return [step for step, _ in list_checkpoints(model_dir)]


def test_huge_learning_rate_stops_and_the_finite_checkpoint_survives(synthetic_coco, tmp_path):
    model_dir = str(tmp_path / "model")
    config = load_config("demo", tiny_overrides(
        synthetic_coco, model_dir, learning_rate=1e8, total_steps=8, steps_per_epoch=8,
        checkpoint_every=1, keep_checkpoints=1))
    with pytest.raises(NonFiniteLossError) as stopped:
        train(config, strategy=get_strategy("one_device"), verbose=0)
    message = str(stopped.value)
    failed = int(re.search(r"Training stopped at step (\d+): non-finite", message).group(1))
    assert "on_nonfinite=stop" in message
    # Loss terms are named (or the gradients, when the loss stayed finite).
    assert re.search(r"(loss|focal_corner|pull|push|offset_corner|focal_center|offset_center)=(nan|inf)", message) \
        or "non-finite gradients" in message
    saved = steps_on_disk(model_dir)
    assert saved == [failed - 1], (saved, message)  # keep=1 rotated nothing finite away; nothing saved after
    model = load_trained_model(config, model_dir)
    assert all(np.isfinite(np.asarray(w.value)).all() for w in model.weights)
    assert os.path.isfile(os.path.join(model_dir, "config.yaml"))
    ModelDirLock(model_dir).acquire().release()  # the lock was released


def test_skip_policy_skips_injected_nan_steps_without_touching_state(synthetic_coco, tmp_path, monkeypatch, caplog):
    model_dir = str(tmp_path / "model")
    config = load_config("demo", tiny_overrides(
        synthetic_coco, model_dir, total_steps=8, steps_per_epoch=8, checkpoint_every=1,
        keep_checkpoints=10, on_nonfinite="skip", max_consecutive_nonfinite=2))
    inject = tf.Variable(False)
    original = losses.detection_losses

    def injected(*args, **kwargs):
        terms = dict(original(*args, **kwargs))
        factor = tf.where(inject, tf.constant(np.nan, tf.float32), tf.constant(1.0, tf.float32))
        terms["pull"] = terms["pull"] * factor
        terms["loss"] = terms["loss"] * factor
        return terms

    monkeypatch.setattr(losses, "detection_losses", injected)
    nan_batches = {1, 3, 4}  # fit batches: a lone one, then two in a row (the limit)
    unchanged = []

    class Inject(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            inject.assign(batch in nan_batches)
            self.before = [np.array(v.value) for v in self.model.weights + self.model.optimizer.variables]

        def on_train_batch_end(self, batch, logs=None):
            if batch in nan_batches:
                after = [np.array(v.value) for v in self.model.weights + self.model.optimizer.variables]
                unchanged.append(all(np.array_equal(a, b) for a, b in zip(after, self.before)))

    with caplog.at_level(logging.WARNING, logger="tf_centernet"), pytest.raises(NonFiniteLossError) as stopped:
        train(config, strategy=get_strategy("one_device"), verbose=0, extra_callbacks=[Inject()])
    # batch 0 -> step 1, batch 1 skipped, batch 2 -> step 2, batches 3 and 4 skipped: stop.
    assert unchanged == [True, True, True]  # weights, Adam moments and iterations untouched
    assert "Skipped step 2: non-finite loss" in caplog.text and "pull=nan" in caplog.text
    assert "Skipped step 3: non-finite loss" in caplog.text
    assert "Skipped 3 non-finite step(s) in this run" in caplog.text
    assert "2 consecutive non-finite steps" in str(stopped.value)
    assert steps_on_disk(model_dir) == [1, 2]  # nothing written after the stop
    # evaluate/detect/export load path: a truncated latest checkpoint falls back, with a warning.
    latest = checkpoint_path(model_dir, 2)
    data = open(latest, "rb").read()
    open(latest, "wb").write(data[: len(data) // 3])
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tf_centernet"):
        load_trained_model(config, model_dir)
    assert "Fell back to checkpoint" in caplog.text
    assert f"Loaded weights from {checkpoint_path(model_dir, 1)}" in caplog.text


def test_failed_or_locked_train_leaves_config_yaml_alone(synthetic_coco, tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.yaml").write_text("sentinel\n")
    bad = load_config("demo", tiny_overrides(synthetic_coco, str(model_dir), total_steps=1) + ["model.num_classes=5"])
    with pytest.raises(ValueError, match="3 categories but model.num_classes is 5"):
        train(bad, verbose=0)
    assert (model_dir / "config.yaml").read_text() == "sentinel\n"
    good = load_config("demo", tiny_overrides(synthetic_coco, str(model_dir), total_steps=1))
    with ModelDirLock(str(model_dir)):
        with pytest.raises(ModelDirLocked, match=f"Another training \\(PID {os.getpid()} "):
            train(good, verbose=0)
    assert (model_dir / "config.yaml").read_text() == "sentinel\n"


def _wait_for(predicate, process, seconds):
    deadline = time.time() + seconds
    while time.time() < deadline and process.poll() is None:
        if predicate():
            return True
        time.sleep(0.3)
    return predicate()


@pytest.mark.slow
def test_busy_dir_sigterm_and_resume_past_a_bit_flipped_checkpoint(synthetic_coco, tmp_path, repo_root):
    """Real processes: a second `train` is refused; SIGTERM saves and exits 143; the rerun resumes."""
    model_dir = str(tmp_path / "model")

    def command(total_steps):
        overrides = tiny_overrides(synthetic_coco, model_dir, total_steps=total_steps, steps_per_epoch=1000,
                                   checkpoint_every=2, keep_checkpoints=5)
        return [sys.executable, "-m", "tf_centernet", "train", "--config", "demo", "--set", *overrides]

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cwd = str(tmp_path)  # not the checkout: nothing may depend on the working directory
    env["PYTHONPATH"] = os.pathsep.join([repo_root, env.get("PYTHONPATH", "")])
    first = subprocess.Popen(command(1000), cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    try:
        assert _wait_for(lambda: len(steps_on_disk(model_dir)) >= 2, first, 500), "no checkpoints in time"
        assert first.poll() is None
        second = subprocess.run(command(1000), cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 2, second.stderr[-2000:]
        assert f"Another training (PID {first.pid} on" in second.stderr and "Traceback" not in second.stderr
        first.send_signal(signal.SIGTERM)
        _, stderr = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 143, stderr[-3000:]
    assert "Traceback" not in stderr
    last_line = [line for line in stderr.splitlines() if line.strip()][-1]
    stopped = int(re.search(r"Interrupted by SIGTERM at step (\d+)", last_line).group(1))
    saved = steps_on_disk(model_dir)
    assert saved[-1] == stopped and len(saved) >= 2
    assert not glob.glob(os.path.join(model_dir, "checkpoints", ".partial-*"))
    # Flip one bit of the newest checkpoint: the rerun resumes from the one before.
    latest = checkpoint_path(model_dir, stopped)
    data = bytearray(open(latest, "rb").read())
    data[len(data) // 2] ^= 0x01
    open(latest, "wb").write(bytes(data))
    rerun = subprocess.run(command(stopped + 1), cwd=cwd, env=env, capture_output=True, text=True, timeout=500)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"ckpt-{stopped}.weights.h5 is unusable: SHA-256 mismatch" in rerun.stderr
    resumed = int(re.search(r"Resumed from \S+ckpt-(\d+)\.weights\.h5 \(step (\d+)\)", rerun.stderr).group(1))
    assert resumed == saved[-2]
    assert steps_on_disk(model_dir)[-1] == stopped + 1
