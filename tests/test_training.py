"""Training with fit: falling loss, distribution, checkpoints, resume."""

import glob
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tf_centernet.config import load_config
from tf_centernet.inference import load_trained_model
from tf_centernet.training import train
from tf_centernet.training.distribute import get_strategy
from tf_centernet.training.optimizer import learning_rate_schedule
from tiny import TINY_MODEL


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
