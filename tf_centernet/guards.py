"""Guards of a training run: non-finite losses, Ctrl-C / SIGTERM, one writer per model directory.

* `GuardedAdam` never applies a step whose loss or gradients hold a NaN or
  Inf: weights, moments and the step count stay as they were (the check is
  agreed across replicas under `tf.distribute`).
* `NonFiniteGuard` (a Keras callback) notices such a step and, per
  ``train.on_nonfinite``, stops training (``stop``, the default) or counts
  and logs the skip (``skip``, stopping after
  ``train.max_consecutive_nonfinite`` consecutive ones). Once it stops, no
  checkpoint is written any more, so the newest checkpoint is the last
  finite one.
* `InterruptGuard` turns SIGINT / SIGTERM into "finish the current step,
  save a checkpoint, stop"; a second signal stops at once.
* `ModelDirLock` holds an exclusive ``fcntl.flock`` on ``MODEL_DIR/.train.lock``;
  the kernel drops it when its process dies, so a lock left by a dead
  process is taken over (with a log line naming it).
* `check_writable` checks an output folder before long work,
  `check_model_dir` a ``--model-dir`` (`CommandLineError`, status 2), and
  `os_error_line` words any `OSError` (read-only, no permission, disk
  full, name too long) as one line naming the file and what to do.

Errors carry `exit_code`, the `tf-centernet` exit status (see cli.py).
"""

from __future__ import annotations

import datetime
import errno
import logging
import math
import os
import signal
import socket
import threading

import keras
import numpy as np
import tensorflow as tf

from tf_centernet.checkpoints import checkpoint_path
from tf_centernet.config import CHOICES, check_choice
from tf_centernet.data.paths import display_path, printable  # noqa: F401  (re-exported)

logger = logging.getLogger("tf_centernet")

NONFINITE_POLICIES = CHOICES["train.on_nonfinite"]


class NonFiniteLossError(RuntimeError):
    """Training stopped on a NaN / Inf loss or gradient."""

    exit_code = 1


class TrainingInterrupted(RuntimeError):
    """Training stopped on SIGINT (exit 130) or SIGTERM (exit 143)."""

    def __init__(self, message, signum):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + int(signum)


class ModelDirLocked(RuntimeError):
    """Another live process is training into the same model directory."""

    exit_code = 2


class CommandLineError(SystemExit):
    """A bad command line (missing or unusable --model-dir, no --config): exit status 2.

    A `SystemExit`, as argparse's own usage errors: `tf_centernet.cli.main`
    logs ``log_line`` (the message, one line) and lets it end the program
    with status ``code`` = 2; ``str(error)`` is the message too.
    """

    def __init__(self, message):
        super().__init__(message)
        self.code = 2
        self.log_line = message


class NotWritableError(OSError):
    """An output folder that cannot take new files; `str()` is one line saying what to do."""

    exit_code = 2

    def __str__(self):
        return self.args[-1] if self.args else super().__str__()


# ------------------------------------------------------------ file system

# errno -> what the user can do about it.
_ADVICE = {
    errno.ENOSPC: "free space on that file system or choose a folder on another one",
    errno.EDQUOT: "free space within your disk quota or choose a folder elsewhere",
    errno.EROFS: "the file system is mounted read-only: choose a folder on a writable one",
    errno.EACCES: "fix its permissions (e.g. chmod u+w) or choose another folder",
    errno.EPERM: "fix its permissions (e.g. chmod u+w) or choose another folder",
    errno.ENAMETOOLONG: "use a shorter name (a file or folder name holds at most 255 bytes)",
    errno.ENOTDIR: "a file stands where a folder is expected: rename or remove it",
    errno.EEXIST: "something of that name already exists: remove it or choose another name",
}
# The same errors as h5py / HDF5 word them (their OSError may lack `errno`).
_REASONS = {
    "No space left on device": errno.ENOSPC,
    "Disk quota exceeded": errno.EDQUOT,
    "Read-only file system": errno.EROFS,
    "Permission denied": errno.EACCES,
    "Operation not permitted": errno.EPERM,
    "File name too long": errno.ENAMETOOLONG,
}


def errno_of_text(text):
    """The errno a system error message names ("No space left on device" -> ENOSPC), or None."""
    for words, number in _REASONS.items():
        if words in str(text):
            return number
    return None


def os_error_of(error):
    """The `OSError` behind `error` (itself, its cause or context), with `errno` set where known, or None.

    h5py / HDF5 raise `OSError` whose errno is sometimes only in the text
    (``errno = 28, error message = 'No space left on device'``); that
    number is restored here.
    """
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError):
            if error.errno is None:
                error.errno = errno_of_text(error)
            return error
        error = error.__cause__ or error.__context__
    return None


