"""Photometric augmentation (docs/reference.md §6): colour jitter, PCA lighting, normalisation.

Images are ``(height, width, 3)`` RGB. The step functions (`color_jitter`,
`lighting`, `normalize`) each take and return a float32 image in [0, 1]
(normalised for the last); `photometric` applies all three to a uint8 image
in one fused pass, as `tf_centernet.data.augment.augment_for_training` does.
Randomness as in `tf_centernet.data.augment`: ``seed=None`` (stateful ops)
or a ``(2,)`` integer seed tensor (stateless ops).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

# PCA lighting statistics of the releases (ImageNet/COCO, docs/reference.md §6).
EIGEN_VALUES = np.array([0.2141788, 0.01817699, 0.00341571], np.float32)
# The releases' eigen-vectors have one row per channel in B, G, R order (the
# row gives that channel's share of each component). Our images are RGB, so
# the rows are reversed: row 0 is R.
_EIGEN_VECTORS_BGR = np.array(
    [
        [-0.58752847, -0.69563484, 0.41340352],
        [-0.5832747, 0.00994535, -0.81221408],
        [-0.56089297, 0.71832671, 0.41158938],
    ],
    np.float32,
)
EIGEN_VECTORS = _EIGEN_VECTORS_BGR[::-1].copy()

# OpenCV's BGR2GRAY weights written for RGB (the releases use cv2.cvtColor).
_GRAY_WEIGHTS_RGB = np.array([0.299, 0.587, 0.114], np.float32)

_Seed = Optional[tf.Tensor]


def _fold(seed: _Seed, salt: int) -> _Seed:
    """A derived stateless seed (None stays None)."""
    if seed is None:
        return None
    seed = tf.cast(tf.reshape(seed, [2]), tf.int64)
    return tf.random.experimental.stateless_fold_in(seed, salt)


def _uniform(shape, seed: _Seed, minval=0, maxval=None, dtype=tf.float32):
    """`tf.random.uniform`, or its stateless form when `seed` is given."""
    if seed is None:
        return tf.random.uniform(shape, minval=minval, maxval=maxval, dtype=dtype)
    return tf.random.stateless_uniform(
        shape, seed=seed, minval=minval, maxval=maxval, dtype=dtype
    )


def _normal(shape, seed: _Seed, stddev: float):
    """`tf.random.normal`, or its stateless form when `seed` is given."""
    if seed is None:
        return tf.random.normal(shape, stddev=stddev)
    return tf.random.stateless_normal(shape, seed=seed, stddev=stddev)


def grayscale(image):
    """OpenCV's luma ``0.299 R + 0.587 G + 0.114 B``, shape ``(H, W, 1)``."""
    return tf.reduce_sum(image * _GRAY_WEIGHTS_RGB, axis=-1, keepdims=True)


def color_jitter(image, variance: float = 0.4, seed: _Seed = None):
    """Brightness, contrast and saturation in random order (docs/reference.md §6).

    The releases' `color_jittering_` on an image scaled to [0, 1]: the
    grayscale ``gs`` is taken once, before any change; then, in a random
    order, each with its own factor ``a = 1 + U(-variance, variance)``:

    - brightness: ``image = a * image``
    - contrast: ``image = a * image + (1 - a) * mean(gs)``
    - saturation: ``image = a * image + (1 - a) * gs``

    No clipping (the releases do not clip either).

    Args:
        image: float32 ``(H, W, 3)``, RGB, about [0, 1].
        variance: float. Half-width of the factor range. Defaults to 0.4.
        seed: optional ``(2,)`` int tensor for stateless randomness.

    Returns:
        float32 ``(H, W, 3)``.
    """
    return apply_color_jitter(image, *color_jitter_parameters(variance, seed))


def apply_color_jitter(image, factors, order):
    """`color_jitter` with given factors and order (deterministic core).

    Args:
        image: float32 ``(H, W, 3)``, RGB.
        factors: float32 ``(3,)``. Factors a of brightness, contrast and
            saturation, in that order.
        order: int32 ``(3,)``. A permutation of 0 (brightness), 1 (contrast),
            2 (saturation): the order of application.

    Returns:
        float32 ``(H, W, 3)``.
    """
    image = tf.convert_to_tensor(image, tf.float32)
    factors = tf.convert_to_tensor(factors, tf.float32)
    order = tf.convert_to_tensor(order, tf.int32)
    gray = grayscale(image)  # (H, W, 1), of the input image, taken once
    # Each operation is image <- a * image + (1 - a) * target; (3, H, W, 1)
    # targets for brightness, contrast and saturation.
    targets = tf.stack(
        [tf.zeros_like(gray), tf.fill(tf.shape(gray), tf.reduce_mean(gray)), gray]
    )
    for step in range(3):  # the three operations, not boxes
        which = order[step]
        alpha = factors[which]
        image = alpha * image + (1.0 - alpha) * targets[which]
    return image


