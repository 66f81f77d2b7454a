"""Converting a release snapshot into a preset that is also a model directory.

`evaluate`, `detect`, `export` and `train --init-from` take the directory
unchanged, and so does keras-hub (``keras_hub.models.ObjectDetector.from_preset``
once `tf_centernet` is imported):

- keras-hub's preset files (``save_to_preset``): ``config.json`` (the
  backbone), ``task.json`` (the detector, class names and category ids
  included), ``preprocessor.json``, ``metadata.json``,
  ``model.weights.h5`` (backbone weights) and ``task.weights.h5`` (heads);
- ``config.yaml``: the configuration the snapshot was converted with;
- ``classes.json``: class index -> category id and name
  (`tf_centernet.convert.labels.snapshot_labels`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import types
from typing import Optional

from tf_centernet import config as config_lib
from tf_centernet.checkpoints import list_checkpoints
from tf_centernet.convert.describe import check_config_matches
from tf_centernet.convert.labels import snapshot_labels
from tf_centernet.convert.mapping import load_release_state
from tf_centernet.convert.snapshot import read_snapshot
from tf_centernet.data.classes import write_classes
from tf_centernet.model_dir import ModelDirectory
from tf_centernet.models.presets import build_model

logger = logging.getLogger("tf_centernet")

__all__ = ["build_for_conversion", "convert_snapshot"]


def build_for_conversion(config):
    """The built `KeypointDetector` of `config`, to receive converted weights.

    Uses the scan pooling (variables do not depend on the implementation)
    so that building never compiles the custom ops.
    """
    model_config = dataclasses.replace(config.model, pooling_impl="scan")
    model = build_model(model_config, config.loss, config.decode, config.data)
    size = config.data.input_size
    model.build((None, size, size, 3))
    return model


def convert_snapshot(snapshot: str, config, model_dir: str, classes_file: Optional[str] = None) -> str:
    """Converts a release snapshot into a model directory.

    Args:
        snapshot: str. A release ``.pkl`` (torch 0.4 legacy format) or a
            zip-format ``.pth`` state dict, keys ``module.*``.
        config: `tf_centernet.config.Config` whose model matches the
            snapshot (e.g. ``load_config("centernet_hg104")``).
        model_dir: str. Output folder; created; must hold no checkpoint yet.
        classes_file: str or None. Class names, one per line (see
            `tf_centernet.convert.labels.snapshot_labels`).

    Returns:
        str: the path of the backbone weights file (``model.weights.h5``).

    Raises:
        FileNotFoundError: the snapshot or classes file does not exist.
        ImportError: torch is missing (the message names the extra).
        ValueError: `model_dir` already holds checkpoints or a preset, a bad
            classes file, or a snapshot that does not match the
            configuration: before building, `ConfigMismatch` when its keys
            describe another architecture, size or class count (naming the
            config that matches); after,
            `tf_centernet.convert.mapping.MappingError` naming the first
            mismatching keys.
    """
    existing = list_checkpoints(model_dir)
    if existing or os.path.isfile(os.path.join(model_dir, "config.json")):
        held = os.path.basename(existing[-1][1]) if existing else "config.json"
        raise ValueError(f"{model_dir} already holds a model ({held}); convert into a new or empty --model-dir.")
    category_ids, names = snapshot_labels(config.model.num_classes, classes_file)
    state = read_snapshot(snapshot)
    # Before building (minutes for a 104-layer model): does the snapshot describe this config's model?
    check_config_matches({key: value.shape for key, value in state.items()}, config.model, source=snapshot)
    model = build_for_conversion(config)
    report = load_release_state(model, state, source=snapshot)
    del state
    logger.info("Converted %d tensors of %s", len(report.loaded), snapshot)

    config = dataclasses.replace(
        config, train=dataclasses.replace(config.train, model_dir=os.path.abspath(model_dir))
    )
    os.makedirs(model_dir, exist_ok=True)
    with open(ModelDirectory(model_dir).config_yaml, "w", encoding="utf-8") as f:
        f.write(config_lib.to_yaml(config))
    write_classes(model_dir, types.SimpleNamespace(category_ids=category_ids, class_names=names))
    model.category_ids, model.class_names = list(category_ids), list(names)
    # The preset carries the configured pooling implementation, not the
    # scans used to build it here.
    model.pooling_impl = config.model.pooling_impl
    model.save_to_preset(model_dir)
    path = os.path.join(model_dir, "model.weights.h5")
    logger.info("Wrote preset %s", model_dir)
    return path
