"""Deployment exports: SavedModel for TF Serving, TFLite, TF-TRT and ONNX.

Modules: `signatures` (the OD API outputs), `module` (`DetectionModule`),
`saved_model`, `tflite`, `tftrt`, `onnx_export`; this file holds `FORMATS`,
the one registry of formats (name, default path, toolchain check, writer)
that ``model.export`` and ``tf-centernet export`` both use: a new format is
one entry here.

Every artifact holds the whole detector: preprocessing (docs/reference.md, "Test-time input"), the
network with its pooling built from the pure-TF scans (``pooling_impl="scan"``,
never the compiled ops), and decoding (the model's `Decoder`, the one `model.predict`
and evaluation run). Only standard TensorFlow
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
- ``tflite``, ``tflite-fp16``, ``tflite-int8``, ``tflite-int8-full``
  (`export_tflite`): one fixed input size ``(1, H, W, 3)`` uint8
  (``input_size``), builtin ops only, float32 / float16 weights /
  dynamic-range int8 weights / full-integer int8 network (weights and
  activations, calibrated on training images, ``representative_images``;
  preprocessing and decoding float32: the fastest CPU format, see
  docs/serving.md, "CPU serving: which engine"). Images of another
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
>>> model = build_model(config.model, decode_config=config.decode)
>>> model.build((None, 127, 127, 3))
>>> module = DetectionModule(model)
>>> out = module.serve(tf.zeros([1, 90, 120, 3], tf.uint8))
>>> sorted(out)
['detection_boxes', 'detection_classes', 'detection_scores', 'num_detections']
>>> out["detection_boxes"].shape
TensorShape([1, 100, 4])
>>> model.export("exports/demo/1")  # doctest: +SKIP
'/.../exports/demo/1'
"""

from __future__ import annotations

import os
from typing import Callable, NamedTuple, Optional, Sequence, Tuple

from tf_centernet.export.module import (
    DEFAULT_MAX_MEGAPIXELS,
    DetectionModule,
    export_model,
    label_map,
    scan_pooling_model,
)
from tf_centernet.export.onnx_export import export_onnx
from tf_centernet.export.saved_model import (
    LABEL_MAP_FILE,
    SERVING_BYTES,
    SERVING_DEFAULT,
    export_saved_model,
)
from tf_centernet.export.signatures import DETECTION_KEYS, to_detection_api
from tf_centernet.export.tflite import (
    export_tflite,
    representative_training_images,
    resize_for_export,
    tflite_interpreter,
)
from tf_centernet.export.tftrt import TENSORRT_HELP, export_tftrt, tensorrt_status
from tf_centernet.models.preprocessor import static_preprocess

__all__ = [
    "FORMATS",
    "ExportFormat",
    "DetectionModule",
    "export_model",
    "scan_pooling_model",
    "label_map",
    "static_preprocess",
    "to_detection_api",
    "export",
    "export_saved_model",
    "export_tflite",
    "export_tftrt",
    "export_onnx",
    "tensorrt_status",
    "tflite_interpreter",
    "representative_training_images",
    "resize_for_export",
    "DETECTION_KEYS",
    "LABEL_MAP_FILE",
    "SERVING_BYTES",
    "SERVING_DEFAULT",
    "TENSORRT_HELP",
]


def _ready() -> Tuple[bool, str]:
    return True, ""


def _tf2onnx_ready() -> Tuple[bool, str]:
    try:
        import tf2onnx  # noqa: F401
    except ImportError:
        return False, 'ONNX export needs tf2onnx and onnx: pip install "tf-centernet-triplets[onnx]".'
    return True, ""


def _tensorrt_ready() -> Tuple[bool, str]:
    available, reason = tensorrt_status()
    return available, "" if available else f"Cannot export to TF-TRT: {reason}. {TENSORRT_HELP}"


class ExportFormat(NamedTuple):
    """One deployment format.

    Attributes:
        name: str. The ``--format`` / ``format=`` name.
        default_path: str. Output under ``MODEL_DIR/export`` (TF Serving
            wants a numbered version folder).
        is_folder: bool. The output is a folder (else one file).
        check: callable ``() -> (ready, message)``: the toolchain is
            installed; run before loading or converting anything.
        write: callable ``(model, output, options) -> path``.
    """

    name: str
    default_path: str
    is_folder: bool
    check: Callable[[], Tuple[bool, str]]
    write: Callable


