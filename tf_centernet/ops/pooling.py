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

Implementations (the ``impl`` argument, and ``model.pooling_impl``):

* ``"scan"``: the scan above. The default of these functions.
* ``"custom"``: the compiled C++/CUDA ops of `tf_centernet.ops.custom`
  (``custom_ops/``), one pass over memory forward and backward, the same
  values and the same tie rule (gradients equal up to float summation
  order). Built on first use; raises `CustomOpsUnavailable` when they
  cannot be built or loaded, and a ValueError under XLA
  (``jit_compile=True``), which cannot compile them.
* ``"auto"``: "custom" when the compiled ops load, else the scan with one
  warning (`CustomOpsFallbackWarning`) per process. It also takes the scan
  where the compiled ops do not belong: inside an XLA-compiled function,
  while `tf.saved_model.save` traces (TF Serving and TFLite do not know
  the ops), inside ``with scan_only():`` (wrap other exports, e.g. TFLite
  conversion, in it), for dtypes the ops lack, and when a GPU is visible
  but the library was built without CUDA kernels.
"""

from __future__ import annotations

import contextlib
import threading

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


_scan_only = threading.local()


@contextlib.contextmanager
def scan_only():
    """Within this block (this thread), ``impl="auto"`` means the scan.

    For export paths other than `tf.saved_model.save` (which "auto" detects
    by itself), e.g. TFLite conversion or ONNX export:

        with pooling.scan_only():
            tflite_model = converter.convert()

    ``impl="custom"`` is not affected (it was asked for explicitly).
    """
    _scan_only.depth = getattr(_scan_only, "depth", 0) + 1
    try:
        yield
    finally:
        _scan_only.depth -= 1


def _in_xla_context():
    try:
        from tensorflow.python.ops import control_flow_util

        return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())
    except Exception:  # private API moved: assume not
        return False


def _in_save_context():
    try:
        from tensorflow.python.saved_model import save_context

        return save_context.in_save_context()
    except Exception:  # private API moved: assume not
        return False


def resolve_impl(impl, dtype=tf.float32):
    """The implementation `impl` stands for here and now: "scan" or "custom".

    Args:
        impl: str. "auto", "scan" or "custom" (see the module docstring).
        dtype: tf.DType of the pooled tensor. Defaults to float32.

    Returns:
        str. "scan" or "custom".

    Raises:
        ValueError: unknown impl, or impl="custom" under XLA.
        CustomOpsUnavailable: impl="custom" and the ops cannot be loaded.
        TypeError: impl="custom" with a dtype the ops lack.
    """
    if impl not in _IMPLS:
        raise ValueError(f"impl must be one of {_IMPLS}, got {impl!r}.")
    if impl == "scan":
        return "scan"
    from tf_centernet.ops import custom

    if impl == "custom":
        if _in_xla_context():
            raise ValueError(
                "impl='custom' cannot run inside an XLA-compiled function "
                "(jit_compile=True): XLA has no kernel for the compiled pooling "
                "ops. Use impl='auto' or impl='scan'."
            )
        if dtype not in custom.DTYPES:
            raise TypeError(
                f"impl='custom' takes {[d.name for d in custom.DTYPES]}, got {dtype.name}."
            )
        custom.load()
        return "custom"
    # "auto"
    if getattr(_scan_only, "depth", 0) or _in_xla_context() or _in_save_context():
        return "scan"
    if dtype not in custom.DTYPES:
        return "scan"
    try:
        custom.load()
    except custom.CustomOpsUnavailable as error:
        custom.warn_fallback(custom.short_reason(error))
        return "scan"
    if tf.config.list_physical_devices("GPU") and not custom.has_gpu_kernels():
        custom.warn_fallback(
            "a GPU is visible but the compiled library has no CUDA kernels "
            "(nvcc missing or the CUDA build failed)."
        )
        return "scan"
    return "custom"


def directional_pool(x, direction, impl="scan"):
    """Cumulative max of an NHWC tensor along one direction (SPEC section 2).

    Args:
        x: tensor of shape (batch, height, width, channels), float16,
            bfloat16 or float32.
        direction: str. One of "top", "left", "bottom", "right".
        impl: str. "scan" (pure TensorFlow), "custom" (compiled op) or
            "auto" (the compiled op where it loads and belongs, else the
            scan; see the module docstring). Defaults to "scan".

    Returns:
        Tensor of the same shape and dtype as `x`.

    Raises:
        ValueError: unknown direction or impl, `x` is not rank 4, or
            impl="custom" under XLA.
        CustomOpsUnavailable: impl="custom" and the compiled ops cannot be
            built or loaded (`tf_centernet.ops.custom`).
        TypeError: impl="custom" with a dtype the compiled ops lack.
    """
    if direction not in _DIRECTIONS:
        raise ValueError(
            f"direction must be one of {sorted(_DIRECTIONS)}, got {direction!r}."
        )
    if impl not in _IMPLS:
        raise ValueError(f"impl must be one of {_IMPLS}, got {impl!r}.")
    x = tf.convert_to_tensor(x)
    if x.shape.rank is not None and x.shape.rank != 4:
        raise ValueError(
            f"Expected an NHWC tensor of rank 4, got shape {x.shape}."
        )
    axis, toward_end = _DIRECTIONS[direction]
    if resolve_impl(impl, x.dtype) == "custom":
        from tf_centernet.ops import custom

        return custom.directional_pool(x, axis, reverse=toward_end)
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
