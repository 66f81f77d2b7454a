"""A model directory: every path in it, and its training lock.

One `ModelDirectory` names every file and folder a model directory holds;
nothing else in the package spells them::

    MODEL_DIR/
      config.yaml          the configuration trained with (``config_yaml``)
      classes.json         class index -> category id and name (``classes_json``)
      checkpoints/         ckpt-STEP.weights.h5 (``checkpoints``, `checkpoint`)
      checkpoints.sha256   their SHA-256 manifest (``manifest``)
      logs/                TensorBoard: the train run (``logs``),
        validation/        evaluation scalars (``validation_logs``),
        images/            pictures (``image_logs``)
      metrics.jsonl        one JSON line per evaluation (``metrics``)
      best/                the best checkpoint by AP, as a model directory of
                           its own (``best``) with best.json (``best_record``)
      eval/                ``tf-centernet evaluate``'s output (``eval``)
      export/              ``tf-centernet export``'s output (``export``)
      .train.lock          the training lock (``lock_file``, `lock`)

`ModelDirLock` holds an exclusive ``fcntl.flock`` on the lock file; the
kernel drops it when its process dies, so a lock left by a dead process is
taken over (with a log line naming it). `check_model_dir` checks a
``--model-dir`` in one line (`CommandLineError`, exit status 2).
"""

from __future__ import annotations

import datetime
import errno
import logging
import os
import re
import socket

from tf_centernet.data.paths import display_path
from tf_centernet.filesystem import check_writable

logger = logging.getLogger("tf_centernet")

__all__ = ["CommandLineError", "ModelDirLock", "ModelDirLocked", "ModelDirectory", "check_model_dir"]


class ModelDirectory:
    """The paths of one model directory (nothing is created by naming them).

    Args:
        path: str or path-like. The model directory (``train.model_dir``,
            ``--model-dir``); need not exist.

    Every attribute is a str path below `path`; `checkpoint` gives one
    checkpoint file, `lock` the training lock.

    Example:

    >>> d = ModelDirectory("runs/m")
    >>> d.checkpoint(40), d.validation_logs
    ('runs/m/checkpoints/ckpt-40.weights.h5', 'runs/m/logs/validation')
    """

    CHECKPOINTS = "checkpoints"
    MANIFEST = "checkpoints.sha256"
    LOCK_FILE = ".train.lock"

    def __init__(self, path):
        self.path = os.fspath(path)

    def __repr__(self):
        return f"ModelDirectory({self.path!r})"

    def __fspath__(self):
        return self.path

    def _join(self, *names):
        return os.path.join(self.path, *names)

    @property
    def config_yaml(self):
        """``config.yaml``: the configuration of the run (`tf_centernet.config.to_yaml`)."""
        return self._join("config.yaml")

    @property
    def classes_json(self):
        """``classes.json``: class index -> category id and name."""
        return self._join("classes.json")

    @property
    def checkpoints(self):
        """``checkpoints/``: the checkpoint folder."""
        return self._join(self.CHECKPOINTS)

    def checkpoint(self, step):
        """The checkpoint file of optimizer step `step` (int): ``checkpoints/ckpt-STEP.weights.h5``."""
        return self._join(self.CHECKPOINTS, f"ckpt-{int(step)}.weights.h5")

    @staticmethod
    def checkpoint_step(path):
        """The optimizer step (int) a checkpoint file is named for (``.../ckpt-40.weights.h5`` -> 40), or None."""
        match = re.fullmatch(r"ckpt-(\d+)\.weights\.h5", os.path.basename(path))
        return int(match.group(1)) if match else None

    @property
    def manifest(self):
        """``checkpoints.sha256``: SHA-256 of each checkpoint (``sha256sum`` format)."""
        return self._join(self.MANIFEST)

    @property
    def logs(self):
        """``logs/``: TensorBoard's train run (Keras' `TensorBoard` callback)."""
        return self._join("logs")

    @property
    def validation_logs(self):
        """``logs/validation``: evaluation scalars (Keras' run name for validation)."""
        return self._join("logs", "validation")

    @property
    def image_logs(self):
        """``logs/images``: TensorBoard pictures."""
        return self._join("logs", "images")

    @property
    def metrics(self):
        """``metrics.jsonl``: one JSON line per evaluation during training."""
        return self._join("metrics.jsonl")

    @property
    def best(self):
        """`ModelDirectory` of ``best/``: the best checkpoint by AP."""
        return ModelDirectory(self._join("best"))

    @property
    def best_record(self):
        """``best.json``: the metrics of the checkpoint of this (``best/``) directory."""
        return self._join("best.json")

    @property
    def eval(self):
        """``eval/``: what ``tf-centernet evaluate`` writes by default."""
        return self._join("eval")

    @property
    def export(self):
        """``export/``: where ``tf-centernet export`` writes by default."""
        return self._join("export")

    @property
    def lock_file(self):
        """``.train.lock``: the file `lock` locks."""
        return self._join(self.LOCK_FILE)

    def lock(self):
        """A `ModelDirLock` of this directory (enter it to hold the lock)."""
        return ModelDirLock(self.path)

    def remove_if_unused(self):
        """Removes this directory when it holds nothing but the lock file and an empty ``checkpoints/``.

        A run that failed before writing anything (bad checkpoint,
        init_from, data) then leaves no trace; anything else in the folder
        keeps it. Errors (someone else using it) are ignored.
        """
        try:
            names = set(os.listdir(self.path))
            if names - {self.LOCK_FILE, self.CHECKPOINTS}:
                return
            if self.CHECKPOINTS in names:
                if os.listdir(self.checkpoints):
                    return
                os.rmdir(self.checkpoints)
            if self.LOCK_FILE in names:
                os.remove(self.lock_file)
            os.rmdir(self.path)
        except OSError:
            pass


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
        self.model_dir = os.fspath(model_dir)
        self.path = ModelDirectory(model_dir).lock_file
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