def os_error_line(error, what=None) -> str:
    """One line for an `OSError`: what failed, the file, the system's reason and what to do.

    Args:
        error: `OSError` (or an exception wrapping one, see `os_error_of`).
        what: str or None. What was being done, e.g. "Cannot write checkpoint
            of step 40"; default "Cannot access".

    Returns:
        str, one line, without a traceback.
    """
    cause = os_error_of(error) or error
    number = getattr(cause, "errno", None)
    reason = os.strerror(number) if number else (str(cause).splitlines()[0] if str(cause) else type(cause).__name__)
    name = getattr(cause, "filename", None)
    where = f" {display_path(name)}" if name else ""
    advice = _ADVICE.get(number)
    text = f"{what or 'Cannot access'}{where}: {reason}"
    return text + (f"; {advice}." if advice else ".")


def _nearest_existing(path):
    """(the nearest folder of `path` that exists, the missing names below it)."""
    path = os.path.abspath(path)
    missing = []
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        missing.append(os.path.basename(path))
        if parent == path:
            break
        path = parent
    return path, list(reversed(missing))


def check_writable(path, what):
    """Checks, without creating anything that stays, that new files can be written in folder `path`.

    For work that writes only at its end (conversions, exports): call it
    first. A missing `path` is fine when its nearest existing parent folder
    is writable and the missing names are not too long for the file system.
    The check writes and removes one small probe file (read-only mounts,
    permissions, a full disk and ACLs all show), so it holds for root too.

    Args:
        path: str. The output folder (created later by the caller).
        what: str. How the user named it in messages, e.g. ``"--output"``.

    Raises:
        NotWritableError (an OSError, ``exit_code`` 2): the folder, or the
            nearest existing one, cannot take a new file; or a name is too
            long; or a file stands where a folder should be. The message
            names `what`, the folder, the reason and what to do.
    """
    import tempfile

    def fail(number, filename, detail=""):
        reason = os.strerror(number) + (f" ({detail})" if detail else "")
        advice = _ADVICE.get(number)
        line = f"{what}: cannot write in {display_path(filename)}: {reason}" + (f"; {advice}." if advice else ".")
        raise NotWritableError(number, line)

    try:
        existing, missing = _nearest_existing(path)
    except OSError as error:  # a component too long to even look up
        fail(error.errno or errno.ENAMETOOLONG, path)
    if not os.path.isdir(existing):
        fail(errno.ENOTDIR, existing)
    try:
        limit = os.statvfs(existing).f_namemax or 255
    except (OSError, AttributeError):
        limit = 255
    for name in missing:
        if len(os.fsencode(name)) > limit:
            fail(errno.ENAMETOOLONG, path, f"{len(os.fsencode(name))} bytes, the limit is {limit}")
    try:
        handle, probe = tempfile.mkstemp(prefix=".write-test-", dir=existing)
    except OSError as error:
        fail(error.errno or errno.EACCES, existing)
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(b"\0")
            f.flush()
            os.fsync(f.fileno())
    except OSError as error:
        fail(error.errno or errno.EIO, existing)
    finally:
        try:
            os.remove(probe)
        except OSError:
            pass


# ------------------------------------------------------------ non-finite


class GuardedAdam(keras.optimizers.Adam):
    """Adam that skips (does not apply) a step with a non-finite loss or gradient.

    A skipped step changes nothing: no weight, no moment, and
    ``iterations`` does not advance. The decision is all-reduced across
    replicas, then each variable's Adam update is kept or undone with a
    `tf.where` (no conditional collective ops). Same variables as
    `keras.optimizers.Adam` (checkpoints are interchangeable). The loss is
    seen through `scale_loss`, which Keras' `train_step` calls before the
    gradients.
    """

    _local = threading.local()  # the loss of this thread's (replica's) step

    def scale_loss(self, loss):
        GuardedAdam._local.loss = loss
        return super().scale_loss(loss)

    def _finite(self, grads):
        checks = [tf.reduce_all(tf.math.is_finite(g)) for g in grads if g is not None]
        loss = getattr(GuardedAdam._local, "loss", None)
        GuardedAdam._local.loss = None
        same_graph = loss is not None and (
            tf.executing_eagerly() or getattr(loss, "graph", None) is tf.compat.v1.get_default_graph()
        )
        if same_graph:
            checks.append(tf.reduce_all(tf.math.is_finite(loss)))
        finite = tf.reduce_all(tf.stack(checks)) if checks else tf.constant(True)
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            bad = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(tf.logical_not(finite), tf.float32))
            finite = tf.equal(bad, 0.0)
        return finite

    def apply(self, grads, trainable_variables=None):
        grads = list(grads)
        finite = self._finite(grads)
        self._step_finite = finite
        try:
            super().apply(grads, trainable_variables)
        finally:
            self._step_finite = None
        self.assign_sub(self._iterations, tf.cast(tf.logical_not(finite), self._iterations.dtype))

    def update_step(self, gradient, variable, learning_rate):
        finite = getattr(self, "_step_finite", None)
        if finite is None:
            return super().update_step(gradient, variable, learning_rate)
        index = self._get_variable_index(variable)
        state = [variable, self._momentums[index], self._velocities[index]]
        if self.amsgrad:
            state.append(self._velocity_hats[index])

        def read(v):
            return tf.identity(v.value if isinstance(v, keras.Variable) else v)

        before = [read(v) for v in state]
        with tf.control_dependencies(before):
            super().update_step(gradient, variable, learning_rate)
        for v, old in zip(state, before):
            self.assign(v, tf.where(finite, read(v), old))


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
        if last is not None and os.path.isfile(checkpoint_path(self.checkpoints.model_dir, last)):
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


