"""Class labels of a model: class index -> dataset category id and name.

One place for the mapping that training writes (``classes.json`` in the model
directory) and evaluation, detection and export read. Class indices are
0-based and follow the dataset's categories sorted by id, the order
`tf_centernet.data.CocoDataset` gives them.
"""

from __future__ import annotations

import json
import os

__all__ = ["CLASSES_FILE", "write_classes", "read_classes", "class_labels"]

CLASSES_FILE = "classes.json"


def write_classes(model_dir, dataset):
    """Records the class index -> COCO category id and name mapping.

    Args:
        model_dir: str. The model directory (must exist).
        dataset: an object with ``category_ids`` and ``class_names``
            sequences in class order (e.g. `CocoDataset`).
    """
    with open(os.path.join(model_dir, CLASSES_FILE), "w", encoding="utf-8") as f:
        json.dump({"category_ids": list(dataset.category_ids), "names": list(dataset.class_names)}, f)


def read_classes(model_dir):
    """The mapping written by `write_classes`, or None when absent.

    Args:
        model_dir: str or None. The model directory.

    Returns:
        dict ``{"category_ids": [...], "names": [...]}`` or None.
    """
    path = os.path.join(model_dir or "", CLASSES_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def class_labels(config, model_dir=None):
    """Class index -> COCO category id and name, for a (trained) model.

    In order: the model directory's ``classes.json`` (written by `train`);
    else the ``categories`` of ``train_data.annotations`` (then
    ``validation_data.annotations``) sorted by id, the order
    `tf_centernet.data.CocoDataset` gives class indices; else ids
    ``1 .. num_classes`` named by their number.

    Args:
        config: `Config`.
        model_dir: str or None. Defaults to ``config.train.model_dir``.

    Returns:
        (category_ids, names): two lists of ``model.num_classes`` entries.

    Raises:
        ValueError: the mapping found has another number of classes than
            ``model.num_classes``.
    """
    n = config.model.num_classes
    found = read_classes(model_dir or config.train.model_dir)
    source = "classes.json"
    if found is None:
        for path in (config.train_data.annotations, config.validation_data.annotations):
            if path and path.lower().endswith(".json") and os.path.isfile(path):
                with open(path, encoding="utf-8") as f:
                    categories = sorted(json.load(f).get("categories", []), key=lambda c: c["id"])
                found = {"category_ids": [c["id"] for c in categories], "names": [c["name"] for c in categories]}
                source = path
                break
    if found is None:
        return list(range(1, n + 1)), [str(i) for i in range(1, n + 1)]
    if len(found["category_ids"]) != n:
        raise ValueError(
            f"{source} has {len(found['category_ids'])} categories but model.num_classes is {n}."
        )
    return [int(c) for c in found["category_ids"]], [str(name) for name in found["names"]]
