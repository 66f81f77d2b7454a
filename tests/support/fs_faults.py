"""File-system faults for the reliability tests: small, full or read-only folders.

`small_filesystem` mounts a tmpfs of a given size where the tests run as
root and may mount (as CI containers usually allow); elsewhere it yields
None and the tests fall back to a monkeypatched write that raises the same
`OSError` (``ENOSPC`` / ``EROFS``). `read_only_folder` gives a folder that
refuses new files: a read-only tmpfs as root, ``chmod 555`` otherwise, a
patched probe where neither works.
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess


def _mount(*args):
    return subprocess.run(["mount", *args], capture_output=True, check=False).returncode == 0


def _umount(path):
    subprocess.run(["umount", "-l", path], capture_output=True, check=False)


def can_mount():
    """True when this process may mount a tmpfs (root with the capability)."""
    return hasattr(os, "geteuid") and os.geteuid() == 0


@contextlib.contextmanager
def small_filesystem(path, size_kib):
    """A tmpfs of `size_kib` KiB mounted at `path` (created), or None where mounting is not allowed."""
    os.makedirs(path, exist_ok=True)
    if not can_mount() or not _mount("-t", "tmpfs", "-o", f"size={int(size_kib)}k", "tmpfs", str(path)):
        yield None
        return
    try:
        yield str(path)
    finally:
        _umount(str(path))


@contextlib.contextmanager
def read_only_folder(path, monkeypatch):
    """A folder at `path` that refuses new files.

    As root (who ignores permission bits) a tmpfs remounted read-only
    (EROFS); as another user ``chmod 555`` (EACCES); as root where mounting
    is not allowed, `tempfile.mkstemp` in that folder patched to raise
    EROFS (the probe `tf_centernet.filesystem.check_writable` writes).
    """
    os.makedirs(path, exist_ok=True)
    path = str(path)
    if can_mount() and _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", path):
        try:
            if _mount("-o", "remount,ro", path):
                yield path
                return
        finally:
            _umount(path)
    if not can_mount():
        mode = os.stat(path).st_mode
        os.chmod(path, stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
        try:
            yield path
        finally:
            os.chmod(path, mode)
        return
    import errno
    import tempfile

    original = tempfile.mkstemp

    def refused(*args, **kwargs):
        if os.path.abspath(str(kwargs.get("dir", ""))).startswith(os.path.abspath(path)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), kwargs["dir"])
        return original(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    yield path
