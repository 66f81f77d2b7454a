"""Initializing a model for training from a converted model or a snapshot.

`tf-centernet train --init-from DIR_OR_SNAPSHOT` (``train.init_from``):
every variable is loaded from the source except, when the class count
differs, the heatmap output layers (the 1x1 convolutions of the
``*_heatmap`` heads), which keep their fresh initialization (bias
``model.heatmap_bias``, -2.19). The log lists what was re-initialized.
"""

from __future__ import annotations

import logging
import os

from tf_centernet import config as config_lib
from tf_centernet.convert.mapping import LoadReport, load_release_state, release_state
from tf_centernet.convert.snapshot import read_snapshot

logger = logging.getLogger("tf_centernet")

__all__ = ["initialize_from", "model_dir_state"]


def model_dir_state(model_dir: str):
    """A model directory's latest weights as a release state dict.

    Args:
        model_dir: str. Holds ``config.yaml`` and ``checkpoints/`` (what
            `train` writes) or preset weights (what `tf-centernet convert`
            writes).

    Returns:
        dict release key -> NumPy array (release layout).

    Raises:
        FileNotFoundError: no config.yaml or no checkpoint there.
    """
    from tf_centernet.checkpoints import latest_checkpoint
    from tf_centernet.convert.model_dir import build_for_conversion
    from tf_centernet.model_dir import ModelDirectory

    config_path = ModelDirectory(model_dir).config_yaml
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{model_dir} has no config.yaml: not a model directory.")
    checkpoint = latest_checkpoint(model_dir)
    preset = os.path.join(model_dir, "model.weights.h5")
    if checkpoint is None and not os.path.isfile(preset):
        raise FileNotFoundError(
            f"{model_dir} holds no {ModelDirectory.CHECKPOINTS}/ckpt-STEP.weights.h5 and no preset weights."
        )
    config = config_lib.load_config(config_path)
    source = build_for_conversion(config)
    if checkpoint is not None:
        source.load_weights(checkpoint)
    else:
        source.backbone.load_weights(preset)
        source.load_task_weights(os.path.join(model_dir, "task.weights.h5"))
    return release_state(source, with_batch_counts=False)


def initialize_from(model, source: str) -> LoadReport:
    """Loads a source's weights into a built model, allowing new classes.

    Args:
        model: a built `KeypointDetector` (the model to train).
        source: str. A model directory (converted or trained) or a release
            snapshot file.

    Returns:
        `tf_centernet.convert.mapping.LoadReport`: keys loaded and keys left
        re-initialized.

    Raises:
        FileNotFoundError: the source does not exist.
        ImportError: a snapshot without torch installed.
        ValueError: the architectures differ beyond the class count (the
            message names the first mismatching keys).
    """
    if os.path.isdir(source):
        state = model_dir_state(source)
    elif os.path.isfile(source):
        state = read_snapshot(source)
    else:
        raise FileNotFoundError(f"train.init_from: no model directory or snapshot at {source}")
    report = load_release_state(model, state, source=source, new_classes=True)
    logger.info("Initialized %d tensors from %s", len(report.loaded), source)
    if report.reinitialized:
        layers = sorted({key.rsplit(".", 1)[0] for key in report.reinitialized})
        logger.info(
            "Class count differs from %s: heatmap output layers re-initialized (bias %.2f), not loaded: %s",
            source, model.heatmap_bias, ", ".join(layers),
        )
    return report
