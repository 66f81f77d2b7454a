"""What model a release state dict describes, read from its keys and shapes.

Used in error messages: when a snapshot does not match the configuration,
the message proposes the ``--set`` overrides that describe the snapshot.
`check_config_matches` compares that description with a configuration
before any model is built (building CornerNet-104 only to fail on a
CenterNet-52 snapshot takes minutes) and names the configs in ``configs/``
that match.
"""

from __future__ import annotations

import os
import re
from typing import Dict, List, Mapping, Optional, Sequence

__all__ = ["describe_state", "as_overrides", "describe_config", "check_config_matches", "matching_configs",
           "ConfigMismatch"]

# The fields `describe_state` reads for certain (cascade_corner_pooling is
# left to the key-by-key check, which sees every switch).
_COMPARED = ("architecture", "num_classes", "num_stacks", "levels", "widths", "blocks",
             "stem_channels", "head_channels", "pool_channels")


class ConfigMismatch(ValueError):
    """A snapshot describes another model than the configuration (found before building)."""


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


def describe_config(model_config) -> Dict[str, object]:
    """The fields of `describe_state` that a `ModelConfig` implies (hourglass entries resolved).

    Raises:
        ValueError: an unknown backbone or inconsistent hourglass lists.
    """
    spec = model_config.hourglass()
    found = {"architecture": model_config.architecture, "num_classes": int(model_config.num_classes)}
    for key in _COMPARED[2:]:
        value = spec[key]
        found[key] = [int(v) for v in value] if isinstance(value, (list, tuple)) else int(value)
    return found


def _differences(found, expected) -> List[str]:
    return [f"{key} {found[key]} (config: {expected[key]})" for key in _COMPARED
            if key in found and key in expected and found[key] != expected[key]]


def matching_configs(found: Mapping[str, object]) -> List[str]:
    """Names of the configs in ``configs/`` whose model is the one `found` describes.

    Those with the same class count come first; then those differing only
    in ``num_classes``.
    """
    from tf_centernet import config as config_lib

    names = sorted({os.path.splitext(f)[0] for d in config_lib.config_dirs() if os.path.isdir(d)
                    for f in os.listdir(d) if f.endswith(".yaml")})
    exact, other_classes = [], []
    for name in names:
        if not config_lib.is_model_config(name):  # data configurations (coco, coco_tiny) describe no model
            continue
        try:
            expected = describe_config(config_lib.load_config(name).model)
        except Exception:  # noqa: BLE001 - a config that does not load matches nothing
            continue
        differences = [key for key in _COMPARED if key in found and found[key] != expected[key]]
        if not differences:
            exact.append(name)
        elif differences == ["num_classes"]:
            other_classes.append(name)
    return exact + other_classes


def check_config_matches(shapes: Mapping[str, Sequence[int]], model_config, source: str = "snapshot") -> None:
    """Fails before any model is built when a snapshot describes another model than `model_config`.

    Compares `describe_state` (architecture, class count, stacks, levels,
    widths, blocks and channel counts read from the keys and shapes) with
    the configuration, and fails when they differ in size, or when a named
    config describes the snapshot. Left to the key-by-key check after
    building (which names the first mismatching keys): snapshots whose keys
    are not a release hourglass model, and a model of the configured size
    that differs only in architecture or class count and matches no named
    config.

    Args:
        shapes: dict release key (without ``module.``) -> shape.
        model_config: `ModelConfig`.
        source: str. The snapshot's path, for the message.

    Raises:
        ConfigMismatch (a ValueError): one line naming the differing fields
            and what to give instead: the named config that matches the
            snapshot (``--config NAME``, with ``--set model.num_classes=N``
            when only the class count differs from it), else the ``--set``
            overrides that describe it.
    """
    found = describe_state(shapes)
    if found is None:
        return
    differences = _differences(found, describe_config(model_config))
    if not differences:
        return
    matches = matching_configs(found)
    if not matches and all(d.startswith(("architecture ", "num_classes ")) for d in differences):
        return  # a model of the same size, no named config to propose: the key-by-key check names the keys
    classes = f"--set model.num_classes={found['num_classes']}"
    if all(d.startswith("num_classes ") for d in differences):
        todo = (f"add {classes} (convert keeps the snapshot's classes; train --init-from DIR re-initialises "
                "the class heads for another count)")
    elif matches:
        from tf_centernet import config as config_lib

        same = describe_config(config_lib.load_config(matches[0]).model)["num_classes"] == found["num_classes"]
        todo = f"use --config {matches[0]}" + ("" if same else f" {classes}")
        if len(matches) > 1:
            todo += f" (also matching: {', '.join(matches[1:])})"
    else:
        todo = f"give a config that describes it, e.g. --set {as_overrides({k: found[k] for k in _COMPARED})}"
    raise ConfigMismatch(
        f"{source} holds a {found['architecture']} model other than the configured one: "
        f"{'; '.join(differences)}. Nothing was built: {todo}."
    )