def lighting(image, std: float = 0.1, seed: _Seed = None):
    """AlexNet-style PCA lighting noise (docs/reference.md §6).

    ``image += eigvec @ (eigval * alpha)`` with ``alpha ~ N(0, std)`` of
    size 3, the releases' eigen-values and eigen-vectors (rows reordered to
    RGB, see `EIGEN_VECTORS`); the same vector is added to every pixel.

    Args:
        image: float32 ``(H, W, 3)``, RGB, about [0, 1].
        std: float. Standard deviation of alpha (`DataConfig.lighting_std`).
            Defaults to 0.1.
        seed: optional ``(2,)`` int tensor for stateless randomness.

    Returns:
        float32 ``(H, W, 3)``.
    """
    alpha = _normal([3], seed, std)
    # (3,) RGB
    delta = tf.linalg.matvec(tf.constant(EIGEN_VECTORS), EIGEN_VALUES * alpha)
    return tf.convert_to_tensor(image, tf.float32) + delta


def normalize(image, mean: Sequence[float], std: Sequence[float]):
    """``(image - mean) / std`` per channel (RGB order, image in [0, 1]).

    Args:
        image: float32 ``(H, W, 3)``.
        mean: 3 floats, RGB (`DataConfig.mean`).
        std: 3 floats, RGB (`DataConfig.std`).

    Returns:
        float32 ``(H, W, 3)``.
    """
    mean = tf.constant(list(mean), tf.float32)
    std = tf.constant(list(std), tf.float32)
    return (tf.convert_to_tensor(image, tf.float32) - mean) / std


def color_jitter_parameters(variance: float = 0.4, seed: _Seed = None):
    """The random draws of `color_jitter`: (factors ``(3,)``, order ``(3,)``).

    The same random ops and seeds as `color_jitter`, so that
    ``apply_color_jitter(image, *color_jitter_parameters(v, s))`` equals
    ``color_jitter(image, v, s)``.
    """
    factors = 1.0 + _uniform([3], _fold(seed, 0), -variance, variance)
    order = tf.argsort(_uniform([3], _fold(seed, 1)))
    return factors, order


def photometric(image_uint8, mean, std, jitter=None, lighting_std=None, lighting_seed: _Seed = None):
    """``/ 255`` -> colour jitter -> PCA lighting -> normalise, in one pass.

    Every step is affine in the pixel's RGB vector: colour jitter blends it
    with scalars and with its own gray value ``w . x`` (`apply_color_jitter`),
    lighting adds a vector (`lighting`), `normalize` scales and shifts per
    channel. Their composition is ``out = M x + b`` with a 3x3 matrix
    ``M = (P I + q 1 w^T) / (255 std)`` and a bias, folded from the random
    draws on 3-vectors; the image is read once (plus one reduction for the
    mean gray value that contrast needs) and written once, instead of about
    twelve float passes. Equal to the step-by-step chain up to float
    rounding (a few 1e-7 relative; tests/_augment_reference.py).

    Args:
        image_uint8: uint8 (or float, in [0, 255]) ``(H, W, 3)`` RGB.
        mean: 3 floats, RGB (`DataConfig.mean`), image scaled to [0, 1].
        std: 3 floats, RGB (`DataConfig.std`).
        jitter: None (no colour jitter) or ``(factors, order)`` as from
            `color_jitter_parameters`.
        lighting_std: None (no lighting) or float, the standard deviation of
            alpha (`lighting`).
        lighting_seed: optional ``(2,)`` int tensor: `lighting`'s seed.

    Returns:
        float32 ``(H, W, 3)``, normalised.
    """
    pixels = tf.cast(image_uint8, tf.float32)
    gray_weights = tf.constant(_GRAY_WEIGHTS_RGB)
    # image = p * x + q * gray(x) + r (x = uint8 / 255), per pixel.
    p, q, r = tf.constant(1.0), tf.constant(0.0), tf.constant(0.0)
    if jitter is not None:
        factors, order = jitter
        factors = tf.convert_to_tensor(factors, tf.float32)
        order = tf.convert_to_tensor(order, tf.int32)
        channel_means = tf.reduce_mean(pixels, axis=[0, 1]) / 255.0
        gray_mean = tf.reduce_sum(channel_means * gray_weights)
        for step in range(3):  # the three operations in their drawn order
            which = order[step]
            a = factors[which]
            # brightness: target 0; contrast: the mean gray; saturation: gray.
            p, q = a * p, a * q + tf.where(tf.equal(which, 2), 1.0 - a, 0.0)
            r = a * r + tf.where(tf.equal(which, 1), (1.0 - a) * gray_mean, 0.0)
    delta = tf.zeros([3])
    if lighting_std is not None:
        alpha = _normal([3], lighting_seed, lighting_std)
        delta = tf.linalg.matvec(tf.constant(EIGEN_VECTORS), EIGEN_VALUES * alpha)
    std = tf.constant(list(std), tf.float32)
    mean = tf.constant(list(mean), tf.float32)
    # (3 in, 3 out): column c maps the input pixel to output channel c.
    matrix = (p * tf.eye(3) + q * gray_weights[:, tf.newaxis]) / (255.0 * std)
    bias = (r + delta - mean) / std
    # A 1x1 convolution with a bias: one fused pass (faster here than a
    # (pixels, 3) x (3, 3) matmul).
    out = tf.nn.bias_add(tf.nn.conv2d(pixels[tf.newaxis], matrix[tf.newaxis, tf.newaxis], 1, "VALID"), bias)
    return out[0]
