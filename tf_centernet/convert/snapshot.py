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
        ValueError: the file is not a readable state dict (names the file).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Snapshot not found: {path}")
    torch = import_torch()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and torch errors alike
        raise ValueError(
            f"{path}: not a PyTorch state dict readable with torch.load(weights_only=True): {error}"
        ) from error
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
