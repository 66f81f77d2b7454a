"""Checkpoint files, the training guards and the CLI's exit codes, without training.

A two-layer Keras model stands in for the detector: the checkpoint code
only sees `save_weights` / `load_weights` and variables.
"""

import hashlib
import logging
import os
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_centernet import checkpoints as ckpt
from tf_centernet import cli
from tf_centernet.model_dir import ModelDirLock, ModelDirLocked
from tf_centernet.training.callbacks import (
    CheckpointCallback,
    InterruptGuard,
    NonFiniteGuard,
    NonFiniteLossError,
    TrainingInterrupted,
)
from tf_centernet.training.optimizer import NonFiniteGuardOptimizer


def small_model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dense(2)])
    model.compile(optimizer=NonFiniteGuardOptimizer(keras.optimizers.Adam(1e-2)), loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model


def set_weights_to(model, value):
    for w in model.weights:
        w.assign(np.full(w.shape, value, dtype="float32"))


def save_steps(model, model_dir, steps, keep=10):
    """Saves one checkpoint per step, the weights all equal to the step number."""
    for step in steps:
        set_weights_to(model, float(step))
        ckpt.save_checkpoint(model, model_dir, step, keep)


def loaded_value(model):
    return float(np.asarray(model.weights[0].value).flat[0])


def test_save_is_atomic_with_manifest_and_rotation(tmp_path):
    model_dir = str(tmp_path)
    model = small_model()
    save_steps(model, model_dir, [1, 2, 3, 4], keep=2)
    folder = tmp_path / "checkpoints"
    assert sorted(os.listdir(folder)) == ["ckpt-3.weights.h5", "ckpt-4.weights.h5"]  # no partial file left
    manifest = (tmp_path / "checkpoints.sha256").read_text().splitlines()
    expected = [
        f"{hashlib.sha256((folder / n).read_bytes()).hexdigest()}  checkpoints/{n}" for n in sorted(os.listdir(folder))
    ]
    assert manifest == expected  # sha256sum format, pruned entries gone
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".partial")]


@pytest.mark.parametrize("damage", ["truncated", "zero-byte", "bit-flipped"])
def test_damaged_latest_checkpoint_falls_back_with_warning(tmp_path, caplog, damage):
    model_dir = str(tmp_path)
    model = small_model()
    save_steps(model, model_dir, [1, 2, 3])
    latest = ckpt.checkpoint_path(model_dir, 3)
    data = bytearray(open(latest, "rb").read())
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "zero-byte":
        data = b""
    else:
        data[len(data) // 2] ^= 0x10  # one bit in the middle (weights): h5py would load it silently
    open(latest, "wb").write(bytes(data))
    assert ckpt.validate_checkpoint(latest) is not None
    set_weights_to(model, 0.0)
    with caplog.at_level(logging.WARNING, logger="tf_centernet"):
        path = ckpt.load_checkpoint(model, model_dir)
    assert path == ckpt.checkpoint_path(model_dir, 2)
    assert loaded_value(model) == 2.0
    assert "ckpt-3.weights.h5" in caplog.text and "Fell back to checkpoint" in caplog.text
    # The damaged file, named explicitly: a clear error, no raw h5py OSError.
    with pytest.raises(ckpt.CheckpointError, match="ckpt-3.weights.h5 is unusable"):
        ckpt.load_checkpoint(model, latest)
    # Every checkpoint damaged: a clear error naming each.
    for step in (1, 2):
        open(ckpt.checkpoint_path(model_dir, step), "wb").write(b"not hdf5")
    with pytest.raises(ckpt.CheckpointError, match="None of the 3 checkpoint"):
        ckpt.load_checkpoint(model, model_dir)


def test_unlisted_checkpoint_is_read_back_with_h5py(tmp_path):
    """Without a manifest entry (older runs, killed between rename and manifest)."""
    model_dir = str(tmp_path)
    model = small_model()
    save_steps(model, model_dir, [1, 2])
    os.remove(tmp_path / "checkpoints.sha256")
    assert ckpt.validate_checkpoint(ckpt.checkpoint_path(model_dir, 2)) is None
    path = ckpt.checkpoint_path(model_dir, 2)
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) - 200])
    assert "unreadable HDF5" in ckpt.validate_checkpoint(path)
    assert ckpt.latest_checkpoint(model_dir) == ckpt.checkpoint_path(model_dir, 1)
    assert ckpt.load_checkpoint(model, model_dir) == ckpt.checkpoint_path(model_dir, 1)
    assert loaded_value(model) == 1.0


