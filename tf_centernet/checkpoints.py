"""Checkpoint files of a model directory: atomic writes, integrity, fallback (storage only).

A checkpoint is ``MODEL_DIR/checkpoints/ckpt-STEP.weights.h5`` (Keras
weights file: model and, when compiled, optimizer variables). Its SHA-256 is
listed in the manifest ``MODEL_DIR/checkpoints.sha256``, in ``sha256sum``
format (``cd MODEL_DIR && sha256sum -c checkpoints.sha256`` checks by hand).

Writing (`save_checkpoint`): refuse non-finite variables; write
``checkpoints/.partial-ckpt-STEP.weights.h5``, flush and fsync it, rename it
to its final name, fsync the folder, then rewrite the manifest the same way
(temporary file, fsync, rename). A process killed at any point leaves the
previous state, a ``.partial-*`` file (removed by `cleanup_partials` when the
next training starts), or a complete checkpoint not yet in the manifest
(checked as an unlisted file, below). A save that fails for lack of space
or permission (`CheckpointWriteError`) removes its partial file first, and
`CheckpointCallback` then stops training with one message: the steps lost
since the newest intact checkpoint (which stays) and where to make room.

Reading (`validate_checkpoint`, `load_checkpoint`): a listed checkpoint must
match its SHA-256 (a truncated, zero-byte or bit-flipped file fails); an
unlisted one (written before manifests existed, killed between rename and
manifest, or a file outside a model directory) must open with h5py and read
back completely. Loading a model directory falls back from an unusable
newest checkpoint to the newest usable one, with a logged warning; a named
file that is unusable is a `CheckpointError`. Raw h5py errors never escape.
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import re

import numpy as np

from tf_centernet.data.paths import display_path
from tf_centernet.filesystem import (
    PARTIAL_PREFIX,
    atomic_write_text,
    discard_partial,
    free_bytes,
    fsync_dir,
    fsync_file,
    os_error_of,
    partial_name,
)
from tf_centernet.model_dir import ModelDirectory

logger = logging.getLogger("tf_centernet")



class CheckpointError(ValueError):
    """A checkpoint is unusable (corrupt, truncated, non-finite or mismatched)."""


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written: disk full, read-only or no permission.

    Nothing partial is left. Attributes: ``step`` (int), ``errno`` (int or
    None), ``folder`` (the checkpoint folder), ``written`` (True when the
    checkpoint file itself is complete and only the manifest failed).
    ``exit_code`` is 2, the CLI's status for a problem the user fixes.
    """

    exit_code = 2

    def __init__(self, message, step, errno=None, folder=None, written=False):
        super().__init__(message)
        self.step = int(step)
        self.errno = errno
        self.folder = folder
        self.written = written


def checkpoint_path(model_dir, step):
    """The checkpoint file of `step`: MODEL_DIR/checkpoints/ckpt-STEP.weights.h5 (`ModelDirectory.checkpoint`)."""
    return ModelDirectory(model_dir).checkpoint(step)


def list_checkpoints(model_dir):
    """(step, path) of every checkpoint file in `model_dir`, oldest first.

    Lists by name only (partial files excluded); see `validate_checkpoint`
    for whether a file is usable.
    """
    folder = ModelDirectory(model_dir).checkpoints
    found = []
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            step = ModelDirectory.checkpoint_step(name)
            if step is not None:
                found.append((step, os.path.join(folder, name)))
    return sorted(found)


def latest_checkpoint(model_dir, validate=True):
    """Path of the newest checkpoint of `model_dir`, or None.

    Args:
        model_dir: str.
        validate: bool. True: the newest one that passes
            `validate_checkpoint` (each newer, unusable one is logged as a
            warning); False: the newest file by name.
    """
    for _, path in reversed(list_checkpoints(model_dir)):
        if not validate:
            return path
        reason = validate_checkpoint(path)
        if reason is None:
            return path
        logger.warning("Skipping checkpoint %s: %s", path, reason)
    return None


# ---------------------------------------------------------------- integrity


