"""ONNX export through tf2onnx, with handlers for the ops soft-NMS needs."""

from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np

from tf_centernet.export.common import input_size_of, prepare_output
from tf_centernet.export.module import DetectionModule

logger = logging.getLogger("tf_centernet")


def export_onnx(
    model, output: str,
    input_size=None, flip_test: Optional[bool] = None, category_ids: Optional[Sequence[int]] = None,
    opset: int = 17,
) -> str:
    """Writes an ONNX model of the fixed-size detector through tf2onnx.

    The graph of `DetectionModule.static_detector` (input ``images`` uint8
    `(1, H, W, 3)`, the `to_detection_api` outputs), converted with
    ``tf2onnx.convert.from_function``. Needs the ``onnx`` extra
    (``pip install "tf-centernet-triplets[onnx]"``).

    Args:
        model, input_size, flip_test, category_ids: see
            `export_tflite`.
        output: str. The `.onnx` file.
        opset: int. ONNX opset. Defaults to `17`.

    Returns:
        str. The absolute path of the file.

    Raises:
        ImportError: tf2onnx is not installed.
    """
    try:
        import tf2onnx
    except ImportError as error:
        raise ImportError(
            "ONNX export needs tf2onnx: pip install \"tf-centernet-triplets[onnx]\"."
        ) from error
    height, width = input_size_of(model, input_size)
    module = DetectionModule(model, category_ids=category_ids, flip_test=flip_test)
    fn = module.static_detector(height, width)
    output = prepare_output(output, is_dir=False)
    tf2onnx.convert.from_function(
        fn,
        input_signature=fn.input_signature,
        opset=opset,
        custom_op_handlers={
            "OneHot": (_onnx_one_hot, []),
            "Select": (_onnx_select, []),
            "SelectV2": (_onnx_select, []),
        },
        output_path=output,
    )
    logger.info("Wrote %s (opset %d, %dx%d input)", output, opset, height, width)
    return output


def _make_where(ctx, node, condition, true_value, false_value, boolean):
    """Rewrites `node` in place as ``Where(condition, true_value, false_value)``.

    onnxruntime has no boolean ``Where``: for booleans the node becomes
    ``(condition and true_value) or (not condition and false_value)``.
    """
    if boolean:
        negated = ctx.make_node("Not", [condition]).output[0]
        on_part = ctx.make_node("And", [condition, true_value]).output[0]
        off_part = ctx.make_node("And", [negated, false_value]).output[0]
        ctx.replace_inputs(node, [on_part, off_part])
        node.type = "Or"
    else:
        ctx.replace_inputs(node, [condition, true_value, false_value])
        node.type = "Where"


def _onnx_one_hot(ctx, node, name, args):
    """tf2onnx handler: ``tf.one_hot`` as ``Where(indices[..., None] == range(depth), on, off)``.

    tf2onnx's own OneHot conversion needs a constant depth, rank-1 indices
    and a numeric dtype; soft-NMS (`tf_centernet.decode.soft_nms`) makes
    boolean one-hots of scalar and (batch,) indices inside its while loop,
    where the depth is a loop input. This form has none of those limits.
    """
    from onnx import TensorProto
    from tf2onnx import utils

    axis = node.get_attr_value("axis", -1)
    if axis != -1:
        raise ValueError(f"one_hot with axis={axis} is not supported by this handler (only -1).")
    indices, depth, on_value, off_value = node.input
    int64 = TensorProto.INT64

    def const(tag, value):
        return ctx.make_const(utils.make_name(f"{name}_{tag}"), np.array(value, np.int64)).output[0]

    depth = ctx.make_node("Cast", [depth], attr={"to": int64}).output[0]
    depth = ctx.make_node("Reshape", [depth, const("scalar", np.zeros([0], np.int64))]).output[0]
    positions = ctx.make_node("Range", [const("zero", 0), depth, const("one", 1)]).output[0]
    indices = ctx.make_node("Cast", [indices], attr={"to": int64}).output[0]
    indices = ctx.make_node("Unsqueeze", [indices, const("axes", [-1])]).output[0]
    hot = ctx.make_node("Equal", [indices, positions]).output[0]
    _make_where(ctx, node, hot, on_value, off_value, ctx.get_dtype(on_value) == TensorProto.BOOL)
    for attr in ("axis", "T", "TI"):
        if attr in node.attr:
            del node.attr[attr]
    return node


def _onnx_select(ctx, node, name, args):
    """tf2onnx handler: ``tf.where(c, x, y)`` as ONNX ``Where`` (booleans: And/Or).

    tf2onnx lowers float selects to ``x * c + y * (1 - c)`` unless it sees an
    infinite constant input; inside soft-NMS's while loop the ``-inf``
    sentinel is a loop input, so ``-inf * 0`` gave NaN scores. ``Where`` is
    exact; onnxruntime has no boolean ``Where``, hence the logical form.
    """
    from onnx import TensorProto
    from tf2onnx import utils

    condition, true_value, false_value = node.input
    if node.type == "Select" and ctx.get_rank(condition) == 1 and ctx.get_rank(true_value) not in (None, 1):
        # TF1 Select broadcasts a vector condition over the first axis.
        shape = [-1] + [1] * (ctx.get_rank(true_value) - 1)
        const = ctx.make_const(utils.make_name(f"{name}_shape"), np.array(shape, np.int64))
        condition = ctx.make_node("Reshape", [condition, const.output[0]]).output[0]
    _make_where(ctx, node, condition, true_value, false_value, ctx.get_dtype(node.output[0]) == TensorProto.BOOL)
    if "T" in node.attr:
        del node.attr["T"]
    return node