def test_nonfinite_weights_are_never_saved_and_rotation_keeps_the_finite_one(tmp_path):
    model_dir = str(tmp_path)
    model = small_model()
    save_steps(model, model_dir, [5], keep=1)
    set_weights_to(model, np.nan)
    with pytest.raises(ckpt.CheckpointError, match="NaN/Inf"):
        ckpt.save_checkpoint(model, model_dir, 6, keep=1)
    assert [s for s, _ in ckpt.list_checkpoints(model_dir)] == [5]
    assert ckpt.validate_checkpoint(ckpt.checkpoint_path(model_dir, 5)) is None
    # Rotation never deletes the checkpoint it protects, even when newer files exist.
    set_weights_to(model, 1.0)
    open(ckpt.checkpoint_path(model_dir, 9), "wb").write(b"junk")
    ckpt.save_checkpoint(model, model_dir, 7, keep=1)
    assert [s for s, _ in ckpt.list_checkpoints(model_dir)] == [7, 9]


def test_leftover_partial_files_are_removed(tmp_path, caplog):
    model_dir = str(tmp_path)
    save_steps(small_model(), model_dir, [1])
    leftovers = [tmp_path / "checkpoints" / ".partial-ckpt-2.weights.h5", tmp_path / ".partial-checkpoints.sha256"]
    for p in leftovers:
        p.write_bytes(b"half")
    with caplog.at_level(logging.WARNING, logger="tf_centernet"):
        removed = ckpt.cleanup_partials(model_dir)
    assert sorted(removed) == sorted(str(p) for p in leftovers)
    assert not any(p.exists() for p in leftovers)
    assert caplog.text.count("Removed leftover") == 2
    assert ckpt.validate_checkpoint(ckpt.checkpoint_path(model_dir, 1)) is None


@pytest.mark.parametrize("bad", ["gradient", "loss"])
def test_guarded_adam_skipped_step_changes_nothing(bad):
    model = small_model()
    opt = model.optimizer
    grads = [tf.ones_like(v) for v in model.trainable_variables]

    @tf.function
    def step(grads, loss):
        opt.scale_loss(loss)
        opt.apply(grads, model.trainable_variables)

    step(grads, tf.constant(1.0))  # one finite step: moments non-zero
    before = [np.array(v.value) for v in model.weights + opt.variables]
    assert int(opt.iterations.numpy()) == 1
    bad_grads = [g * np.nan if (bad == "gradient" and i == 1) else g for i, g in enumerate(grads)]
    step(bad_grads, tf.constant(np.inf if bad == "loss" else 1.0))
    after = [np.array(v.value) for v in model.weights + opt.variables]
    for b, a in zip(before, after):
        np.testing.assert_array_equal(a, b)  # weights, moments and iterations untouched
    step(grads, tf.constant(1.0))  # a finite step still applies
    assert int(opt.iterations.numpy()) == 2
    assert not np.array_equal(np.array(model.weights[0].value), before[0])


class _FakeOptimizer:
    def __init__(self):
        self.iterations = tf.Variable(0, dtype="int64")


class _FakeModel:
    def __init__(self):
        self.optimizer = _FakeOptimizer()
        self.non_trainable_weights = []
        self.stop_training = False
        self.resets = 0

    def reset_metrics(self):
        self.resets += 1


def run_guard(guard, losses):
    """Feeds per-step losses to a NonFiniteGuard; finite steps advance the optimizer."""
    model = _FakeModel()
    guard._model = model
    for i, loss in enumerate(losses):
        guard.on_train_batch_begin(i)
        if np.isfinite(loss):
            model.optimizer.iterations.assign_add(1)
        guard.on_train_batch_end(i, {"loss": loss, "pull": loss, "push": 0.5})
        if model.stop_training:
            break
    return model


def test_nonfinite_guard_stop_names_step_and_terms_and_blocks_checkpoints(tmp_path):
    save_steps(small_model(), str(tmp_path), [2])
    checkpoints = CheckpointCallback(str(tmp_path), every=1, last_saved=2)
    guard = NonFiniteGuard("stop", checkpoints=checkpoints)
    model = run_guard(guard, [1.0, 2.0, np.nan, 1.0])
    assert model.stop_training and int(model.optimizer.iterations.numpy()) == 2
    message = str(guard.error)
    assert isinstance(guard.error, NonFiniteLossError)
    assert "step 3" in message and "loss=nan" in message and "pull=nan" in message and "push" not in message
    assert "checkpoint is of step 2" in message and checkpoints.blocked


