"""TFLite export (fixed input size, builtin ops only) and its interpreter."""

from __future__ import annotations

import logging
import re
from typing import Callable, Iterable, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from tf_centernet.export.common import input_size_of, prepare_output, quiet_absl
from tf_centernet.export.module import DetectionModule

logger = logging.getLogger("tf_centernet")


def export_tflite(
    model, output: str,
    quantization: str = "float32",
    input_size=None, flip_test: Optional[bool] = None, category_ids: Optional[Sequence[int]] = None,
    decoding: bool = True,
    representative_images: Optional[Union[Iterable[np.ndarray], Callable[[], Iterable[np.ndarray]]]] = None,
    calibration_steps: int = 100,
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
            weights int8, activations float); ``"int8-full"`` (full-integer
            post-training quantisation of the network: int8 weights and
            activations, calibrated on `representative_images`; the
            preprocessing, the heads' output convolutions (`HEAD_OUTPUTS`)
            and the decoding stay float32, see `quantize_network_only`).
            Defaults to
            `"float32"`.
        input_size: int, ``(height, width)`` or None. Defaults to the
            image converter's ``input_size`` (the training size).
        flip_test: bool or None. Defaults to the decoder's.
        category_ids: sequence of ints or None.
        decoding: bool. Include preprocessing-to-detections (True) or end at
            the head outputs (False). Defaults to `True`.
        representative_images: for ``"int8-full"`` only (required there):
            uint8 RGB images `(h, w, 3)` of any size, or a callable returning
            an iterable of them, drawn from the training data; each is resized
            to the export size (`resize_for_export`) and run through the
            float graph to calibrate the activation ranges.
        calibration_steps: int. At most this many representative images are
            used. Defaults to `100`.

    Returns:
        str. The absolute path of the file.

    Raises:
        ValueError: unknown quantization.
        tf.errors / ConverterError: an op did not convert to a builtin.
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}.")
    if quantization == "int8-full" and representative_images is None:
        raise ValueError(
            "quantization='int8-full' needs representative_images: a few hundred training images "
            "(uint8 RGB arrays) to calibrate the activation ranges."
        )
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
    if quantization == "int8-full":
        # The network's name scope in the traced graph: its name, made unique with a suffix.
        scope = re.escape(module.model.name) + r"(_[0-9]+)?/"
        flatbuffer = quantize_network_only(
            converter, _calibration_data(representative_images, height, width, calibration_steps), scope,
            float_scope=HEAD_OUTPUTS,
        )
    else:
        with quiet_absl():
            flatbuffer = converter.convert()
    output = prepare_output(output, is_dir=False)
    with open(output, "wb") as f:
        f.write(flatbuffer)
    logger.info("Wrote %s (%s, %dx%d input, %.1f MB)", output, quantization, height, width, len(flatbuffer) / 1e6)
    return output


QUANTIZATIONS = ("float32", "float16", "int8", "int8-full")

# The heads' last 1x1 convolutions (heatmap logits, offsets, embeddings), which
# ``int8-full`` keeps float32: a few thousand weights, no measurable time,
# and on BCCD half of the AP that quantising them cost (AP -0.9 -> -0.5,
# AP50 -2.9 -> -0.8), since 8 bits of logit leave close scores tied.
HEAD_OUTPUTS = r"_(heatmap|offset|embedding)[^/]*/out"


def resize_for_export(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """A uint8 RGB image at a fixed-size export's ``height x width`` (bilinear; unchanged when it fits).

    The normalised boxes of the export then apply to the original image.
    """
    if image.shape[0] == height and image.shape[1] == width:
        return image
    import cv2

    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)


