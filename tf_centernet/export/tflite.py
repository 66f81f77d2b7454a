"""TFLite export (fixed input size, builtin ops only) and its interpreter."""

from __future__ import annotations

import logging
from typing import Optional, Sequence

import tensorflow as tf

from tf_centernet.export.common import input_size_of, prepare_output, quiet_absl
from tf_centernet.export.module import DetectionModule

logger = logging.getLogger("tf_centernet")


def export_tflite(
    model, output: str,
    quantization: str = "float32",
    input_size=None, flip_test: Optional[bool] = None, category_ids: Optional[Sequence[int]] = None,
    decoding: bool = True,
) -> str:
    """Writes a `.tflite` file of the detector for one input size, builtin ops only.

    Input ``images`` uint8 `(1, H, W, 3)` RGB; outputs the
    `to_detection_api` dict for that size (signature ``serving_default``).
    With ``decoding=False`` the outputs are the raw head outputs at scale 1
    without the flipped copy (`DetectionModule.static_heads`); decode them
    with `tf_centernet.decode.decode_detections`.

    Args:
        model: a built detector.
        output: str. The `.tflite` file.
        quantization: str. ``"float32"``; ``"float16"`` (weights stored in
            float16, computed in float32 on CPU); ``"int8"`` (dynamic-range:
            weights int8, activations float). Defaults to `"float32"`.
        input_size: int, ``(height, width)`` or None. Defaults to the
            image converter's ``input_size`` (the training size).
        flip_test: bool or None. Defaults to the decoder's.
        category_ids: sequence of ints or None.
        decoding: bool. Include preprocessing-to-detections (True) or end at
            the head outputs (False). Defaults to `True`.

    Returns:
        str. The absolute path of the file.

    Raises:
        ValueError: unknown quantization.
        tf.errors / ConverterError: an op did not convert to a builtin.
    """
    if quantization not in ("float32", "float16", "int8"):
        raise ValueError(f"quantization must be float32, float16 or int8, got {quantization!r}.")
    height, width = input_size_of(model, input_size)
    module = DetectionModule(model, category_ids=category_ids, flip_test=flip_test)
    fn = module.static_detector(height, width) if decoding else module.static_heads(height, width)
    concrete = fn.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], module)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    with quiet_absl():
        flatbuffer = converter.convert()
    output = prepare_output(output, is_dir=False)
    with open(output, "wb") as f:
        f.write(flatbuffer)
    logger.info("Wrote %s (%s, %dx%d input, %.1f MB)", output, quantization, height, width, len(flatbuffer) / 1e6)
    return output


def tflite_interpreter(path: str, num_threads: Optional[int] = None):
    """A TFLite interpreter for `path`, allocated.

    Uses `ai_edge_litert.interpreter.Interpreter` (the ``tflite`` extra);
    falls back to the deprecated `tf.lite.Interpreter` with a warning.

    Args:
        path: str. A `.tflite` file.
        num_threads: int or None. CPU threads. Defaults to the runtime's.

    Returns:
        The interpreter; ``interpreter.get_signature_runner()`` runs it with
        ``images=`` and returns the output dict.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        logger.warning(
            "ai-edge-litert is not installed (pip install \"tf-centernet-triplets[tflite]\"); "
            "using the deprecated tf.lite.Interpreter."
        )
        Interpreter = tf.lite.Interpreter
    interpreter = Interpreter(model_path=path, num_threads=num_threads)
    interpreter.allocate_tensors()
    return interpreter
