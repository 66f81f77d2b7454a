"""What model a release state dict describes, read from its keys and shapes.

Used in error messages: when a snapshot does not match the configuration,
the message proposes the ``--set`` overrides that describe the snapshot.
"""

from __future__ import annotations

import re
from typing import Dict, Mapping, Optional, Sequence

__all__ = ["describe_state", "as_overrides"]


def _count(shapes, pattern):
    regex = re.compile(pattern)
    return len({m.group(1) for k in shapes for m in [regex.fullmatch(k)] if m})


def describe_state(shapes: Mapping[str, Sequence[int]]) -> Optional[Dict[str, object]]:
    """The `ModelConfig` fields a release state dict implies.

    Args:
        shapes: dict release key (without ``module.``) -> shape (OIHW).

    Returns:
        dict with architecture, num_classes, num_stacks, levels, widths,
        blocks, stem_channels, head_channels, pool_channels (and
        cascade_corner_pooling when it differs from the architecture's
        default), or None when the keys are not a release hourglass model.
    """
    try:
        centers = "ct_heats.0.1.weight" in shapes
        cascade = "tl_cnvs.0.look_conv1.conv.weight" in shapes
        widths, blocks = [], []
        prefix = "kps.0"
        while f"{prefix}.up1.0.conv1.weight" in shapes:
            widths.append(int(shapes[f"{prefix}.up1.0.conv1.weight"][0]))
            blocks.append(_count(shapes, re.escape(prefix) + r"\.up1\.(\d+)\.conv1\.weight"))
            prefix += ".low2"
        widths.append(int(shapes[f"{prefix}.0.conv1.weight"][0]))
        blocks.append(_count(shapes, re.escape(prefix) + r"\.(\d+)\.conv1\.weight"))
        found = {
            "architecture": "centernet" if centers else "cornernet",
            "num_classes": int(shapes["tl_heats.0.1.weight"][0]),
            "num_stacks": _count(shapes, r"kps\.(\d+)\..*"),
            "levels": len(widths) - 1,
            "widths": widths,
            "blocks": blocks,
            "stem_channels": int(shapes["pre.0.conv.weight"][0]),
            "head_channels": int(shapes["cnvs.0.conv.weight"][0]),
            "pool_channels": int(shapes["tl_cnvs.0.p1_conv1.conv.weight"][0]),
        }
    except (KeyError, IndexError, TypeError):
        return None
    if cascade != centers:
        found["cascade_corner_pooling"] = cascade
    return found


def as_overrides(found: Mapping[str, object]) -> str:
    """``model.KEY=VALUE`` overrides (space separated) for `describe_state`'s dict."""
    def text(value):
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, (list, tuple)):
            return "[" + ",".join(str(v) for v in value) + "]"
        return str(value)

    return " ".join(f"model.{key}={text(value)}" for key, value in found.items())