# --------------------------------------------------------------- signals


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


# ------------------------------------------------------------------ lock

LOCK_FILE = ".train.lock"


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ModelDirLock:
    """Exclusive lock of a model directory for one training process.

    ``fcntl.flock`` on ``MODEL_DIR/.train.lock`` (released by the kernel when
    the holder dies, also by SIGKILL); the file records the holder's PID,
    host and start time for messages. Where flock is unavailable, the PID
    recorded is checked instead (a dead PID on this host is taken over).
    Network file systems may not honour flock across hosts.

    Raises (on `acquire` / entering):
        ModelDirLocked: a live process holds the lock.
    """

    def __init__(self, model_dir):
        self.model_dir = model_dir
        self.path = os.path.join(model_dir, LOCK_FILE)
        self._file = None

    def _holder(self):
        try:
            with open(self.path, encoding="utf-8") as f:
                fields = dict(line.split("=", 1) for line in f.read().splitlines() if "=" in line)
            return int(fields.get("pid", "")), fields.get("host", ""), fields.get("started", "")
        except (OSError, ValueError):
            return None

    def _refuse(self, holder):
        pid, host, started = holder if holder else ("?", "?", "?")
        raise ModelDirLocked(
            f"Another training (PID {pid} on {host}, started {started}) is writing to {self.model_dir} "
            f"(lock {self.path}). Wait for it to finish or stop it, or train into another --model-dir."
        )

    def acquire(self):
        os.makedirs(self.model_dir, exist_ok=True)
        previous = self._holder()
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            import fcntl
        except ImportError:  # not POSIX: PID check only
            fcntl = None
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    self._refuse(previous)
            elif previous and previous[1] == socket.gethostname() and _pid_alive(previous[0]):
                self._refuse(previous)
        except BaseException:
            handle.close()
            raise
        if previous and previous[0] != os.getpid():
            logger.warning(
                "Took over the stale training lock of PID %d on %s (started %s, no longer running): %s",
                previous[0], previous[1], previous[2], self.path,
            )
        handle.seek(0)
        handle.truncate()
        started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        handle.write(f"pid={os.getpid()}\nhost={socket.gethostname()}\nstarted={started}\n")
        handle.flush()
        self._file = handle
        return self

    def release(self):
        if self._file is None:
            return
        try:
            self._file.seek(0)
            self._file.truncate()  # the file stays: deleting it would race a new locker
            self._file.flush()
        finally:
            self._file.close()  # closing drops the flock
            self._file = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False


def check_model_dir(model_dir, must_exist):
    """Fails early, in one line, on a ``--model-dir`` that cannot be used.

    Args:
        model_dir: str. The folder given.
        must_exist: bool. True (evaluate, detect, export): an existing
            folder. False (train, convert): a folder that exists or can be
            created, and takes new files (`check_writable`).

    Raises:
        CommandLineError (status 2): a name too long for the file system,
            no such folder, or not a folder; the message names --model-dir.
        NotWritableError (an OSError, ``exit_code`` 2): train / convert
            into a folder that cannot be written.
    """
    try:
        os.stat(model_dir)
        exists = True
    except FileNotFoundError:
        exists = False
    except OSError as error:
        if error.errno == errno.ENAMETOOLONG:
            name = os.path.basename(os.path.normpath(model_dir))
            raise CommandLineError(
                f"--model-dir {display_path(model_dir)[:80]}...: name too long for the file system "
                f"({len(os.fsencode(name))} bytes; a folder name holds at most 255): use a shorter one."
            ) from None
        raise CommandLineError(
            f"--model-dir {display_path(model_dir)}: {os.strerror(error.errno or errno.EIO)}."
        ) from None
    if must_exist:
        if not exists:
            raise CommandLineError(
                f"--model-dir {display_path(model_dir)}: no such directory (a trained model's directory)."
            )
        if not os.path.isdir(model_dir):
            raise CommandLineError(
                f"--model-dir {display_path(model_dir)}: not a directory (give a trained model's directory)."
            )
        return
    check_writable(model_dir, "--model-dir")