def test_nonfinite_guard_skip_counts_and_stops_after_consecutive(caplog):
    guard = NonFiniteGuard("skip", max_consecutive=2)
    with caplog.at_level(logging.WARNING, logger="tf_centernet"):
        model = run_guard(guard, [1.0, np.nan, 1.0, np.inf, np.nan, 1.0])
    assert guard.skipped == 3 and model.resets == 2  # running means restart after each skip
    assert caplog.text.count("Skipped step") == 2
    assert "Skipped step 2:" in caplog.text and "Skipped step 3:" in caplog.text
    assert "2 consecutive non-finite steps" in str(guard.error) and "step 3" in str(guard.error)
    assert model.stop_training and int(model.optimizer.iterations.numpy()) == 2


def test_interrupt_guard_defers_in_fit_and_stops_at_once_otherwise():
    with InterruptGuard() as guard:
        guard.on_train_begin()
        os.kill(os.getpid(), signal.SIGTERM)  # handled between bytecodes: no exception yet
        assert guard.signum == signal.SIGTERM
        with pytest.raises(TrainingInterrupted) as second:
            os.kill(os.getpid(), signal.SIGINT)
        assert second.value.exit_code == 130
        error = guard.error(7, "/m/checkpoints/ckpt-7.weights.h5")
        assert error.exit_code == 143 and "SIGTERM at step 7" in str(error) and "ckpt-7" in str(error)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored
    with InterruptGuard():
        with pytest.raises(TrainingInterrupted, match="SIGINT"):
            os.kill(os.getpid(), signal.SIGINT)


def test_model_dir_lock_refuses_a_second_writer_and_takes_over_stale_ones(tmp_path, caplog):
    model_dir = str(tmp_path / "m")
    with ModelDirLock(model_dir):
        with pytest.raises(ModelDirLocked, match=f"PID {os.getpid()} on"):
            ModelDirLock(model_dir).acquire()
        # Another process too (flock is per open file, process-wide semantics).
        code = (
            "import fcntl,sys; f=open(sys.argv[1],'a+')\n"
            "try:\n fcntl.flock(f.fileno(), fcntl.LOCK_EX|fcntl.LOCK_NB); print('got')\n"
            "except BlockingIOError: print('busy')"
        )
        out = subprocess.run([sys.executable, "-c", code, os.path.join(model_dir, ".train.lock")],
                             capture_output=True, text=True, timeout=60)
        assert out.stdout.strip() == "busy"
    # A lock file left by a dead process (killed: never released).
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with open(os.path.join(model_dir, ".train.lock"), "w") as f:
        f.write(f"pid={dead.pid}\nhost=thishost\nstarted=earlier\n")
    with caplog.at_level(logging.WARNING, logger="tf_centernet"):
        with ModelDirLock(model_dir):
            pass
    assert f"Took over the stale training lock of PID {dead.pid}" in caplog.text


@pytest.mark.parametrize(
    "error, code",
    [
        (NonFiniteLossError("Training stopped at step 3: non-finite loss (loss=nan)"), 1),
        (TrainingInterrupted("Interrupted by SIGTERM at step 4", signal.SIGTERM), 143),
        (TrainingInterrupted("Interrupted by SIGINT at step 4", signal.SIGINT), 130),
        (ModelDirLocked("Another training (PID 1 on h, started t) is writing to m"), 2),
        (ckpt.CheckpointError("None of the 2 checkpoint(s) in m is usable"), 2),
        (KeyboardInterrupt(), 130),
    ],
)
def test_cli_train_errors_exit_cleanly(monkeypatch, tmp_path, capfd, caplog, error, code):
    import tf_centernet.training

    def failing_train(config, **kwargs):  # cmd_train also passes progress=
        raise error

    monkeypatch.setattr(tf_centernet.training, "train", failing_train)
    assert cli.main(["train", "--config", "demo", "--model-dir", str(tmp_path)]) == code
    assert "Traceback" not in capfd.readouterr().err
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is None  # one line, no traceback
    assert (str(error) or "Interrupted") in errors[0].getMessage()


def test_cli_missing_model_dir_says_what_is_missing(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(SystemExit, match="no such directory"):
        cli.main(["evaluate", "--model-dir", missing])
    with pytest.raises(SystemExit, match="has no config.yaml"):
        cli.main(["export", "--model-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="give --config"):
        cli.main(["detect", "image.jpg"])
