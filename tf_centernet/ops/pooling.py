"""Directional max pooling: the four scans behind corner and center pooling.

SPEC section 2. For an NHWC tensor ``f`` of shape (batch, height, width,
channels), per channel:

* ``top_pool``:    out[i, j] = max(f[i:, j])     (top-left corner, looks down)
* ``left_pool``:   out[i, j] = max(f[i, j:])     (top-left corner, looks right)
* ``bottom_pool``: out[i, j] = max(f[:i+1, j])   (bottom-right, looks up)
* ``right_pool``:  out[i, j] = max(f[i, :j+1])   (bottom-right, looks left)

The portable implementation ("scan") is a log-step doubling scan built from
slices, ``tf.maximum`` and ``tf.concat`` only: ceil(log2(n)) steps for an axis
of length n. It runs eagerly, in ``tf.function``, under XLA, under a gradient
tape, in SavedModels and converts to TFLite builtins. No padding value is
needed, so the result is exact for any finite or infinite input.

Gradient and ties: the gradient of each output goes to the position of its
maximum. When several positions hold the maximum, it goes to the one nearest
the *start of the scan* (the farthest from the output position): e.g. for
``top_pool`` the lowest tied row. This is the releases' rule (their kernels
scan from the image border and replace the running maximum only on a strict
increase). It follows from ``tf.maximum``'s gradient, which on a tie goes to
its first argument; every step passes the farther half first.

The compiled custom ops (``impl="custom"``) are the subject of a later
version; ``impl="auto"`` currently always uses the scan.
"""

from __future__ import annotations

import tensorflow as tf

_IMPLS = ("auto", "scan", "custom")
# (axis, toward_end): toward_end=True means out[i] = max(f[i:]).
_DIRECTIONS = {
    "top": (1, True),
    "left": (2, True),
    "bottom": (1, False),
    "right": (2, False),
}


def _slice(x, axis, start, stop):
    """x[..., start:stop, ...] along `axis` (static bounds)."""
    begin = [0] * 4
    size = [-1] * 4
    begin[axis] = start
    size[axis] = stop - start
    return tf.slice(x, begin, size)


def _cummax_scan(x, axis, toward_end):
    """Cumulative max along a static-length `axis` by log-step doubling."""
    n = x.shape[axis]
    if n is None:
        return _cummax_scan_dynamic(x, axis, toward_end)
    step = 1
    while step < n:
        head = _slice(x, axis, 0, n - step)  # positions i
        tail = _slice(x, axis, step, n)  # positions i + step
        if toward_end:
            # out[i] = max(x[i + step], x[i]) for i < n - step; farther first.
            x = tf.concat([tf.maximum(tail, head), _slice(x, axis, n - step, n)], axis)
        else:
            # out[i] = max(x[i - step], x[i]) for i >= step; farther first.
            x = tf.concat([_slice(x, axis, 0, step), tf.maximum(head, tail)], axis)
        step *= 2
    return x


def _cummax_scan_dynamic(x, axis, toward_end):
    """The same scan when the axis length is only known at run time.

    Pads with the scanned values themselves (edge replication), which never
    changes a maximum; ties with the replicated edge send the gradient to the
    edge element, which is the scan start, as in the static version.
    """
    n = tf.shape(x)[axis]
    num_steps = tf.cast(
        tf.math.ceil(tf.math.log(tf.cast(tf.maximum(n, 1), tf.float32)) / tf.math.log(2.0)),
        tf.int32,
    )

    def body(k, y):
        step = tf.minimum(tf.bitwise.left_shift(1, k), n)
        if toward_end:
            edge = tf.gather(y, tf.fill([step], n - 1), axis=axis)
            shifted = tf.gather(tf.concat([y, edge], axis), tf.range(step, step + n), axis=axis)
        else:
            edge = tf.gather(y, tf.zeros([step], tf.int32), axis=axis)
            shifted = tf.gather(tf.concat([edge, y], axis), tf.range(0, n), axis=axis)
        return k + 1, tf.maximum(shifted, y)

    _, x = tf.while_loop(lambda k, y: k < num_steps, body, [0, x])
    return x


def directional_pool(x, direction, impl="scan"):
    """Cumulative max of an NHWC tensor along one direction (SPEC section 2).

    Args:
        x: tensor of shape (batch, height, width, channels), float16,
            bfloat16 or float32.
        direction: str. One of "top", "left", "bottom", "right".
        impl: str. "scan" (pure TensorFlow), "auto" (currently the scan) or
            "custom" (compiled op; not available in this version).

    Returns:
        Tensor of the same shape and dtype as `x`.

    Raises:
        ValueError: unknown direction or impl, or `x` is not rank 4.
        NotImplementedError: impl="custom" before the compiled ops exist.
    """
    if direction not in _DIRECTIONS:
        raise ValueError(
            f"direction must be one of {sorted(_DIRECTIONS)}, got {direction!r}."
        )
    if impl not in _IMPLS:
        raise ValueError(f"impl must be one of {_IMPLS}, got {impl!r}.")
    if impl == "custom":
        raise NotImplementedError(
            "The compiled corner-pooling ops are not built in this version; "
            "use impl='scan' or impl='auto'."
        )
    x = tf.convert_to_tensor(x)
    if x.shape.rank is not None and x.shape.rank != 4:
        raise ValueError(
            f"Expected an NHWC tensor of rank 4, got shape {x.shape}."
        )
    axis, toward_end = _DIRECTIONS[direction]
    return _cummax_scan(x, axis, toward_end)


def top_pool(x, impl="scan"):
    """out[b, i, j, c] = max(x[b, i:, j, c]). See `directional_pool`."""
    return directional_pool(x, "top", impl)


def left_pool(x, impl="scan"):
    """out[b, i, j, c] = max(x[b, i, j:, c]). See `directional_pool`."""
    return directional_pool(x, "left", impl)


def bottom_pool(x, impl="scan"):
    """out[b, i, j, c] = max(x[b, :i+1, j, c]). See `directional_pool`."""
    return directional_pool(x, "bottom", impl)


def right_pool(x, impl="scan"):
    """out[b, i, j, c] = max(x[b, i, :j+1, c]). See `directional_pool`."""
    return directional_pool(x, "right", impl)


def column_max(x, impl="scan"):
    """Max over the whole column, broadcast back: top_pool then bottom_pool.

    The vertical half of center pooling (SPEC section 2). Same shape as `x`.
    """
    return bottom_pool(top_pool(x, impl), impl)


def row_max(x, impl="scan"):
    """Max over the whole row, broadcast back: left_pool then right_pool.

    The horizontal half of center pooling (SPEC section 2). Same shape as `x`.
    """
    return right_pool(left_pool(x, impl), impl)
