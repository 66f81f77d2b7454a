"""Converting the authors' PyTorch release snapshots (CenterNet, CornerNet).

- `read_snapshot` (`snapshot.py`): a release ``.pkl`` / ``.pth`` state dict
  as NumPy arrays (needs the ``convert`` extra: torch);
- `release_entries`, `load_release_state`, `release_state` (`mapping.py`):
  the one-to-one mapping between release keys and model variables;
- `convert_snapshot` (`model_dir.py`): snapshot -> model directory for
  ``evaluate`` / ``detect`` / ``export`` / ``train --init-from``;
- `initialize_from` (`finetune.py`): ``train --init-from`` with a different
  class count.

Nothing here imports torch until a snapshot is read or written.
"""

from tf_centernet.convert.labels import COCO_CATEGORIES, snapshot_labels
from tf_centernet.convert.mapping import (
    KeyMismatch,
    MappingError,
    load_release_state,
    match_keys,
    release_entries,
    release_state,
)
from tf_centernet.convert.snapshot import CONVERT_EXTRA, read_snapshot, save_snapshot


def convert_snapshot(snapshot, config, model_dir, classes_file=None):
    """See `tf_centernet.convert.model_dir.convert_snapshot`."""
    from tf_centernet.convert.model_dir import convert_snapshot as _convert

    return _convert(snapshot, config, model_dir, classes_file)


def initialize_from(model, source):
    """See `tf_centernet.convert.finetune.initialize_from`."""
    from tf_centernet.convert.finetune import initialize_from as _initialize

    return _initialize(model, source)


__all__ = [
    "COCO_CATEGORIES",
    "CONVERT_EXTRA",
    "KeyMismatch",
    "MappingError",
    "convert_snapshot",
    "initialize_from",
    "load_release_state",
    "match_keys",
    "read_snapshot",
    "release_entries",
    "release_state",
    "save_snapshot",
    "snapshot_labels",
]
