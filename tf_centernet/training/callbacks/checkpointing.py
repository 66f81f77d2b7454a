"""Checkpoint callbacks: every ``train.checkpoint_every`` steps and at the end.

`CheckpointCallback` writes through `tf_centernet.checkpoints.save_checkpoint`
(atomic, with a SHA-256 manifest, pruned to ``train.keep_checkpoints``)
into the model directory; a non-chief worker of a multi-worker job uses
`WorkerCheckpointCallback`, which writes into a temporary folder of its
own and deletes it (TensorFlow's multi-worker guidance: every worker takes
part in a save, only the chief's copy is kept).
"""

from __future__ import annotations

import errno
import logging
import os

import keras

from tf_centernet.checkpoints import CheckpointWriteError, latest_checkpoint, save_checkpoint
from tf_centernet.data.paths import display_path
from tf_centernet.model_dir import ModelDirectory
from tf_centernet.training.distribute import remove_worker_dir

logger = logging.getLogger("tf_centernet")

__all__ = ["CheckpointCallback", "WorkerCheckpointCallback"]


class CheckpointCallback(keras.callbacks.Callback):
    """Saves model + optimizer every `every` optimizer steps and at the end.

    Args:
        model_dir: str. Checkpoints go to ``model_dir/checkpoints``.
        every: int. Steps between checkpoints.
        keep: int. Number of newest checkpoints kept.
        last_saved: int or None. Step of the checkpoint training resumed
            from (not written again).

    `block(reason)` stops all further saves (a guard found a non-finite
    loss); `last_path` is the newest checkpoint this callback wrote.

    A save that fails for lack of space or permission
    (`CheckpointWriteError`) stops training at the end of the step; no
    further save is tried, and `error` is then the `CheckpointWriteError`
    to raise after `fit`, its message saying how many steps since the
    newest intact checkpoint are lost and what to do.
    """

    def __init__(self, model_dir, every, keep=3, last_saved=None):
        super().__init__()
        self.model_dir = model_dir
        self.every = max(1, int(every))
        self.keep = keep
        self.last_saved = last_saved
        self.last_path = None
        self.blocked = None
        self.error = None

    def path_of(self, step):
        """The checkpoint file this callback writes for optimizer step `step` (int)."""
        return ModelDirectory(self.model_dir).checkpoint(step)

    def block(self, reason):
        """No checkpoint is written from now on (`reason` is kept for messages)."""
        self.blocked = reason

    def _save(self):
        step = int(self.model.optimizer.iterations.numpy())
        if self.blocked is None and step != self.last_saved:
            try:
                self.last_path = save_checkpoint(self.model, self.model_dir, step, self.keep)
            except CheckpointWriteError as error:
                self._stop(error, step)
                return
            self.last_saved = step

    def _newest_intact(self):
        """(step, path) of the newest checkpoint on disk that validates, or (None, None)."""
        if self.last_saved is not None:
            path = self.path_of(self.last_saved)
            if os.path.isfile(path):
                return self.last_saved, path
        path = latest_checkpoint(self.model_dir)
        if path is None:
            return None, None
        return ModelDirectory.checkpoint_step(path), path

    def _stop(self, error, step):
        """Stops training after a failed save; builds `error`'s one-line message."""
        self.block(str(error))
        if self.model is not None:
            self.model.stop_training = True
        if error.written:
            lost = "no step is lost (the checkpoint file is complete; it is checked by reading it back)"
        else:
            last, path = self._newest_intact()
            if last is None:
                lost = f"the {step} step(s) of this run are lost (no checkpoint was written yet)"
            else:
                lost = (f"the {step - last} step(s) since the last checkpoint (step {last}, "
                        f"{display_path(path)}) are lost")
        folder = display_path(error.folder or ModelDirectory(self.model_dir).checkpoints)
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            todo = f"free space on the file system of {folder} or train into another --model-dir"
        elif error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            todo = (f"make {folder} writable (fix its permissions, or remount it read-write) "
                    "or train into another --model-dir")
        else:
            todo = f"fix the problem with {folder}"
        self.error = CheckpointWriteError(
            f"{error}. Training stopped at step {step}; {lost}. To go on, {todo}, then run the same command "
            "to resume.",
            error.step, error.errno, error.folder, error.written,
        )
        logger.debug("Checkpoint write failed: %s", self.error)

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) % self.every == 0:
            self._save()

    def on_train_end(self, logs=None):
        self._save()


class WorkerCheckpointCallback(CheckpointCallback):
    """`CheckpointCallback` of a non-chief worker: saves into its own
    temporary folder, then deletes it (TensorFlow's multi-worker guidance:
    every worker takes part in a save, only the chief's copy is kept).

    Args:
        write_dir: str. The worker's temporary folder (`worker_write_dir`).
        model_dir: str. The shared model directory (never deleted).
        every, keep: as `CheckpointCallback`.
    """

    def __init__(self, write_dir, model_dir, every, keep=1, last_saved=None):
        super().__init__(write_dir, every, keep, last_saved)
        self.shared_dir = model_dir

    def _save(self):
        try:
            super()._save()
        finally:
            remove_worker_dir(self.model_dir, self.shared_dir)

    def on_train_end(self, logs=None):
        try:
            super().on_train_end(logs)
        finally:  # also when no save happened
            remove_worker_dir(self.model_dir, self.shared_dir)
