"""Low-level TensorFlow ops: directional (corner) pooling, scans and compiled."""

from tf_centernet.ops.pooling import (
    bottom_pool,
    column_max,
    directional_pool,
    left_pool,
    resolve_impl,
    right_pool,
    row_max,
    scan_only,
    top_pool,
)

__all__ = [
    "bottom_pool",
    "column_max",
    "directional_pool",
    "left_pool",
    "resolve_impl",
    "right_pool",
    "row_max",
    "scan_only",
    "top_pool",
]
