"""Deployment exports: SavedModel for TF Serving, TFLite, TF-TRT and ONNX.

Modules: `signatures` (static preprocessing, the OD API outputs), `module`
(`DetectionModule`), `saved_model`, `tflite`, `tftrt`, `onnx_export`.

Every artifact holds the whole detector: preprocessing (docs/reference.md, "Test-time input"), the
network with its pooling built from the pure-TF scans (``pooling_impl="scan"``,
never the compiled ops), and decoding (`tf_centernet.decode.decode_detections`,
the same function `Predictor` and evaluation use). Only standard TensorFlow
ops appear, so nothing from tf_centernet is needed to run an export.

Detections leave every format in the TF Object Detection API convention,
padded to ``decode.max_detections`` (N) rows:

- ``detection_boxes``: float32 `(batch, N, 4)`, ``[ymin, xmin, ymax, xmax]``
  normalised by the image's height and width (so in ``[0, 1]``).
- ``detection_scores``: float32 `(batch, N)`, best first.
- ``detection_classes``: float32 `(batch, N)`, COCO category ids (exact
  integers stored as floats, as the OD API does; class index ``i`` maps to
  the ``i``-th smallest category id of the training annotations).
- ``num_detections``: float32 `(batch,)`.

Rows past ``num_detections`` are zero.

The formats:

- ``savedmodel`` (`export_saved_model`): signatures ``serving_default``
  (uint8 images ``(batch, height, width, 3)``, any size) and
  ``serving_bytes`` (``image_bytes``: a batch of encoded JPEG/PNG/GIF/BMP
  strings, decoded in the graph). Dynamic shapes; for TF Serving.
- ``tflite``, ``tflite-fp16``, ``tflite-int8`` (`export_tflite`): one
  fixed input size ``(1, H, W, 3)`` uint8 (``input_size``), builtin ops only,
  float32 / float16 weights / dynamic-range int8 weights. Images of another
  size are resized to ``H x W`` by the caller; the normalised boxes then
  apply to the original image unchanged.
- ``tftrt`` (`export_tftrt`): the SavedModel's ``serving_default`` through
  TensorFlow's TensorRT converter; needs a TensorFlow build with TensorRT
  (`tensorrt_status`).
- ``onnx`` (`export_onnx`): the fixed-size graph through tf2onnx (the
  optional ``onnx`` extra), for onnxruntime.

Why fixed sizes for TFLite and ONNX: with static spatial shapes the corner
pooling scans unroll into slices, ``maximum`` and ``concat`` (builtins
everywhere); with dynamic shapes they need a ``while`` loop of gathers, and
the canvas size (``size | 127``) needs bitwise ops that TFLite lacks.

Example (the module behind every format; `export` writes the files):

>>> import tensorflow as tf
>>> from tf_centernet.config import load_config
>>> from tf_centernet.models import build_model
>>> config = load_config("demo", ["decode.flip_test=false"])
>>> model = build_model(config.model)
>>> model.build((None, 127, 127, 3))
>>> module = DetectionModule(model, config)
>>> out = module.serve(tf.zeros([1, 90, 120, 3], tf.uint8))
>>> sorted(out)
['detection_boxes', 'detection_classes', 'detection_scores', 'num_detections']
>>> out["detection_boxes"].shape
TensorShape([1, 100, 4])
>>> export(model, config, "exports/demo/1", format="savedmodel")  # doctest: +SKIP
'/.../exports/demo/1'
"""

from __future__ import annotations

from typing import Optional, Sequence

from tf_centernet.config import Config
from tf_centernet.export.module import (
    DEFAULT_MAX_MEGAPIXELS, DetectionModule, label_map_from_config, scan_pooling_model,
)
from tf_centernet.export.onnx_export import export_onnx
from tf_centernet.export.saved_model import (
    LABEL_MAP_FILE,
    SERVING_BYTES,
    SERVING_DEFAULT,
    export_saved_model,
)
from tf_centernet.export.signatures import DETECTION_KEYS, static_preprocess, to_detection_api
from tf_centernet.export.tflite import export_tflite, tflite_interpreter
from tf_centernet.export.tftrt import TENSORRT_HELP, export_tftrt, tensorrt_status

__all__ = [
    "FORMATS",
    "DetectionModule",
    "scan_pooling_model",
    "label_map_from_config",
    "static_preprocess",
    "to_detection_api",
    "export",
    "export_saved_model",
    "export_tflite",
    "export_tftrt",
    "export_onnx",
    "tensorrt_status",
    "tflite_interpreter",
]

FORMATS = ("savedmodel", "tflite", "tflite-fp16", "tflite-int8", "tftrt", "onnx")
# TFLite format -> quantisation of `export_tflite`.
_TFLITE_QUANTIZATION = {"tflite": "float32", "tflite-fp16": "float16", "tflite-int8": "int8"}


def export(
    model, config: Config, output: str,
    format: str = "savedmodel",
    input_size=None, flip_test: Optional[bool] = None, category_ids: Optional[Sequence[int]] = None,
    class_names: Optional[Sequence[str]] = None,
    max_megapixels: Optional[float] = DEFAULT_MAX_MEGAPIXELS,
) -> str:
    """Exports `model` in one of `FORMATS` (see the module docstring).

    Args:
        model: a built detector.
        config: `Config`.
        output: str. Folder (savedmodel, tftrt) or file (tflite*, onnx).
        format: str. One of `FORMATS`. Defaults to `"savedmodel"`.
        input_size: int, ``(height, width)`` or None. Fixed image size of
            tflite and onnx exports (default ``data.input_size``); engine
            size for tftrt.
        flip_test: bool or None. Defaults to ``config.decode.flip_test``.
        category_ids, class_names: label map; see `export_saved_model`.
        max_megapixels: float or None. Image size limit of the SavedModel's
            ``serving_bytes``; see `export_saved_model`.

    Returns:
        str. The path written.

    Raises:
        ValueError: unknown format.
        RuntimeError: tftrt without TensorRT.
        ImportError: onnx without tf2onnx.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}.")
    if format == "savedmodel":
        return export_saved_model(model, config, output, category_ids, class_names, flip_test, max_megapixels)
    if format in _TFLITE_QUANTIZATION:
        return export_tflite(
            model, config, output, _TFLITE_QUANTIZATION[format], input_size, flip_test, category_ids
        )
    if format == "tftrt":
        return export_tftrt(model, config, output, input_size=input_size, flip_test=flip_test,
                            category_ids=category_ids)
    return export_onnx(model, config, output, input_size, flip_test, category_ids)