def representative_training_images(config, count: int = 100, class_names=None):
    """`count` images spread evenly over a config's training split, for ``tflite-int8-full``.

    Args:
        config: `tf_centernet.config.Config` (``train_data``: COCO, VOC or
            TFRecord, as training reads it).
        count: int. How many images. Defaults to `100`.
        class_names: sequence of str or None. The model's classes (VOC and
            TFRecord readers map names to them).

    Returns:
        A callable returning an iterator of uint8 RGB arrays (read lazily,
        one at a time).
    """
    from tf_centernet.data.records import open_dataset

    records = sorted(open_dataset(config, "train", class_names=class_names).records, key=lambda r: r.image_id)
    step = max(1, len(records) // max(1, int(count)))
    chosen = records[::step][: int(count)]

    def read(record):
        if record.encoded is None:
            from tf_centernet.data.coco import load_image

            return load_image(record.file_name)
        from tf_centernet.data.images import decode_image_bytes

        return decode_image_bytes(record.encoded, record.display_name)

    return lambda: (read(r) for r in chosen)


def _calibration_data(images, height, width, steps):
    """The converter's ``representative_dataset``: `steps` images at the export size, batch 1."""

    def generate():
        source = images() if callable(images) else images
        count = 0
        for image in source:
            if count >= steps:
                break
            image = np.asarray(image)
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
                raise ValueError(f"representative images must be uint8 (h, w, 3) RGB, got {image.dtype} {image.shape}.")
            yield [resize_for_export(image, height, width)[None]]
            count += 1
        if count == 0:
            raise ValueError("representative_images gave no image.")

    return generate


def quantize_network_only(
    converter, representative_dataset, network_scope: str, float_scope: Optional[str] = None
) -> bytes:
    """Full-integer post-training quantisation of the network's ops only; the rest stays float32.

    The converter first calibrates (runs `representative_dataset` through the
    float TFLite graph and records every activation's range); then only the
    ops whose output tensors lie in the network's name scope (`network_scope`:
    the convolutions, folded batch norms, ReLUs, additions, the corner
    pooling scans, the upsampling) are quantised to int8 kernels. The
    preprocessing and the decoding (sigmoid, top-K, gathers, the soft-NMS
    loop, box arithmetic) keep float32: their recorded ranges are dropped and
    their tensors denylisted, because the quantiser would otherwise carry
    int8 through "same-scale" ops (reshape, gather, top-K, slices) into the
    decoding, where 8 bits cannot hold box coordinates and close scores (and
    where some int8 kernels inside the soft-NMS loop abort the interpreter).
    The graph's input stays uint8 images, its outputs float32 detections.

    Uses the TFLite converter's calibrate-only mode and its MLIR quantiser
    (``tf.lite.python.convert.mlir_quantize``: the functions behind
    ``tf.lite.experimental.QuantizationDebugger``), checked with TensorFlow
    2.20.

    Args:
        converter: a `tf.lite.TFLiteConverter` of the float graph.
        representative_dataset: callable returning an iterable of input lists.
        network_scope: str. Regular expression matching the start of the
            network's tensor names (e.g. ``"centernet(_[0-9]+)?/"``).
        float_scope: str or None. Regular expression (searched) of network
            tensors that stay float32 all the same.

    Returns:
        bytes. The quantised flatbuffer.

    Raises:
        ValueError: no tensor lies in `network_scope` (nothing would be quantised).
    """
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    converter._experimental_calibrate_only = True  # noqa: SLF001 - the debugger's route
    with quiet_absl():
        calibrated = converter.convert()
    return quantize_calibrated(calibrated, network_scope, float_scope)


def quantize_calibrated(calibrated: bytes, network_scope: str, float_scope: Optional[str] = None) -> bytes:
    """The int8 flatbuffer of a calibrated one: tensors matching `network_scope` (and not `float_scope`) int8.

    See `quantize_network_only`.
    """
    from tensorflow.lite.python import convert
    from tensorflow.lite.tools import flatbuffer_utils

    graph = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated))
    quantized = re.compile(network_scope)
    kept = re.compile(float_scope) if float_scope else None
    float_names, network = [], 0
    for subgraph in graph.subgraphs:
        for tensor in subgraph.tensors:
            name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)
            if quantized.match(name) and not (kept and kept.search(name)):
                network += 1
                continue
            float_names.append(name)
            # Without a recorded range the quantiser cannot make it int8.
            if tensor.quantization is not None and tensor.quantization.min is not None:
                tensor.quantization = None
    if not network:
        raise ValueError(f"No tensor of the graph matches the network scope {network_scope!r}.")
    calibrated = bytes(flatbuffer_utils.convert_object_to_bytearray(graph))
    return convert.mlir_quantize(calibrated, denylisted_nodes=float_names)


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
