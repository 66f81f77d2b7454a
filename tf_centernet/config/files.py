"""Configuration files: named configurations, YAML merging, overrides, and keys of earlier releases.

`load_config` merges the `Config` defaults, YAML files (paths or names in
`configs/`) and ``section.key=value`` overrides, makes data paths absolute
and checks the result (`tf_centernet.config.schema.validate`).
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import List, Sequence, Union

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tf_centernet.config.schema import Config, validate


def config_dirs() -> List[str]:
    """Folders searched for named configurations, in order."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tf_centernet/
    return [
        os.path.join(os.path.dirname(here), "configs"),
        os.path.join(sys.prefix, "share", "tf-centernet", "configs"),
    ]


def resolve_config_path(name_or_path: str) -> str:
    """Maps a config name (``centernet_hg52``) or a path to a YAML file.

    Raises:
        FileNotFoundError: neither a file nor a known name.
    """
    if os.path.isfile(name_or_path):
        return name_or_path
    name = name_or_path if name_or_path.endswith(".yaml") else name_or_path + ".yaml"
    for folder in config_dirs():
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate):
            return candidate
    known = sorted(
        {
            os.path.splitext(f)[0]
            for d in config_dirs()
            if os.path.isdir(d)
            for f in os.listdir(d)
            if f.endswith(".yaml")
        }
    )
    raise FileNotFoundError(
        f"No config file or named config {name_or_path!r}; named configs: {known}."
    )


def is_model_config(name_or_path: str) -> bool:
    """Whether a named configuration describes a model (sets ``model.backbone``), not only data."""
    loaded = OmegaConf.load(resolve_config_path(name_or_path))
    model = loaded.get("model") if hasattr(loaded, "get") else None
    return bool(model is not None and model.get("backbone"))


def load_config(
    name_or_path: Union[None, str, Sequence[str]] = None, overrides: Sequence[str] = ()
) -> Config:
    """Loads a configuration.

    Args:
        name_or_path: str, sequence of str, or None. YAML paths or names in
            `configs/`, merged in order (later ones override earlier ones:
            e.g. a model configuration then a data configuration,
            ``["centernet_small", "coco_tiny"]``); None gives the defaults.
        overrides: sequence of ``"section.key=value"`` strings applied last.

    Returns:
        A `Config` (a plain dataclass instance).

    Raises:
        FileNotFoundError: the config does not exist.
        ValueError: an unknown key or a value of the wrong type (the message
            names the key), or an inconsistent model.
    """
    schema = OmegaConf.structured(Config)
    parts = [schema]
    names = [name_or_path] if isinstance(name_or_path, str) else list(name_or_path or [])
    for name in names:
        path = resolve_config_path(name)
        loaded = OmegaConf.load(path)
        _upgrade_legacy_keys(loaded, path)
        _resolve_data_paths(loaded, os.path.dirname(os.path.abspath(path)))
        parts.append(loaded)
    name_or_path = " + ".join(names)
    try:
        if overrides:
            given = OmegaConf.from_dotlist(list(overrides))
            _upgrade_legacy_keys(given, "the command line")
            parts.append(given)
        config = OmegaConf.to_object(OmegaConf.merge(*parts))
    except OmegaConfBaseException as error:
        # Unknown key or wrong type: the message names the full key.
        raise ValueError(f"Invalid configuration ({name_or_path or 'defaults'}): {error}") from error
    # Overrides given relative to the working directory become absolute, so
    # the config.yaml written into a model directory reads the same data.
    for split in INPUT_SECTIONS:
        section = getattr(config, split)
        for key in INPUT_PATH_KEYS:
            value = getattr(section, key)
            if value:
                setattr(section, key, absolute_paths(value, os.getcwd()))
    return validate(config)


# The per-split input sections and their path fields.
INPUT_SECTIONS = ("train_data", "validation_data")
INPUT_PATH_KEYS = ("annotations", "images", "classes")

# Keys of earlier releases, still read for one release (with a warning):
# old key -> the new keys it sets.
LEGACY_KEYS = {
    "data.train_annotations": ("train_data.annotations",),
    "data.train_images": ("train_data.images",),
    "data.val_annotations": ("validation_data.annotations",),
    "data.val_images": ("validation_data.images",),
    "data.format": ("train_data.format", "validation_data.format"),
    "data.classes": ("train_data.classes", "validation_data.classes"),
    "train.mixed_precision": ("model.compute_dtype",),
}
# train.mixed_precision values -> model.compute_dtype.
_LEGACY_PRECISION = {"none": "float32", "false": "float32", "": "float32", "true": "float16"}


def _upgrade_legacy_keys(tree, source: str) -> None:
    """Moves the keys of `LEGACY_KEYS` found in a loaded YAML or override list to their new places.

    A new key given in the same place wins over the old one. Each old key
    found logs one deprecation warning naming `source` and the new keys.
    """
    if not hasattr(tree, "get"):
        return
    for old, new_keys in LEGACY_KEYS.items():
        section, name = old.split(".")
        parent = tree.get(section)
        if parent is None or not hasattr(parent, "get") or name not in parent:
            continue
        value = parent.pop(name)
        if old == "train.mixed_precision":
            text = str(value).strip().lower()
            value = _LEGACY_PRECISION.get(text, text)
        warnings.warn(
            f"{old} is deprecated ({source}); use {' and '.join(new_keys)}. "
            "The old key is read for one more release.",
            FutureWarning,
            stacklevel=3,
        )
        for new in new_keys:
            new_section, new_name = new.split(".")
            if tree.get(new_section) is None:
                tree[new_section] = {}
            if new_name not in tree[new_section]:
                tree[new_section][new_name] = value


def _resolve_data_paths(loaded, folder: str) -> None:
    """Makes the relative data paths of a loaded YAML absolute against `folder`.

    Only non-empty, relative paths are changed; ``~`` is expanded first.
    A comma-separated TFRecord list is resolved item by item.
    """
    if not hasattr(loaded, "get"):
        return
    for split in INPUT_SECTIONS:
        section = loaded.get(split)
        if section is None:
            continue
        for key in INPUT_PATH_KEYS:
            value = section.get(key)
            if isinstance(value, str) and value:
                section[key] = absolute_paths(value, folder)


def absolute_paths(value: str, folder: str) -> str:
    """A path, or a comma-separated list of paths, made absolute against `folder` (``~`` expanded first)."""
    parts = [os.path.expanduser(p) for p in value.split(",")]
    return ",".join(p if os.path.isabs(p) else os.path.normpath(os.path.join(folder, p)) for p in parts)


def to_yaml(config: Config) -> str:
    """The YAML text of a configuration (written next to checkpoints)."""
    return OmegaConf.to_yaml(OmegaConf.structured(config))
