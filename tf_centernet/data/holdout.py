"""A validation split drawn from the training data (``data.validation_split``).

For a data set that comes as one folder or file, with no separate
validation annotations: a fixed share of its images is held out for
validation and the rest trains. Which images are held out depends only on
each image's file name and ``data.split_seed``, not on the order the reader
lists them, so it is the same in every run, in `train`, `evaluate` and
`check-data`, and the two parts never share an image.
"""

from __future__ import annotations

import hashlib
import math
import os
from typing import List, Sequence, Tuple


def _rank_key(file_name: str, seed: int) -> str:
    """Pseudo-random, order-free sort key of an image (SHA-256 of the seed and its base name)."""
    return hashlib.sha256(f"{int(seed)}/{os.path.basename(file_name)}".encode()).hexdigest()


def holdout_split(records: Sequence, fraction: float, seed: int = 0) -> Tuple[List, List]:
    """Splits records into (training, validation) parts.

    The validation part is the ``ceil(fraction * n)`` images whose
    `_rank_key` sorts first (at least one image when `fraction` > 0 and
    there are two or more images, and never all of them); both parts keep
    the input order.

    Args:
        records: sequence of records with a ``file_name`` (str) attribute.
        fraction: float in [0, 1). Share of the images held out.
        seed: int. Another seed draws other images.

    Returns:
        (training records, validation records): two lists.

    Raises:
        ValueError: `fraction` outside [0, 1).
    """
    if not 0.0 <= float(fraction) < 1.0:
        raise ValueError(f"data.validation_split must be in [0, 1), got {fraction!r}.")
    n = len(records)
    count = min(math.ceil(float(fraction) * n), max(n - 1, 0)) if fraction > 0 else 0
    order = sorted(range(n), key=lambda i: _rank_key(records[i].file_name, seed))
    held = set(order[:count])
    train = [r for i, r in enumerate(records) if i not in held]
    val = [r for i, r in enumerate(records) if i in held]
    return train, val
