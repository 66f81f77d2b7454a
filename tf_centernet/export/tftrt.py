"""TF-TRT export: the SavedModel's ``serving_default`` through TensorRT."""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Optional, Sequence, Tuple

import tensorflow as tf

from tf_centernet.export.common import input_size_of, prepare_output
from tf_centernet.export.saved_model import SERVING_DEFAULT, export_saved_model

logger = logging.getLogger("tf_centernet")


def tensorrt_status() -> Tuple[bool, str]:
    """Whether TensorFlow's TensorRT converter (TF-TRT) can run here.

    Returns:
        (available, reason): reason explains a False.
    """
    try:
        from tensorflow.compiler.tf2tensorrt import _pywrap_py_utils
    except ImportError as error:  # pragma: no cover - depends on the build
        return False, f"this TensorFlow has no TF-TRT module ({error})"
    if not _pywrap_py_utils.is_tensorrt_enabled():
        return False, (
            f"TensorFlow {tf.__version__} was built without TensorRT support (the "
            "CPU and macOS wheels are)"
        )
    loaded = _pywrap_py_utils.get_loaded_tensorrt_version()
    if tuple(loaded) == (0, 0, 0):
        linked = ".".join(str(v) for v in _pywrap_py_utils.get_linked_tensorrt_version())
        return False, f"the TensorRT {linked} libraries (libnvinfer) could not be loaded"
    if not tf.config.list_physical_devices("GPU"):
        return False, "no GPU is visible to TensorFlow"
    return True, "TensorRT " + ".".join(str(v) for v in loaded)


TENSORRT_HELP = (
    "TF-TRT export needs a Linux machine with an NVIDIA GPU, CUDA, the TensorRT "
    "libraries and a TensorFlow build linked against them (e.g. the "
    "nvcr.io/nvidia/tensorflow containers). Export a SavedModel here "
    "(--format savedmodel) and convert it there, or serve the SavedModel as it is."
)


def export_tftrt(
    model, output: str,
    precision: str = "FP16",
    input_size=None, flip_test: Optional[bool] = None, category_ids: Optional[Sequence[int]] = None,
) -> str:
    """Writes a TF-TRT SavedModel (``serving_default`` only).

    Exports the SavedModel, then converts its ``serving_default`` with
    `tf.experimental.tensorrt.Converter` in dynamic-shape mode: the network's
    convolutions run in TensorRT engines, the pooling scans and decoding stay
    TensorFlow ops. With `input_size` the engines are built for that size
    before saving; otherwise at the first request of each new size.

    Args:
        model, flip_test, category_ids: see `export_saved_model`.
        output: str. Output SavedModel folder.
        precision: str. ``"FP32"``, ``"FP16"`` or ``"INT8"`` (INT8 without
            calibration data uses FP16 ranges; prefer FP16). Defaults to
            `"FP16"`.
        input_size: int, ``(height, width)`` or None. Image size to build
            engines for.

    Returns:
        str. The absolute path of the converted SavedModel.

    Raises:
        RuntimeError: TensorRT is not available (`tensorrt_status`), with
            what to do instead.
    """
    available, reason = tensorrt_status()
    if not available:
        raise RuntimeError(f"Cannot export to TF-TRT: {reason}. {TENSORRT_HELP}")
    from tensorflow.python.compiler.tensorrt import trt_convert as trt  # pragma: no cover

    output = prepare_output(output, is_dir=True)  # pragma: no cover
    with tempfile.TemporaryDirectory() as tmp:  # pragma: no cover
        source = export_saved_model(
            model, os.path.join(tmp, "saved_model"),
            category_ids=category_ids, flip_test=flip_test,
        )
        converter = trt.TrtGraphConverterV2(
            input_saved_model_dir=source,
            input_saved_model_signature_key=SERVING_DEFAULT,
            use_dynamic_shape=True,
            dynamic_shape_profile_strategy="Optimal",
            precision_mode=precision,
            maximum_cached_engines=16,
        )
        converter.convert()
        if input_size is not None:
            height, width = input_size_of(model, input_size)

            def input_fn():
                yield (tf.zeros([1, height, width, 3], tf.uint8),)

            converter.build(input_fn=input_fn)
        converter.save(output)
    logger.info("Wrote TF-TRT SavedModel %s (%s)", output, precision)  # pragma: no cover
    return output  # pragma: no cover
