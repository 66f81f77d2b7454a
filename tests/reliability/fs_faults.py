"""File-system faults for the reliability tests: small, full or read-only folders.

`small_filesystem` mounts a tmpfs of a given size where the tests run as
root and may mount (as CI containers usually allow); elsewhere it yields
None and the tests fall back to a monkeypatched write that raises the same
`OSError` (``ENOSPC`` / ``EROFS``). `read_only_folder` gives a folder that
refuses new files: a read-only tmpfs as root, ``chmod 555`` otherwise.
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
def read_only_folder(path, prepare=None):
    """A folder at `path` that refuses new files; `prepare(path)` fills it first.

    Root ignores permission bits, so as root the folder is a tmpfs
    remounted read-only (EROFS); otherwise it is ``chmod 555`` (EACCES).
    Yields None when neither is possible.
    """
    os.makedirs(path, exist_ok=True)
    path = str(path)
    if can_mount():
        if not _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", path):
            yield None
            return
        try:
            if prepare:
                prepare(path)
            if not _mount("-o", "remount,ro", path):
                yield None
                return
            yield path
        finally:
            _umount(path)
        return
    if prepare:
        prepare(path)
    mode = os.stat(path).st_mode
    os.chmod(path, stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    try:
        yield path
    finally:
        os.chmod(path, mode)
