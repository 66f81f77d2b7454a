"""TensorFlow start-up without CUDA noise on machines that have no GPU.

TensorFlow's pip wheel carries CUDA support: on a machine without an
NVIDIA driver its first device listing prints an error-level line
("failed call to cuInit: ... UNKNOWN ERROR (303)") that
``TF_CPP_MIN_LOG_LEVEL`` cannot hide without hiding every real error too.
`list_devices_quietly` runs that first listing with the process's standard
error captured and writes back every line but the CUDA ones; on a machine
with an NVIDIA driver it does nothing, so real GPU problems are shown.
"""

from __future__ import annotations

import os
import sys
import tempfile

# Lines of TensorFlow's GPU probe that only say "there is no GPU here".
_NOISE = ("failed call to cuInit", "Could not find cuda drivers", "cudart_stub.cc")
_done = False


def has_nvidia_driver() -> bool:
    """True when an NVIDIA kernel driver is loaded (``/proc/driver/nvidia`` or ``/dev/nvidiactl``)."""
    return os.path.exists("/proc/driver/nvidia") or os.path.exists("/dev/nvidiactl")


def list_devices_quietly() -> None:
    """Lists TensorFlow's physical devices once, dropping the CUDA probe's lines on GPU-less machines.

    Other lines written meanwhile are passed on to standard error unchanged.
    Does nothing after the first call, or where an NVIDIA driver exists.
    """
    global _done
    if _done:
        return
    _done = True
    if has_nvidia_driver():
        return
    import tensorflow as tf

    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # stderr replaced by an object without a file
        tf.config.list_physical_devices()
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), fd)
        try:
            tf.config.list_physical_devices()
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            captured.seek(0)
            kept = [
                line for line in captured.read().splitlines(keepends=True)
                if not any(noise.encode() in line for noise in _NOISE)
            ]
            if kept:
                os.write(fd, b"".join(kept))