def _tflite(quantization):
    def write(model, output, o):
        return export_tflite(
            model, output, quantization, o["input_size"], o["flip_test"], o["category_ids"],
            representative_images=o.get("representative_images"),
            calibration_steps=o.get("calibration_images") or 100,
        )
    return write


FORMATS = {
    f.name: f
    for f in (
        ExportFormat(
            "savedmodel", os.path.join("saved_model", "1"), True, _ready,
            lambda model, output, o: export_saved_model(
                model, output, o["category_ids"], o["class_names"], o["flip_test"], o["max_megapixels"]),
        ),
        ExportFormat("tflite", "model.tflite", False, _ready, _tflite("float32")),
        ExportFormat("tflite-fp16", "model_fp16.tflite", False, _ready, _tflite("float16")),
        ExportFormat("tflite-int8", "model_int8.tflite", False, _ready, _tflite("int8")),
        ExportFormat("tflite-int8-full", "model_int8_full.tflite", False, _ready, _tflite("int8-full")),
        ExportFormat(
            "tftrt", os.path.join("tftrt", "1"), True, _tensorrt_ready,
            lambda model, output, o: export_tftrt(
                model, output, input_size=o["input_size"], flip_test=o["flip_test"], category_ids=o["category_ids"]),
        ),
        ExportFormat(
            "onnx", "model.onnx", False, _tf2onnx_ready,
            lambda model, output, o: export_onnx(
                model, output, o["input_size"], o["flip_test"], o["category_ids"]),
        ),
    )
}


def get_format(name: str) -> ExportFormat:
    """The `FORMATS` entry of `name` (``"tf_saved_model"`` is ``"savedmodel"``).

    Raises:
        ValueError: unknown format (the message lists the known ones).
    """
    name = "savedmodel" if name == "tf_saved_model" else name
    if name not in FORMATS:
        raise ValueError(f"format must be one of {sorted(FORMATS)}, got {name!r}.")
    return FORMATS[name]


def export(
    model, output: str,
    format: str = "savedmodel",
    input_size=None, flip_test: Optional[bool] = None, category_ids: Optional[Sequence[int]] = None,
    class_names: Optional[Sequence[str]] = None,
    max_megapixels: Optional[float] = DEFAULT_MAX_MEGAPIXELS,
    representative_images=None,
    calibration_images: int = 100,
) -> str:
    """Exports `model` in one of `FORMATS` (see the module docstring); ``model.export`` calls this.

    Args:
        model: a built `tf_centernet.models.KeypointObjectDetector`.
        output: str. Folder (savedmodel, tftrt) or file (tflite*, onnx).
        format: str. A `FORMATS` name. Defaults to `"savedmodel"`.
        input_size: int, ``(height, width)`` or None. Fixed image size of
            tflite and onnx exports (default: the image converter's
            ``input_size``); engine size for tftrt.
        flip_test: bool or None. Defaults to the model's decoder.
        category_ids, class_names: label map. Defaults to the model's
            ``category_ids`` / ``class_names`` (``1..C`` and their strings).
        max_megapixels: float or None. Image size limit of the SavedModel's
            ``serving_bytes``; see `export_saved_model`.
        representative_images: ``tflite-int8-full`` only (required there):
            uint8 RGB training images (or a callable returning an iterable of
            them) that calibrate the int8 activation ranges;
            `representative_training_images` draws them from a config's
            training data.
        calibration_images: int. At most this many representative images
            are used. Defaults to `100`.

    Returns:
        str. The path written.

    Raises:
        ValueError: unknown format.
        RuntimeError: the format's toolchain is missing (tftrt without
            TensorRT, onnx without tf2onnx), with what to do.
        NotWritableError (an OSError): the output folder cannot be written
            (checked before any work).
    """
    from tf_centernet.filesystem import check_writable

    fmt = get_format(format)
    ready, message = fmt.check()
    if not ready:
        raise RuntimeError(message)
    # Before the conversion (tens of seconds to minutes): can the result be written?
    folder = output if fmt.is_folder else os.path.dirname(os.path.abspath(output))
    check_writable(folder, "export output")
    options = dict(input_size=input_size, flip_test=flip_test, category_ids=category_ids,
                   class_names=class_names, max_megapixels=max_megapixels,
                   representative_images=representative_images, calibration_images=calibration_images)
    return fmt.write(model, output, options)
