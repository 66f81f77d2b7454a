"""Reading the authors' release snapshots (PyTorch `state_dict` files).

The releases (Duankaiwen/CenterNet, princeton-vl/CornerNet) publish their
trained models as ``torch.save(model.state_dict(), path)`` of a wrapper
module: every key starts with ``module.``, convolution kernels are OIHW,
BatchNorm layers keep ``weight``, ``bias``, ``running_mean``,
``running_var`` (and, from torch 0.4.1 on, ``num_batches_tracked``). The
published files use torch 0.4's legacy (non-zip) serialization; newer
snapshots use the zip format. Both are read by ``torch.load(...,
weights_only=True)``, which unpickles tensors and containers only, never
arbitrary objects.

torch is an optional dependency (``pip install "tf-centernet[convert]"``)
imported only here, and only when a snapshot is read.
"""

from __future__ import annotations

import os
import warnings
from typing import Dict

import numpy as np

__all__ = ["CONVERT_EXTRA", "RELEASE_PREFIX", "import_torch", "read_snapshot", "save_snapshot"]

RELEASE_PREFIX = "module."
CONVERT_EXTRA = (
    'pip install "tf-centernet[convert]" (CPU-only torch: add '
    "--extra-index-url https://download.pytorch.org/whl/cpu)"
)


def import_torch():
    """The `torch` module.

    Raises:
        ImportError: torch is not installed; the message names the extra.
    """
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            f"Reading PyTorch snapshots needs torch, which is not installed: {CONVERT_EXTRA}."
        ) from error
    return torch


_WANTED = "give a release snapshot (.pkl / .pth) written by torch.save(model.state_dict())"


def _unreadable_reason(path: str, error: Exception) -> str:
    """Why torch.load(weights_only=True) refused `path`, in one line of our own words."""
    with open(path, "rb") as handle:
        head = handle.read(512)
    text = str(error)
    if "Weights only load failed" in text or "weights_only" in text:
        return ("it holds Python objects other than tensors (a pickled object, not a state dict); "
                "it is not unpickled, since that could run code from the file")
    if head.startswith(b"PK\x03\x04"):
        return "a damaged or truncated zip-format PyTorch file"
    if head[:1] == b"\x80":
        return "a damaged or truncated pickle (legacy PyTorch format)"
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in head)
    if printable >= 0.95 * len(head):
        return "a text file, not a PyTorch snapshot"
    return "not a PyTorch file (neither torch.save's zip format nor its legacy pickle format)"


def read_snapshot(path: str) -> Dict[str, np.ndarray]:
    """The arrays of a release snapshot, keyed without the ``module.`` prefix.

    Args:
        path: str. A ``.pkl`` / ``.pth`` file written by ``torch.save`` of a
            `state_dict` (legacy or zip serialization). A dict holding the
            state dict under ``"state_dict"`` or ``"model"`` is accepted too.

    Returns:
        dict key -> NumPy array, in the file's order, with the release's
        layout (OIHW kernels, NCHW order, BGR input channels). Floating
        tensors are float32; integer ones (``num_batches_tracked``) int64.

    Raises:
        FileNotFoundError: no such file.
        ImportError: torch is missing (message names the extra).
        ValueError: the file is not a readable state dict: empty, text,
            damaged, or a pickle of other objects (one line naming the file
            and the reason, never torch's own advice).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Snapshot not found: {path}")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path}: empty file (0 bytes), not a snapshot; {_WANTED}.")
    torch = import_torch()
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols it reads anyway
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and torch errors alike: our own reason, not torch's advice
        raise ValueError(f"{path}: cannot read it as a PyTorch state dict: {_unreadable_reason(path, error)}; "
                         f"{_WANTED}.") from None
    if isinstance(state, dict):
        for wrapper in ("state_dict", "model"):
            if isinstance(state.get(wrapper), dict):
                state = state[wrapper]
                break
    if not isinstance(state, dict) or not state:
        raise ValueError(f"{path}: expected a non-empty state dict, got {type(state).__name__}.")
    arrays = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor.")
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.float()
        name = key[len(RELEASE_PREFIX):] if key.startswith(RELEASE_PREFIX) else key
        if name in arrays:
            raise ValueError(f"{path}: key {key!r} appears twice (with and without {RELEASE_PREFIX!r}).")
        arrays[name] = value.numpy()
    return arrays


def save_snapshot(arrays: Dict[str, np.ndarray], path: str, legacy: bool = True) -> str:
    """Writes arrays as a release-style snapshot (keys get ``module.``).

    The inverse of `read_snapshot`, for tests and for handing a converted
    or fine-tuned model back to the release code.

    Args:
        arrays: dict key (without prefix) -> NumPy array, release layout.
        path: str. Output file.
        legacy: bool. torch 0.4's non-zip serialization (as the published
            files) if True, else the current zip format.

    Returns:
        `path`.

    Raises:
        ImportError: torch is missing.
    """
    torch = import_torch()
    from collections import OrderedDict

    state = OrderedDict(
        (RELEASE_PREFIX + key, torch.from_numpy(np.ascontiguousarray(value))) for key, value in arrays.items()
    )
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    return path
