"""Class lists: text files (one name per line) and a model's ``classes.json``.

* `read_class_file` / `write_class_file`: the class list file of VOC and
  TFRecord data (``train_data.classes``; ``tf-centernet convert-data``
  writes one);
* `write_classes` / `read_classes` / `class_labels`: the class index ->
  dataset category id and name mapping that training writes
  (``classes.json`` in the model directory) and evaluation, detection and
  export read. Class indices are 0-based and follow the dataset's
  categories sorted by id, the order `tf_centernet.data.CocoDataset` gives
  them.
"""

from __future__ import annotations

import json
import os
from typing import List, Sequence

from tf_centernet.model_dir import ModelDirectory

__all__ = [
    "read_class_file", "write_class_file", "write_classes", "read_classes", "class_labels",
]



def read_class_file(path: str) -> List[str]:
    """Class names, one per line (blank lines and ``#`` comments ignored).

    Args:
        path: str. A UTF-8 text file.

    Returns:
        list of str, in file order (class index i is line i).

    Raises:
        FileNotFoundError: no such file.
        ValueError: no names, or a name listed twice.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Class list file not found: {path}")
    with open(path, encoding="utf-8") as handle:
        names = [line.strip() for line in handle]
    names = [n for n in names if n and not n.startswith("#")]
    if not names:
        raise ValueError(f"{path}: the class list is empty.")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{path}: class names listed twice: {duplicates}.")
    return names


def write_class_file(names: Sequence[str], path: str) -> str:
    """Writes a class list file (one name per line, UTF-8), as `read_class_file` reads.

    Returns:
        str, `path`.
    """
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("".join(f"{n}\n" for n in names))
    return path


def write_classes(model_dir, dataset):
    """Records the class index -> COCO category id and name mapping.

    Args:
        model_dir: str. The model directory (must exist).
        dataset: an object with ``category_ids`` and ``class_names``
            sequences in class order (e.g. `CocoDataset`).
    """
    with open(ModelDirectory(model_dir).classes_json, "w", encoding="utf-8") as f:
        json.dump({"category_ids": list(dataset.category_ids), "names": list(dataset.class_names)}, f)


def read_classes(model_dir):
    """The mapping written by `write_classes`, or None when absent.

    Args:
        model_dir: str or None. The model directory.

    Returns:
        dict ``{"category_ids": [...], "names": [...]}`` or None.
    """
    path = ModelDirectory(model_dir or "").classes_json
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
    directory = ModelDirectory(model_dir or config.train.model_dir)
    found = read_classes(directory.path)
    source = directory.classes_json
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


def class_list(classes) -> List[str]:
    """The class names a reader is given: a class list file's lines, or the names themselves.

    Args:
        classes: str or sequence of str. A class list file (`read_class_file`),
            the names, or empty.

    Returns:
        list of str; empty when `classes` is empty (the reader then finds
        the classes in the data).

    Raises:
        FileNotFoundError, ValueError: see `read_class_file`.
    """
    if isinstance(classes, str):
        return read_class_file(classes) if classes else []
    return list(classes or [])
