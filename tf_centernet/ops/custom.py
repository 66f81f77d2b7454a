"""The compiled ops: directional pooling and soft-NMS; lazy build and load.

One library holds them (C++/CUDA sources in the top-level ``custom_ops/``):

* directional pooling (docs/reference.md §2), CPU and CUDA, with its
  gradient: `directional_pool`;
* per-class soft-NMS (docs/reference.md §7.6-7.7), CPU only (it runs on
  the host, as the releases' Cython soft-NMS does): `soft_nms`, used by
  `tf_centernet.decode.soft_nms` for ``impl="auto"``/``"custom"``.

Directional pooling: two custom TensorFlow ops, ``TfCenterNet>DirectionalPool``
and ``TfCenterNet>DirectionalPoolGrad``, serve the four directions: a
cumulative maximum along ``axis``, scanned from index 0 or, with
``reverse=True``, from the last index (top pooling is axis 1 reversed, left
pooling axis 2 reversed, bottom and right the same axes forward). Their
C++/CUDA sources live in the top-level ``custom_ops/`` folder.

Loading is lazy: the first call of `load` (made by `directional_pool` here
or by ``impl="auto"``/``"custom"`` in `tf_centernet.ops.pooling`) compiles
the library with the flags `tf.sysconfig` reports into a cache folder
(``~/.cache/tf_centernet/ops/tf<version>-<hash>/``, root overridable with
``$TF_CENTERNET_OPS_DIR``; about 15-30 s once) and loads it. Later calls
and processes reuse the cached build. ``tf-centernet build-ops`` builds it
ahead of time and prints any compiler error.

Behaviour (the tie rule of the pure-TF scans, so both agree):

* forward: a strict-increase running maximum, so on ties the gradient goes
  to the tied position nearest the scan start; NaN propagates like
  ``tf.maximum``;
* backward: computed from the forward *output* alone (no argmax tensor and
  no recomputation; see ``custom_ops/cc/kernels/directional_pool.h``);
* dtypes float16, bfloat16, float32, float64; any rank >= 1; dynamic shapes;
* no second-order gradient (the gradient op has none registered), no XLA
  kernel, and the ops are unknown to TF Serving and TFLite: exported graphs
  should use the scans (`tf_centernet.ops.pooling` arranges that for
  ``impl="auto"``).

Sources are looked for in ``custom_ops/`` beside the package (a checkout or
an editable install) and in ``<prefix>/share/tf-centernet/custom_ops``
(where ``pyproject.toml`` installs them for a regular install).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import threading
import warnings

import tensorflow as tf

logger = logging.getLogger("tf_centernet")

OP_TYPE = "TfCenterNet>DirectionalPool"
GRAD_OP_TYPE = "TfCenterNet>DirectionalPoolGrad"
SOFT_NMS_OP_TYPE = "TfCenterNet>SoftNms"
DTYPES = (tf.float16, tf.bfloat16, tf.float32, tf.float64)


class CustomOpsUnavailable(RuntimeError):
    """The compiled ops could not be found, built or loaded."""


class CustomOpsFallbackWarning(RuntimeWarning):
    """``impl="auto"`` fell back to the pure-TensorFlow scans."""


_lock = threading.RLock()
_state = {"library": None, "path": None, "error": None, "warned": set()}


def source_dir():
    """The ``custom_ops`` folder holding the C++/CUDA sources, or None."""
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    candidates = [
        os.path.join(package_root, "custom_ops"),
        os.path.join(sys.prefix, "share", "tf-centernet", "custom_ops"),
    ]
    for folder in candidates:
        if os.path.isfile(os.path.join(folder, "build.py")):
            return folder
    return None


def build_module():
    """``custom_ops/build.py`` imported as a module.

    Raises:
        CustomOpsUnavailable: the sources are not installed.
    """
    folder = source_dir()
    if folder is None:
        raise CustomOpsUnavailable(
            "The custom_ops/ sources were not found beside the package or in "
            f"{os.path.join(sys.prefix, 'share', 'tf-centernet')}."
        )
    name = "tf_centernet_custom_ops_build"
    module = sys.modules.get(name)
    if module is None or getattr(module, "SOURCE_DIR", None) != folder:
        spec = importlib.util.spec_from_file_location(name, os.path.join(folder, "build.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


def build(cuda="auto", force=False, verbose=False):
    """Compiles the library (unless cached) and returns its path.

    Args:
        cuda: "auto", True or False. Build the CUDA kernels too; "auto"
            does when nvcc, a CUDA build of TensorFlow and a GPU are all
            present. Defaults to "auto".
        force: bool. Rebuild even if a cached build exists. Defaults to
            False.
        verbose: bool. Print the compiler commands. Defaults to False.

    Returns:
        str. Path of the shared library.

    Raises:
        CustomOpsUnavailable: sources missing or the compiler failed (the
            message holds the compiler's output).
    """
    builder = build_module()
    try:
        return builder.build(cuda=cuda, force=force, verbose=verbose)
    except builder.BuildError as error:
        raise CustomOpsUnavailable(str(error)) from error
    except OSError as error:  # e.g. no compiler, read-only cache folder
        raise CustomOpsUnavailable(f"Building the compiled ops failed: {error}") from error


@tf.autograph.experimental.do_not_convert  # called while tracing; plain Python
def load(path=None):
    """The loaded op library, building it on first use.

    A failure is remembered: later calls raise the same error without
    compiling again (call `reset` to retry). Only one library can be loaded
    per process (the ops register once).

    Args:
        path: str or None. A built library to load instead of the cached
            build for these sources (see `build`). Defaults to None.

    Returns:
        The module returned by `tf.load_op_library`.

    Raises:
        CustomOpsUnavailable: with the reason (and compiler output).
    """
    with _lock:
        if _state["library"] is not None:
            return _state["library"]
        if _state["error"] is not None:
            raise CustomOpsUnavailable(_state["error"])
        try:
            if path is None:
                builder = build_module()
                if builder.existing_library() is None:
                    logger.info("Compiling the pooling and soft-NMS ops (once, about 20 s) into %s", builder.build_dir())
                path = build()
            library = tf.load_op_library(path)
        except CustomOpsUnavailable as error:
            _state["error"] = str(error)
            raise
        except (tf.errors.OpError, OSError) as error:
            _state["error"] = f"Loading the compiled ops failed: {error}"
            raise CustomOpsUnavailable(_state["error"]) from error
        _state["library"], _state["path"] = library, path
        logger.debug("Loaded %s", path)
        return library


def reset():
    """Forgets a remembered load failure and the fallback warnings."""
    with _lock:
        _state["error"] = None
        _state["warned"] = set()


def is_available():
    """True when the library loads (building it if needed)."""
    try:
        load()
    except CustomOpsUnavailable:
        return False
    return True


def library_path():
    """Path of the loaded library, or None before a successful `load`."""
    return _state["path"]


def has_gpu_kernels():
    """True when the loaded library registered CUDA kernels."""
    load()
    try:
        from tensorflow.python.framework import kernels

        registered = kernels.get_registered_kernels_for_op(OP_TYPE).kernel
    except Exception:  # private API: assume CPU-only when it moves
        return False
    return any(k.device_type == "GPU" for k in registered)


def short_reason(error):
    """The first line of an error, and its first compiler error line if any."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return "unknown error."
    compiler = next((line for line in lines[1:] if "error" in line.lower()), None)
    return lines[0] + (f" ({compiler[:300]})" if compiler else "")


_FALLBACKS = {
    "pooling": (
        "the compiled corner-pooling ops are not used; falling back to the "
        "pure-TensorFlow scans (slower, same results)",
        "model.pooling_impl=scan",
    ),
    "soft_nms": (
        "the compiled soft-NMS is not used; falling back to the TensorFlow "
        "loop (slower, same detections)",
        "decode.soft_nms_impl=loop",
    ),
}


def warn_fallback(reason, what="pooling"):
    """Warns once per process and op that "auto" uses the portable path, and why.

    Args:
        reason: str. Why the compiled op is not used.
        what: str. ``"pooling"`` or ``"soft_nms"``. Defaults to "pooling".
    """
    with _lock:
        if what in _state["warned"]:
            return
        _state["warned"].add(what)
    reason = reason.rstrip()
    if not reason.endswith((".", ")")):
        reason += "."
    fallback, setting = _FALLBACKS[what]
    warnings.warn(
        f"tf_centernet: {fallback}. Reason: {reason} "
        f"Run `tf-centernet build-ops` to see the build, or set {setting} to "
        "silence this warning.",
        CustomOpsFallbackWarning,
        stacklevel=4,
    )


def directional_pool(x, axis, reverse, name=None):
    """Cumulative max along `axis` with the compiled op (docs/reference.md §2).

    Args:
        x: tensor of rank >= 1, float16, bfloat16, float32 or float64.
        axis: int. The scanned axis, 0 <= axis < rank.
        reverse: bool. True: out[i] = max(x[i:]); False: out[i] =
            max(x[:i+1]).
        name: str or None. Op name.

    Returns:
        Tensor of the same shape and dtype as `x`.

    Raises:
        CustomOpsUnavailable: the library cannot be built or loaded.
        TypeError: unsupported dtype.
    """
    library = load()
    x = tf.convert_to_tensor(x)
    if x.dtype not in DTYPES:
        raise TypeError(
            f"The compiled pooling ops take {[d.name for d in DTYPES]}, got {x.dtype.name}."
        )
    return library.tf_center_net_directional_pool(x, axis=int(axis), reverse=bool(reverse), name=name)


@tf.RegisterGradient(OP_TYPE)
def _directional_pool_grad(op, grad):
    """Gradient to the argmax (ties: nearest the scan start), from the output."""
    return load().tf_center_net_directional_pool_grad(
        op.outputs[0], grad, axis=op.get_attr("axis"), reverse=op.get_attr("reverse")
    )


def soft_nms(
    boxes, scores, classes, max_detections, sigma, score_threshold,
    inclusive=True, tl_scores=None, br_scores=None, weight_exp=8.0, name=None,
):
    """Per-class soft-NMS with the compiled op (docs/reference.md §7.6-7.7).

    The selections of `tf_centernet.decode.soft_nms`'s loops (same tie rule:
    equal scores go to the lowest candidate index; the same float32
    arithmetic with Eigen's vectorised `exp`, as TensorFlow's, so scores
    agree to the last bit except, by one unit in the last place, where only
    one side takes `exp`'s scalar path; algorithm in
    ``custom_ops/cc/kernels/soft_nms_kernels.cc``). With `tl_scores` and `br_scores` the
    selected boxes are merged (``method="merge"``; sums in float64, so merged
    boxes agree with the loop to float rounding). Runs on the host: on a GPU
    machine TensorFlow places it on the CPU. No gradient, no XLA kernel; not
    for exported graphs (`tf_centernet.decode.soft_nms` uses its loop there).

    Args:
        boxes: float32 tensor `(batch, n, 4)`, x1, y1, x2, y2 in image pixels.
        scores: float32 tensor `(batch, n)`; below `score_threshold` or NaN:
            never selected.
        classes: int32 tensor `(batch, n)`.
        max_detections: int >= 0. Selections per image.
        sigma: float > 0. Release-form Gaussian parameter, ``exp(-IoU^2 / sigma)``.
        score_threshold: float.
        inclusive: bool. Pixel-inclusive widths and heights. Defaults to True.
        tl_scores, br_scores: float32 tensors `(batch, n)` or None (both for
            "merge"). Defaults to None.
        weight_exp: float. Exponent of the merge weights. Defaults to 8.0.
        name: str or None. Op name.

    Returns:
        dict with ``boxes`` float32 `(batch, max_detections, 4)`, ``scores``
        float32 `(batch, max_detections)` (scores at selection,
        non-increasing), ``classes`` int32 `(batch, max_detections)` and
        ``num_detections`` int32 `(batch,)`; rows past ``num_detections``
        are zero.

    Raises:
        CustomOpsUnavailable: the library cannot be built or loaded.
        ValueError: only one of `tl_scores` and `br_scores`.
        tf.errors.InvalidArgumentError: shapes that do not match (at run time
            when they are not known before).
    """
    library = load()
    if (tl_scores is None) != (br_scores is None):
        raise ValueError("soft_nms: merging needs both tl_scores and br_scores.")
    merge = tl_scores is not None
    boxes = tf.cast(boxes, tf.float32)
    scores = tf.cast(scores, tf.float32)
    classes = tf.cast(classes, tf.int32)
    # Without merging the corner scores are not read: any (batch, n) tensor.
    tl = tf.cast(tl_scores, tf.float32) if merge else scores
    br = tf.cast(br_scores, tf.float32) if merge else scores
    out_boxes, out_scores, out_classes, count = library.tf_center_net_soft_nms(
        boxes, scores, classes, tl, br,
        max_detections=int(max_detections), sigma=float(sigma),
        score_threshold=float(score_threshold), inclusive=bool(inclusive),
        merge=merge, weight_exp=float(weight_exp), name=name,
    )
    return {"boxes": out_boxes, "scores": out_scores, "classes": out_classes,
            "num_detections": count}


tf.no_gradient(SOFT_NMS_OP_TYPE)
