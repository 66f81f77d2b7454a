"""Gathering head outputs at keypoint cells: shared by decoding and the losses."""

from __future__ import annotations

import tensorflow as tf

__all__ = ["gather_cells"]


def gather_cells(feature: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
    """Values of a feature map at flat cell indices.

    Used by decoding (embeddings and offsets of the top-K keypoints) and by the
    losses (predicted embeddings and offsets at the ground-truth keypoints).

    Args:
        feature: tensor `(batch, height, width, depth)`, any dtype.
        indices: int32 tensor `(batch, k)`, ``y * width + x`` (output-grid
            cells).

    Returns:
        Tensor `(batch, k, depth)` of `feature`'s dtype.

    Raises:
        tf.errors.InvalidArgumentError: an index outside ``[0, height *
            width)`` (on CPU; GPUs return zeros).
    """
    shape = tf.shape(feature)
    flat = tf.reshape(feature, [shape[0], shape[1] * shape[2], shape[3]])
    return tf.gather(flat, indices, batch_dims=1)
