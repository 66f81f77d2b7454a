"""Directional max pooling: the four scans behind corner and center pooling.

docs/reference.md §2. For an NHWC tensor ``f`` of shape (batch, height, width,
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
increase). The scan's gradient is not differentiated step by step: a custom
gradient (`scan_gradient`) sums the upstream gradient over each run of equal
outputs and writes it at the run's start, from the forward output alone, as
the compiled op does; XLA-compiled, a few passes over memory.

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

from tf_centernet.config import CHOICES, check_choice

_IMPLS = CHOICES["model.pooling_impl"]
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


def _scan_with_gradient(x, axis, toward_end):
    """`_cummax_scan` with the gradient of `scan_gradient` (same tie rule)."""

    @tf.custom_gradient
    def pool(x):
        y = _cummax_scan(x, axis, toward_end)

        def grad(upstream):
            return scan_gradient(y, upstream, axis, toward_end)

        return y, grad

    return pool(x)


def scan_gradient(pooled, upstream, axis, toward_end):
    """Gradient of a directional max pooling, from its output alone.

    The running maximum changes value only where the scan meets a new strict
    maximum: those positions ("starts") split each line into segments of
    equal output, and every output of a segment takes its maximum from the
    segment's start, the tied position nearest the scan start (the
    releases' tie rule, module docstring). So the gradient is the sum of
    `upstream` over each segment, written at its start; elsewhere zero.

    With a static axis length the segment sums are a log-step segmented
    scan (the forward's doubling, with additions limited to equal outputs),
    compiled by XLA into a few fused passes; with a dynamic length, segment
    numbers from a cumulative sum of the start flags and one
    `tf.math.unsorted_segment_sum`. Either way a NaN output continues the
    segment of the first NaN scanned, which gets all of its gradient (as
    the compiled op does).

    Args:
        pooled: the forward output, NHWC (batch, height, width, channels),
            float16, bfloat16, float32 or float64.
        upstream: gradient with respect to `pooled`, same shape and dtype.
        axis: int. 1 (height) or 2 (width).
        toward_end: bool. True when ``out[i] = max(x[i:])`` (the scan starts
            at the last index: top and left pooling), False when
            ``out[i] = max(x[:i+1])`` (bottom and right pooling).

    Returns:
        Tensor, the gradient with respect to the pooled input, same shape
        and dtype as `pooled`. Sums are taken in float32 for 16-bit inputs.
    """
    pooled = tf.convert_to_tensor(pooled)
    upstream = tf.convert_to_tensor(upstream, pooled.dtype)
    if pooled.shape[axis] is None:
        return _scan_gradient_dynamic(pooled, upstream, axis, toward_end)
    key = (axis, toward_end)
    if key not in _COMPILED_GRADIENTS:
        _COMPILED_GRADIENTS[key] = tf.function(
            lambda y, dy: _scan_gradient_static(y, dy, axis, toward_end),
            jit_compile=True,
            autograph=False,
        )
    return _COMPILED_GRADIENTS[key](pooled, upstream)


_COMPILED_GRADIENTS = {}


def _accumulation_dtype(dtype):
    return tf.float32 if dtype in (tf.float16, tf.bfloat16) else dtype


def _segment_starts(pooled, axis, toward_end):
    """Bool, True where the scan meets a new value (and at the scan start)."""
    shape = tf.shape(pooled, out_type=tf.int32)
    n = shape[axis]
    head = _slice_dynamic(pooled, axis, 0, tf.maximum(n - 1, 0))
    tail = _slice_dynamic(pooled, axis, tf.minimum(n, 1), n)
    # The neighbour nearer the scan start: tail for toward_end, head otherwise.
    current, previous = (head, tail) if toward_end else (tail, head)
    # A new value, unless the previous one was NaN (NaN continues a NaN run).
    starts = tf.logical_and(tf.not_equal(current, previous), tf.equal(previous, previous))
    first = tf.ones(tf.tensor_scatter_nd_update(shape, [[axis]], [tf.minimum(n, 1)]), tf.bool)
    return tf.concat([starts, first] if toward_end else [first, starts], axis)


def _scan_gradient_static(pooled, upstream, axis, toward_end):
    """`scan_gradient` for a static axis length: log-step segmented sums."""
    dtype = upstream.dtype
    sums = tf.cast(upstream, _accumulation_dtype(dtype))
    n = pooled.shape[axis]
    step = 1
    while step < n:
        # Positions i and i + step are in the same segment when they hold
        # the same output (outputs are monotone along the scan) or, once a
        # NaN was scanned, both NaN (test the one scanned first).
        near, far = _slice(pooled, axis, 0, n - step), _slice(pooled, axis, step, n)
        first_scanned = far if toward_end else near
        same = tf.logical_or(tf.equal(near, far), tf.not_equal(first_scanned, first_scanned))
        paddings = [[0, 0]] * 4
        if toward_end:
            # The segment start is its last index: sums run toward index 0.
            added = tf.where(same, _slice(sums, axis, 0, n - step), tf.zeros([], sums.dtype))
            paddings[axis] = [step, 0]
        else:
            added = tf.where(same, _slice(sums, axis, step, n), tf.zeros([], sums.dtype))
            paddings[axis] = [0, step]
        # An added zero border instead of a concatenation: XLA fuses it.
        sums = sums + tf.pad(added, paddings)
        step *= 2
    grad = tf.where(_segment_starts(pooled, axis, toward_end), sums, tf.zeros([], sums.dtype))
    return tf.cast(grad, dtype)


def _scan_gradient_dynamic(pooled, upstream, axis, toward_end):
    """`scan_gradient` for a dynamic axis length: one segment sum."""
    dtype = upstream.dtype
    upstream = tf.cast(upstream, _accumulation_dtype(dtype))
    shape = tf.shape(pooled, out_type=tf.int32)
    n = shape[axis]
    starts = _segment_starts(pooled, axis, toward_end)
    # Segment number within the line (0 at the scan start) ...
    local = tf.cumsum(tf.cast(starts, tf.int32), axis=axis, reverse=toward_end) - 1
    # ... plus the line's own range of n numbers: lines are indexed by the
    # other three axes, broadcast from a tensor with `axis` of length 1.
    line_shape = tf.tensor_scatter_nd_update(shape, [[axis]], [1])
    lines = tf.reshape(tf.range(tf.reduce_prod(line_shape)), line_shape)
    ids = local + lines * n
    sums = tf.math.unsorted_segment_sum(
        tf.reshape(upstream, [-1]), tf.reshape(ids, [-1]), tf.size(pooled, out_type=tf.int32)
    )
    grad = tf.where(starts, tf.reshape(tf.gather(sums, ids), shape), tf.zeros_like(upstream))
    return tf.cast(grad, dtype)


def _slice_dynamic(x, axis, start, stop):
    """x[..., start:stop, ...] along `axis` (bounds may be tensors)."""
    begin = tf.tensor_scatter_nd_update(tf.zeros([4], tf.int32), [[axis]], [start])
    size = tf.tensor_scatter_nd_update(tf.fill([4], -1), [[axis]], [stop - start])
    return tf.slice(x, begin, size)


_scan_only = threading.local()


@contextlib.contextmanager
def scan_only():
    """Within this block (this thread), ``impl="auto"`` means the scan.

    The same holds for the compiled soft-NMS: ``soft_nms_impl="auto"`` of
    `tf_centernet.decode.soft_nms` means its TensorFlow loop here.

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


def in_xla_context():
    """True while tracing inside an XLA-compiled function (``jit_compile=True``)."""
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


def in_portable_context():
    """True where "auto" must choose the portable ops over the compiled ones.

    Inside a `scan_only` block, an XLA-compiled function or
    `tf.saved_model.save` (their graphs must run without our library).
    """
    return bool(getattr(_scan_only, "depth", 0)) or in_xla_context() or _in_save_context()


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
    check_choice("model.pooling_impl", impl)
    if impl == "scan":
        return "scan"
    from tf_centernet.ops import custom

    if impl == "custom":
        if in_xla_context():
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
    if in_portable_context():
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
    """Cumulative max of an NHWC tensor along one direction (docs/reference.md §2).

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
    check_choice("model.pooling_impl", impl)
    x = tf.convert_to_tensor(x)
    if x.shape.rank is not None and x.shape.rank != 4:
        raise ValueError(
            f"Expected an NHWC tensor of rank 4, got shape {x.shape}."
        )
    axis, toward_end = _DIRECTIONS[direction]
    if resolve_impl(impl, x.dtype) == "custom":
        from tf_centernet.ops import custom

        return custom.directional_pool(x, axis, reverse=toward_end)
    return _scan_with_gradient(x, axis, toward_end)


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

    The vertical half of center pooling (docs/reference.md §2). Same shape as `x`.
    """
    return bottom_pool(top_pool(x, impl), impl)


def row_max(x, impl="scan"):
    """Max over the whole row, broadcast back: left_pool then right_pool.

    The horizontal half of center pooling (docs/reference.md §2). Same shape as `x`.
    """
    return right_pool(left_pool(x, impl), impl)
