"""Typed configuration of models, data, losses, training and decoding.

Configurations are dataclasses (`schema`) validated by OmegaConf. A YAML file
in `configs/` (or any path) fills them (`files.load_config`); command-line
overrides use dotted keys, e.g. ``train.learning_rate=1e-4`` or
``data.input_size=255``. Each split's data has its own section,
``train_data`` and ``validation_data`` (`InputConfig`).

Every enumerated field's allowed values are listed once, in `CHOICES`, and
checked when a configuration loads (`validate`).
"""

from tf_centernet.config.files import (
    INPUT_PATH_KEYS,
    INPUT_SECTIONS,
    LEGACY_KEYS,
    absolute_paths,
    config_dirs,
    is_model_config,
    load_config,
    resolve_config_path,
    to_yaml,
)
from tf_centernet.config.schema import (
    BACKBONE_ALIASES,
    BACKBONES,
    CHOICES,
    Config,
    DataConfig,
    DecodeConfig,
    InputConfig,
    LossConfig,
    ModelConfig,
    TrainConfig,
    check_choice,
    input_config,
    replace,
    resolve_backbone,
    validate,
)

__all__ = [
    "BACKBONES",
    "BACKBONE_ALIASES",
    "CHOICES",
    "Config",
    "DataConfig",
    "DecodeConfig",
    "INPUT_PATH_KEYS",
    "INPUT_SECTIONS",
    "InputConfig",
    "LEGACY_KEYS",
    "LossConfig",
    "ModelConfig",
    "TrainConfig",
    "absolute_paths",
    "check_choice",
    "config_dirs",
    "input_config",
    "is_model_config",
    "load_config",
    "replace",
    "resolve_backbone",
    "resolve_config_path",
    "to_yaml",
    "validate",
]
