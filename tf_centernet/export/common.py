"""Small helpers shared by the export formats: output paths, quiet saving, sizes."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Tuple


def prepare_output(path: str, is_dir: bool) -> str:
    """The absolute `path`, with its folder (or itself, when `is_dir`) created."""
    path = os.path.abspath(path)
    parent = path if is_dir else os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    return path


@contextlib.contextmanager
def quiet_absl():
    """Hides absl's INFO lines while saving: TF lists every captured variable
    ("contains input name(s) ... with unsupported characters"), thousands of
    names that say nothing to the user."""
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        absl_logger.setLevel(level)


def input_size_of(model, input_size) -> Tuple[int, int]:
    """``(height, width)`` from an int, a pair, or None (the model's image converter's ``input_size``).

    Raises:
        ValueError: None and the model's converter has no ``input_size``.
    """
    if input_size is None:
        input_size = getattr(model.image_converter, "input_size", None)
        if input_size is None:
            raise ValueError("Give input_size: the model's image converter has none.")
    if isinstance(input_size, int):
        return input_size, input_size
    height, width = (int(v) for v in input_size)
    return height, width
