"""Alias of `tf_centernet.data.classes` (class lists and ``classes.json``), kept for importers."""

from tf_centernet.data.classes import (  # noqa: F401
    CLASSES_FILE,
    class_labels,
    read_classes,
    write_classes,
)

__all__ = ["CLASSES_FILE", "write_classes", "read_classes", "class_labels"]
