"""Operating-system errors in one line, and output folders checked before long work.

* `os_error_line` words any `OSError` (read-only, no permission, disk
  full, name too long) as one line naming the file and what to do;
  `os_error_of` finds the `OSError` behind a wrapped error and
  `errno_of_text` the errno a message names (h5py words them as text).
* `atomic_write_text` writes a file whole or not at all (``.partial-NAME``,
  fsync, rename, fsync of the folder).
* `check_writable` checks that an output folder takes new files before
  long work starts (`NotWritableError`, exit status 2).

Errors carry `exit_code`, the `tf-centernet` exit status (see `tf_centernet.cli`).
"""

from __future__ import annotations

import contextlib
import errno
import os

from tf_centernet.data.paths import display_path

__all__ = [
    "NotWritableError", "atomic_write_text", "check_writable", "discard_partial", "errno_of_text", "free_bytes",
    "fsync_dir", "fsync_file", "os_error_line", "os_error_of", "partial_name",
]

PARTIAL_PREFIX = ".partial-"


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


# ------------------------------------------------------------ atomic writes


def free_bytes(folder):
    """Bytes free for an unprivileged writer on `folder`'s file system, or None."""
    try:
        stat = os.statvfs(folder)
    except (OSError, AttributeError):
        return None
    return stat.f_bavail * stat.f_frsize


def fsync_dir(folder):
    """fsync a folder so a rename in it survives a power loss (no-op where unsupported)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path):
    """Flushes a written file to the disk."""
    with open(path, "rb+") as f:
        f.flush()
        os.fsync(f.fileno())


def partial_name(path):
    """The temporary name `path` is written under before its rename: ``.partial-NAME`` beside it."""
    return os.path.join(os.path.dirname(path), PARTIAL_PREFIX + os.path.basename(path))


def atomic_write_text(path, text):
    """Writes `text` to `path` via a temporary file, fsync and rename."""
    folder = os.path.dirname(os.path.abspath(path))
    partial = partial_name(os.path.abspath(path))
    with open(partial, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)
    fsync_dir(folder)


def discard_partial(path):
    """Removes a file a failed save left (missing files are ignored).

    The file is truncated first: HDF5 may still hold it open after a failed
    write, and on a full disk only the truncation frees its space.
    """
    with contextlib.suppress(OSError):
        os.truncate(path, 0)
    with contextlib.suppress(OSError):
        os.remove(path)
