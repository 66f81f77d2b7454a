"""Low-level TensorFlow ops: directional (corner) pooling scans."""

from tf_centernet.ops.pooling import (
    bottom_pool,
    column_max,
    directional_pool,
    left_pool,
    right_pool,
    row_max,
    top_pool,
)

__all__ = ["bottom_pool", "column_max", "directional_pool", "left_pool", "right_pool", "row_max", "top_pool"]
