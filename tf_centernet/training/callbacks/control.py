"""Callbacks that control a run: the step limit, non-finite steps, Ctrl-C / SIGTERM.

* `StopAtStep` ends `fit` once the optimizer has made ``train.total_steps``
  steps (skipped steps do not count).
* `NonFiniteGuard` notices a step the optimizer skipped
  (`tf_centernet.training.optimizer.NonFiniteGuardOptimizer`) or whose loss
  is NaN / Inf and, per ``train.on_nonfinite``, stops training (``stop``,
  the default) or counts and logs the skip (``skip``, stopping after
  ``train.max_consecutive_nonfinite`` consecutive ones). Once it stops, no
  checkpoint is written any more, so the newest checkpoint is the last
  finite one.
* `InterruptGuard` turns SIGINT / SIGTERM into "finish the current step,
  save a checkpoint, stop"; a second signal stops at once.

Errors carry `exit_code`, the `tf-centernet` exit status (see `tf_centernet.cli`).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading

import keras
import numpy as np

from tf_centernet.config import check_choice

logger = logging.getLogger("tf_centernet")

__all__ = ["InterruptGuard", "NonFiniteGuard", "NonFiniteLossError", "StopAtStep", "TrainingInterrupted"]


class NonFiniteLossError(RuntimeError):
    """Training stopped on a NaN / Inf loss or gradient."""

    exit_code = 1


class TrainingInterrupted(RuntimeError):
    """Training stopped on SIGINT (exit 130) or SIGTERM (exit 143)."""

    def __init__(self, message, signum):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + int(signum)


class StopAtStep(keras.callbacks.Callback):
    """Ends `fit` once the optimizer has made `total_steps` steps."""

    def __init__(self, total_steps):
        super().__init__()
        self.total_steps = int(total_steps)

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) >= self.total_steps:
            self.model.stop_training = True


def _format_terms(logs):
    return ", ".join(f"{k}={v:.4g}" for k, v in logs.items())


class NonFiniteGuard(keras.callbacks.Callback):
    """Stops or skips on a non-finite step (see the module docstring).

    Args:
        policy: "stop" or "skip".
        max_consecutive: int. With "skip": stop after this many
            consecutive non-finite steps.
        checkpoints: `CheckpointCallback` or None; blocked when the guard
            stops training.

    After `fit`, `error` is the `NonFiniteLossError` to raise (None when
    training was not stopped) and `skipped` the number of skipped steps.
    A step counts as non-finite when a loss term in the batch logs is NaN /
    Inf, or (without loss scaling) when the optimizer did not advance. The
    With "skip", the non-trainable variables (BatchNorm moving statistics,
    updated by the forward pass) are copied to the host before each step
    and restored after a skipped one. The
    batch logs are running means, so after a skip the means restart
    (`reset_metrics`): an epoch's logged losses then cover the steps after
    its last skip.
    """

    def __init__(self, policy="stop", max_consecutive=10, checkpoints=None):
        super().__init__()
        check_choice("train.on_nonfinite", policy)
        self.policy = policy
        self.max_consecutive = max(1, int(max_consecutive))
        self.checkpoints = checkpoints
        self.skipped = 0
        self.consecutive = 0
        self.error = None
        self._before = None
        self._state = None

    def _iterations(self):
        return int(self.model.optimizer.iterations.numpy())

    def on_train_batch_begin(self, batch, logs=None):
        self._before = self._iterations()
        if self.policy == "skip":  # BatchNorm statistics change in the forward pass: keep a copy (small)
            self._state = [np.array(v.numpy()) for v in self.model.non_trainable_weights]

    def on_train_batch_end(self, batch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items() if _is_number(v)}
        bad = {k: v for k, v in logs.items() if not math.isfinite(v)}
        scaled = isinstance(self.model.optimizer, keras.optimizers.LossScaleOptimizer)
        stalled = not scaled and self._before is not None and self._iterations() == self._before
        if not bad and not stalled:
            self.consecutive = 0
            return
        step = (self._before or 0) + 1
        for variable, value in zip(self.model.non_trainable_weights, self._state or []):
            variable.assign(value)  # undo the skipped step's moving statistics
        self.skipped += 1
        self.consecutive += 1
        what = f"non-finite loss ({_format_terms(bad)})" if bad else "non-finite gradients (loss terms finite)"
        last = self.checkpoints.last_saved if self.checkpoints is not None else None
        if last is not None and os.path.isfile(self.checkpoints.path_of(last)):
            where = f"the last checkpoint is of step {last}"
        else:
            where = "no checkpoint of this run was written"
        if self.policy == "stop" or self.consecutive >= self.max_consecutive:
            if self.policy == "stop":
                reason = f"Training stopped at step {step}: {what} (train.on_nonfinite=stop)"
            else:
                reason = (
                    f"Training stopped at step {step}: {self.consecutive} consecutive non-finite steps, "
                    f"last: {what} (train.max_consecutive_nonfinite={self.max_consecutive})"
                )
            self.error = NonFiniteLossError(
                f"{reason}; {where}. Lower train.learning_rate or check the data"
                + (", or set train.on_nonfinite=skip." if self.policy == "stop" else ".")
            )
            if self.checkpoints is not None:
                self.checkpoints.block(reason)
            self.model.stop_training = True
            return
        logger.warning(
            "Skipped step %d: %s; %d consecutive, %d skipped in this run (train.on_nonfinite=skip).",
            step, what, self.consecutive, self.skipped,
        )
        self.model.reset_metrics()


def _is_number(value):
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


class InterruptGuard(keras.callbacks.Callback):
    """SIGINT / SIGTERM: finish the current step, save, stop `fit`.

    Use as a context manager around the whole training (installs the
    handlers in the main thread only, restores the previous ones on exit)
    and as a callback of `fit`. Outside `fit` (or on a second signal) the
    handler raises `TrainingInterrupted` at once.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        super().__init__()
        self.signum = None
        self.in_fit = False
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}
        return False

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if self.signum is not None or not self.in_fit:
            self.signum = self.signum or signum
            raise TrainingInterrupted(f"Interrupted by {name}; stopped without saving.", signum)
        self.signum = signum
        logger.warning("%s: finishing the current step, then saving a checkpoint (again to stop at once).", name)

    def on_train_begin(self, logs=None):
        self.in_fit = True

    def on_train_end(self, logs=None):
        self.in_fit = False

    def on_train_batch_end(self, batch, logs=None):
        if self.signum is not None:
            self.model.stop_training = True

    def error(self, step, saved_path):
        """The `TrainingInterrupted` to raise after `fit` stopped on a signal."""
        name = signal.Signals(self.signum).name
        saved = f"checkpoint {saved_path}" if saved_path else "no step finished since the last checkpoint"
        return TrainingInterrupted(
            f"Interrupted by {name} at step {step}; {saved}. Run the same command to resume.", self.signum
        )