def _sha256(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(model_dir):
    """{relative path: sha256 hex} of ``MODEL_DIR/checkpoints.sha256`` ({} when absent).

    A malformed line is logged and ignored (its file then counts as unlisted).
    """
    entries = {}
    path = ModelDirectory(model_dir).manifest
    if not os.path.isfile(path):
        return entries
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            match = re.fullmatch(r"([0-9a-fA-F]{64}) [ *](\S.*)", line.rstrip("\n"))
            if match:
                entries[match.group(2)] = match.group(1).lower()
            elif line.strip():
                logger.warning("%s line %d is not 'SHA256  FILE'; ignored.", path, number)
    return entries


def _update_manifest(model_dir, changes=None):
    """Rewrites the manifest atomically: `changes` ({rel: hex or None}) applied, missing files dropped."""
    entries = read_manifest(model_dir)
    entries.update(changes or {})
    lines = [
        f"{digest}  {rel}\n"
        for rel, digest in sorted(entries.items())
        if digest and os.path.isfile(os.path.join(model_dir, rel))
    ]
    atomic_write_text(ModelDirectory(model_dir).manifest, "".join(lines))


def _rel(path):
    return os.path.join(ModelDirectory.CHECKPOINTS, os.path.basename(path))


def _expected_digest(path):
    """The manifest's SHA-256 of `path`, or None when it is not listed."""
    return read_manifest(os.path.dirname(os.path.dirname(os.path.abspath(path)))).get(_rel(path))  # folder's parent


def _h5_readable(path):
    """None when h5py opens `path` and reads every dataset back, else the reason."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            datasets = []
            f.visititems(lambda name, obj: datasets.append(obj) if isinstance(obj, h5py.Dataset) else None)
            if not datasets:
                return "no weights in the file"
            for dataset in datasets:
                dataset[()]
    except Exception as error:  # h5py raises OSError, KeyError, RuntimeError, ...
        return f"unreadable HDF5 file ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
    return None


def validate_checkpoint(path):
    """Whether a checkpoint file is intact.

    Returns:
        None when usable, else a one-line reason (missing, zero bytes,
        SHA-256 mismatch with the manifest, unreadable HDF5).
    """
    if not os.path.isfile(path):
        return "no such file"
    if os.path.getsize(path) == 0:
        return "zero-byte file"
    expected = _expected_digest(path)
    if expected is not None:
        if _sha256(path) != expected:
            return "SHA-256 mismatch (truncated or corrupted)"
        return None
    return _h5_readable(path)


# ------------------------------------------------------------------ writing


def nonfinite_variables(variables):
    """Paths (or names) of the floating-point variables holding a NaN or Inf."""
    bad = []
    for variable in variables:
        value = np.asarray(variable.numpy() if hasattr(variable, "numpy") else variable)
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            bad.append(getattr(variable, "path", None) or getattr(variable, "name", "?"))
    return bad


def write_weights(model, path):
    """Writes Keras' weights file of `model` (what ``model.save_weights`` writes) to `path`.

    The HDF5 file is built in memory and reaches the disk through plain
    Python writes: HDF5 does not recover from a write that fails half-way
    (a full disk can crash the process when it closes the file), while a
    failed Python write is an ordinary `OSError` and leaves nothing open.
    Costs the file's size in memory for the moment of the save.

    Raises:
        OSError: the file system refused the write.
    """
    from keras.src.saving import saving_lib  # Keras' own weights-file writer; it has no public in-memory entry

    buffer = io.BytesIO()
    store = saving_lib.H5IOStore(buffer, mode="w")
    try:
        saving_lib._save_state(model, weights_store=store, assets_store=None, inner_path="", visited_saveables=set())
    finally:
        store.close()
    with open(path, "wb") as f:
        f.write(buffer.getbuffer())


def save_checkpoint(model, model_dir, step, keep):
    """Writes model + optimizer state atomically, with a checksum, then prunes.

    Keras' weights file holds the optimizer's variables (moments and step
    count) when the model is compiled, so a resumed run continues exactly.

    Args:
        model: a built `keras.Model`.
        model_dir: str.
        step: int. Optimizer step, in the file name.
        keep: int. Number of newest checkpoints kept (at least 1); the one
            just written is never pruned.

    Returns:
        The checkpoint's path.

    Raises:
        CheckpointError: a model or optimizer variable is NaN or Inf
            (nothing is written).
        CheckpointWriteError: the file system refused (disk full, checked
            against `checkpoint_bytes` before writing; read-only; no
            permission): the partial file is removed, earlier checkpoints
            and the manifest are as they were. ``written`` is True when
            only the manifest could not be updated (the checkpoint is
            complete, and checked by reading it when unlisted).
    """
    variables = list(model.weights)
    if getattr(model, "optimizer", None) is not None:
        variables += list(model.optimizer.variables)
    bad = nonfinite_variables(variables)
    if bad:
        raise CheckpointError(
            f"Not saving checkpoint of step {int(step)}: {len(bad)} variable(s) hold NaN/Inf "
            f"(first: {bad[0]}); the last finite checkpoint is kept."
        )
    path = checkpoint_path(model_dir, step)
    folder = os.path.dirname(path)
    partial = partial_name(path)
    try:
        os.makedirs(folder, exist_ok=True)
        # Refuse before any work when the file cannot fit (a clearer
        # message, with sizes, than the write's own failure).
        need, free = checkpoint_bytes(model), free_bytes(folder)
        if free is not None and free < need:
            raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} ({free / 2**20:.1f} MiB free, the "
                                        f"checkpoint needs up to {need / 2**20:.1f} MiB)", folder)
        write_weights(model, partial)
        fsync_file(partial)
        digest = _sha256(partial)
        if _expected_digest(path) is not None:  # an older save of this step
            _update_manifest(model_dir, {_rel(path): None})
        os.replace(partial, path)
        fsync_dir(folder)
    except Exception as error:  # OSError, or Keras / h5py wrapping one
        cause = os_error_of(error)
        if cause is None:
            raise
        discard_partial(partial)
        discard_partial(partial_name(ModelDirectory(model_dir).manifest))
        if cause.errno:  # the system's reason, or ours with sizes
            ours = str(cause.strerror or "").startswith(os.strerror(cause.errno))
            reason = cause.strerror if ours else os.strerror(cause.errno)
        else:
            reason = str(cause).splitlines()[0]
        raise CheckpointWriteError(
            f"Cannot write checkpoint of step {int(step)} in {display_path(folder)}: {reason}",
            step, cause.errno, folder,
        ) from None
    try:
        _update_manifest(model_dir, {_rel(path): digest})
    except OSError as error:  # the checkpoint is complete; an unlisted file is validated by reading it
        manifest = ModelDirectory(model_dir).manifest
        discard_partial(partial_name(manifest))
        manifest = display_path(manifest)
        raise CheckpointWriteError(
            f"Wrote checkpoint {display_path(path)} but cannot update {manifest}: "
            f"{os.strerror(error.errno) if error.errno else error}",
            step, error.errno, folder, written=True,
        ) from None
    prune_checkpoints(model_dir, keep, protect=path)
    return path


def checkpoint_bytes(model):
    """An upper estimate of the size of one checkpoint of `model`, in bytes.

    The model's and its optimizer's variables, plus HDF5's metadata (about
    1 KiB per variable, counted as 2 KiB) and 64 KiB.
    """
    variables = list(model.weights)
    if getattr(model, "optimizer", None) is not None:
        variables += list(model.optimizer.variables)
    total = 64 * 1024
    for variable in variables:
        dtype = getattr(variable, "dtype", "float32")
        try:
            itemsize = np.dtype(getattr(dtype, "as_numpy_dtype", dtype)).itemsize
        except TypeError:
            itemsize = 4
        total += int(np.prod([int(d) for d in variable.shape], dtype=np.int64)) * itemsize + 2048
    return total


def prune_checkpoints(model_dir, keep, protect=None):
    """Deletes all but the `keep` newest checkpoints, never `protect`.

    `protect` is the newest checkpoint known to be finite and intact (the
    one just written), so rotation never leaves only unusable files.
    """
    removed = False
    for _, old in list_checkpoints(model_dir)[: -max(1, int(keep))]:
        if protect is None or os.path.abspath(old) != os.path.abspath(protect):
            os.remove(old)
            removed = True
    if removed:
        _update_manifest(model_dir)


def cleanup_partials(model_dir):
    """Removes leftovers of killed saves: ``.partial-*`` files of the model directory.

    Only safe while no other process writes to `model_dir` (the training
    lock is held).

    Returns:
        The removed paths.
    """
    removed = []
    for folder in (model_dir, ModelDirectory(model_dir).checkpoints):
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if name.startswith(PARTIAL_PREFIX) and os.path.isfile(path):
                os.remove(path)
                removed.append(path)
                logger.warning("Removed leftover of an interrupted save: %s", path)
    return removed


# ------------------------------------------------------------------ loading


def _load(model, path):
    try:
        model.load_weights(path)
    except Exception as error:  # h5py/Keras raise OSError, ValueError, KeyError, ...
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"Cannot load checkpoint {path}: {first} (was it written by a model with another configuration?)"
        ) from None


def load_checkpoint(model, source):
    """Loads the newest usable checkpoint of `source` into a built model.

    Args:
        model: a built `keras.Model` (compiled, with a built optimizer, to
            restore the optimizer state too).
        source: str. A model directory (the newest usable checkpoint of
            ``source/checkpoints``; each newer, unusable one is skipped with
            a logged warning) or one ``.weights.h5`` file (no fallback).

    Returns:
        The loaded checkpoint's path, or None when `source` is a folder
        without any checkpoint.

    Raises:
        CheckpointError: the named file, or every checkpoint of the folder,
            is unusable; or a file with a valid checksum does not fit the
            model (another configuration).
        FileNotFoundError: `source` is neither a folder nor a file.
    """
    if os.path.isfile(source):
        reason = validate_checkpoint(source)
        if reason:
            raise CheckpointError(f"Checkpoint {source} is unusable: {reason}.")
        _load(model, source)
        return source
    if not os.path.isdir(source):
        raise FileNotFoundError(f"No model directory or checkpoint file at {source!r}.")
    candidates = list(reversed(list_checkpoints(source)))
    reasons = []
    for _, path in candidates:
        reason = validate_checkpoint(path)
        if reason is None:
            verified = _expected_digest(path) is not None
            try:
                _load(model, path)
            except CheckpointError as error:
                if verified:  # intact file: the configuration differs
                    raise
                reason = str(error)
        if reason is None:
            if reasons:
                logger.warning(
                    "Fell back to checkpoint %s: %d newer checkpoint(s) unusable (%s).",
                    path, len(reasons), "; ".join(reasons),
                )
            return path
        logger.warning("Checkpoint %s is unusable: %s", path, reason)
        reasons.append(f"{os.path.basename(path)}: {reason}")
    if candidates:
        raise CheckpointError(
            f"None of the {len(candidates)} checkpoint(s) in {ModelDirectory(source).checkpoints} "
            f"is usable ({'; '.join(reasons)}). Move them away to start training from scratch."
        )
    return None
