"""Deployment exports: SavedModel for TF Serving, TFLite, TF-TRT and ONNX.

Every artifact holds the whole detector: preprocessing (SPEC §7.5), the
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

import contextlib
import json
import logging
import os
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tf_centernet.config import Config
from tf_centernet.decode import ScaleGeometry, decode_detections
from tf_centernet.inference import Predictor

logger = logging.getLogger("tf_centernet")

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
SERVING_DEFAULT = "serving_default"
SERVING_BYTES = "serving_bytes"
LABEL_MAP_FILE = "label_map.json"
DETECTION_KEYS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")


# --------------------------------------------------------------------------
# Model and labels.
# --------------------------------------------------------------------------


def scan_pooling_model(model):
    """A copy of a detector whose directional pooling uses the pure-TF scans.

    Compiled pooling ops (``pooling_impl="custom"`` or ``"auto"``) are
    runtime-specific and absent from TF Serving, TFLite and ONNX; an export
    must only contain the portable scans (`tf_centernet.ops.pooling`). The
    copy is built from ``model.get_config()`` with ``pooling_impl="scan"`` and
    takes the model's weights; the model itself is untouched.

    Args:
        model: a built `KeypointDetector`, or any other callable (returned
            as is: e.g. a test double without pooling).

    Returns:
        A `KeypointDetector` with ``pooling_impl="scan"`` and the same
        weights, or `model` itself when it already uses the scans or is not a
        `KeypointDetector`.

    Raises:
        ValueError: `model` is a `KeypointDetector` that is not built.
    """
    from tf_centernet.models.detector import KeypointDetector

    if not isinstance(model, KeypointDetector) or model.pooling_impl == "scan":
        return model
    if not model.built:
        raise ValueError("Build the model (call it once or `model.build`) before exporting it.")
    config = dict(model.get_config(), pooling_impl="scan")
    copy = type(model).from_config(config)
    # Weight shapes do not depend on the spatial size: any valid size builds.
    size = 4 * 2 ** model.levels - 1
    copy.build((None, size, size, 3))
    copy.set_weights(model.get_weights())
    return copy


def label_map_from_config(config: Config) -> Tuple[List[int], List[str]]:
    """Class index -> COCO category id and name of ``config.train.model_dir``.

    See `tf_centernet.training.class_labels` (the one place this mapping is
    resolved: the model's ``classes.json``, else the annotation files).

    Returns:
        (category_ids, names): two lists of ``model.num_classes`` entries.

    Raises:
        ValueError: another number of categories than ``model.num_classes``.
    """
    from tf_centernet.training import class_labels

    return class_labels(config)


# --------------------------------------------------------------------------
# Graph pieces.
# --------------------------------------------------------------------------


def static_preprocess(
    images: tf.Tensor, scale: float, mean: Sequence[float], std: Sequence[float]
) -> Tuple[tf.Tensor, ScaleGeometry]:
    """`tf_centernet.inference.preprocess_images` for one static image size.

    The same canvas, bit for bit, for a batch of images that all fill the
    batch's ``(height, width)``, but with every size a Python integer: the
    canvas ``(int(h * s) | 127, int(w * s) | 127)`` and the borders are
    constants, so the graph has static shapes and no bitwise or map ops
    (TFLite and ONNX friendly).

    Args:
        images: uint8 tensor `(batch, height, width, 3)` with static height
            and width.
        scale: float. Test scale.
        mean: three floats, RGB, for pixels in [0, 1].
        std: three floats, RGB.

    Returns:
        (canvas, geometry): float32 `(batch, Hc, Wc, 3)` and the batch's
        `ScaleGeometry`.

    Raises:
        ValueError: the height or width is not static, or the scaled image is
            empty.
    """
    height, width = images.shape[1], images.shape[2]
    if height is None or width is None:
        raise ValueError(f"static_preprocess needs a static image size, got {images.shape}.")
    hs, ws = int(height * float(scale)), int(width * float(scale))
    if hs < 1 or ws < 1:
        raise ValueError(f"A {height}x{width} image is smaller than one pixel at scale {scale}.")
    hc, wc = hs | 127, ws | 127
    top, left = hc // 2 - hs // 2, wc // 2 - ws // 2
    x = tf.cast(images, tf.float32)
    if float(scale) != 1.0:
        x = tf.image.resize(x, (hs, ws), method="bilinear")
        x = tf.clip_by_value(tf.round(x), 0.0, 255.0)
    x = tf.pad(x, [[0, 0], [top, hc - hs - top], [left, wc - ws - left], [0, 0]])
    canvas = (x / 255.0 - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)
    batch = tf.shape(images)[0]

    def rows(values):
        # (batch, len(values)) float32 constant rows.
        return tf.tile(tf.constant([values], tf.float32), [batch, 1])

    # Ratios in double, then float32, as `preprocess_images` computes them.
    ratios = [float(np.float32(((hc + 1) // 4) / hc)), float(np.float32(((wc + 1) // 4) / wc))]
    geometry = ScaleGeometry(
        scale=float(scale),
        borders=rows([top, top + hs, left, left + ws]),
        sizes=rows([hs, ws]),
        ratios=rows(ratios),
    )
    return canvas, geometry


def to_detection_api(
    detections: Dict[str, tf.Tensor], image_sizes: tf.Tensor, category_ids: Sequence[int]
) -> Dict[str, tf.Tensor]:
    """`Predictor` detections -> the TF Object Detection API outputs.

    Args:
        detections: dict from `Predictor.predict` / `decode_detections`:
            ``boxes`` `(batch, N, 4)` ``[x1, y1, x2, y2]`` pixels, ``scores``
            `(batch, N)`, ``classes`` int32 `(batch, N)` 0-based,
            ``num_detections`` int32 `(batch,)`.
        image_sizes: int or float tensor `(batch, 2)`. ``(height, width)`` of
            each original image in pixels.
        category_ids: sequence of ints. Class index -> category id.

    Returns:
        dict with ``detection_boxes`` float32 `(batch, N, 4)` ``[ymin, xmin,
        ymax, xmax]`` normalised, ``detection_scores`` float32 `(batch, N)`,
        ``detection_classes`` float32 `(batch, N)` (category ids),
        ``num_detections`` float32 `(batch,)`; rows past ``num_detections``
        are zero.
    """
    sizes = tf.cast(image_sizes, tf.float32)
    height, width = sizes[:, 0:1], sizes[:, 1:2]  # (batch, 1)
    x1, y1, x2, y2 = tf.unstack(tf.cast(detections["boxes"], tf.float32), axis=-1)
    boxes = tf.stack([y1 / height, x1 / width, y2 / height, x2 / width], axis=-1)
    count = tf.cast(detections["num_detections"], tf.int32)
    scores = tf.cast(detections["scores"], tf.float32)
    # (batch, N): rows holding a detection.
    valid = tf.range(tf.shape(scores)[1])[None, :] < count[:, None]
    ids = tf.gather(tf.constant(list(category_ids), tf.float32), detections["classes"])
    return {
        "detection_boxes": tf.where(valid[..., None], boxes, 0.0),
        "detection_scores": tf.where(valid, scores, 0.0),
        "detection_classes": tf.where(valid, ids, 0.0),
        "num_detections": tf.cast(count, tf.float32),
    }


def _decode_image(image_bytes: tf.Tensor) -> tf.Tensor:
    """One encoded image (JPEG, PNG, GIF's first frame, BMP) -> uint8 RGB `(h, w, 3)`."""
    return tf.io.decode_image(image_bytes, channels=3, expand_animations=False)


def _tf_variables(model) -> List[tf.Variable]:
    """The `tf.Variable`s behind a model's (Keras) variables.

    Tracked as plain `tf.Variable`s, the TFLite converter freezes them into
    constants; tracked as Keras variables it keeps them as uninitialised
    resource variables (READ_VARIABLE ops that fail at run time).
    """
    return [
        v if isinstance(v, tf.Variable) else v.value
        for v in getattr(model, "variables", [])
    ]


class _Untracked:
    """Attributes that `tf.Module` must not track (not a `Trackable`)."""

    def __init__(self, **attributes):
        self.__dict__.update(attributes)


class DetectionModule(tf.Module):
    """The exported detector: preprocessing, network and decoding in one graph.

    Args:
        model: a built `KeypointDetector` (copied with the pure-TF pooling,
            see `scan_pooling_model`) or any callable with its output
            contract.
        config: `Config`. Uses ``decode``, ``data.mean``/``data.std`` and
            ``model`` (as `Predictor`).
        category_ids: sequence of ints or None. Class index -> category id.
            Defaults to `label_map_from_config`.
        flip_test: bool or None. Run the horizontally flipped image too.
            Defaults to ``config.decode.flip_test``.

    Attributes:
        serve: `tf.function` ``images uint8 (batch, height, width, 3) ->``
            the `to_detection_api` dict (the ``serving_default`` signature).
        serve_bytes: `tf.function` ``image_bytes string (batch,) ->`` the
            same dict (the ``serving_bytes`` signature). Images may differ
            in size; each is detected on its own (as `serve` on a batch of
            one), so results never depend on the rest of the request.
        heads: `tf.function` ``canvas float32 (batch, Hc, Wc, 3) ->`` the
            raw head outputs (normalised network input; not a serving
            signature, kept for debugging and tests).
        predictor: the `Predictor` used by `serve` and `serve_bytes`.
        model: the detector with the pure-TF pooling (not tracked).
        model_variables: its `tf.Variable`s (what the SavedModel stores).
    """

    def __init__(
        self,
        model,
        config: Config,
        category_ids: Optional[Sequence[int]] = None,
        flip_test: Optional[bool] = None,
    ):
        super().__init__(name="centernet_export")
        model = scan_pooling_model(model)
        # The SavedModel keeps the variables, not the Keras object graph:
        # tracking the model would make `tf.saved_model.save` walk (and trace
        # functions of) every layer, which doubled the export time for nothing
        # a serving runtime uses. A plain holder is not tracked.
        self._holder = _Untracked(model=model)
        self.model_variables = _tf_variables(model)
        if category_ids is None:
            category_ids, _ = label_map_from_config(config)
        self.category_ids = [int(c) for c in category_ids]
        if len(self.category_ids) != config.model.num_classes:
            raise ValueError(
                f"{len(self.category_ids)} category ids for {config.model.num_classes} classes."
            )
        self.predictor = Predictor(self.model, config, flip_test=flip_test)
        self.serve = tf.function(
            self._serve,
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")],
        )
        self.serve_bytes = tf.function(
            self._serve_bytes,
            input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")],
        )
        self.heads = tf.function(
            self._heads,
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="canvas")],
        )

    @property
    def model(self):
        """The exported detector (pure-TF pooling)."""
        return self._holder.model

    def _serve(self, images):
        shape = tf.shape(images)
        sizes = tf.tile(shape[None, 1:3], [shape[0], 1])
        return to_detection_api(self.predictor.predict(images, sizes), sizes, self.category_ids)

    def _serve_bytes(self, image_bytes):
        # One image at a time: each gets its own canvas, so the detections of
        # an image do not depend on the other images of the request.
        def detect_one(encoded):
            image = _decode_image(encoded)[None]  # (1, h, w, 3)
            out = self._serve(image)
            return {key: value[0] for key, value in out.items()}

        n = self.predictor.decode_config.max_detections
        return tf.map_fn(
            detect_one,
            image_bytes,
            fn_output_signature={
                "detection_boxes": tf.TensorSpec([n, 4], tf.float32),
                "detection_scores": tf.TensorSpec([n], tf.float32),
                "detection_classes": tf.TensorSpec([n], tf.float32),
                "num_detections": tf.TensorSpec([], tf.float32),
            },
        )

    def _heads(self, canvas):
        return dict(self.model(canvas, training=False))

    def static_detector(self, height: int, width: int, batch: Optional[int] = 1):
        """A `tf.function` for one image size with static shapes (TFLite, ONNX).

        The same computation as `serve` on ``height x width`` images
        (`static_preprocess` instead of `preprocess_images`; the same model
        and `decode_detections`).

        Args:
            height: int. Image height in pixels.
            width: int. Image width in pixels.
            batch: int or None. Static batch size. Defaults to `1`.

        Returns:
            A `tf.function` with input signature ``images uint8 (batch,
            height, width, 3)`` returning the `to_detection_api` dict.
        """
        predictor = self.predictor

        def detect(images):
            outputs, geometry = [], []
            # Predictor._predict's loop, with static_preprocess in place of
            # preprocess_images (whose canvas size is a run-time value).
            for scale in predictor.scales:
                canvas, geo = static_preprocess(images, scale, predictor.mean, predictor.std)
                if predictor.flip_test:
                    # (2 * batch, Hc, Wc, 3): unflipped first, as decode expects.
                    canvas = tf.concat([canvas, tf.reverse(canvas, axis=[2])], axis=0)
                outputs.append(self.model(canvas, training=False))
                geometry.append(geo)
            detections = decode_detections(
                outputs, geometry, predictor.decode_config,
                use_centers=predictor.use_centers, flip_test=predictor.flip_test,
            )
            sizes = tf.tile(tf.constant([[height, width]], tf.int32), [tf.shape(images)[0], 1])
            return to_detection_api(detections, sizes, self.category_ids)

        return tf.function(
            detect,
            input_signature=[tf.TensorSpec([batch, height, width, 3], tf.uint8, name="images")],
        )

    def static_heads(self, height: int, width: int, batch: Optional[int] = 1):
        """Like `static_detector`, but returns the raw head outputs at scale 1.

        For accelerators that must take the whole graph and cannot run the
        decoding's loops and top-K: decode the outputs with
        `tf_centernet.decode.decode_detections` and the geometry of
        `static_preprocess`. The flipped copy is not run.

        Returns:
            A `tf.function` ``images uint8 (batch, height, width, 3) ->``
            dict of head outputs `(batch, (Hc + 1) / 4, (Wc + 1) / 4, c)`.
        """
        predictor = self.predictor

        def heads(images):
            canvas, _ = static_preprocess(images, 1.0, predictor.mean, predictor.std)
            return dict(self.model(canvas, training=False))

        return tf.function(
            heads,
            input_signature=[tf.TensorSpec([batch, height, width, 3], tf.uint8, name="images")],
        )


# --------------------------------------------------------------------------
# Formats.
# --------------------------------------------------------------------------


def _prepare_output(path: str, is_dir: bool) -> str:
    path = os.path.abspath(path)
    parent = path if is_dir else os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    return path


@contextlib.contextmanager
def _quiet_absl():
    """Hides absl's INFO lines while saving: TF lists every captured variable
    ("contains input name(s) ... with unsupported characters"), thousands of
    names that say nothing to the user."""
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        absl_logger.setLevel(level)


def export_saved_model(
    model,
    config: Config,
    output: str,
    category_ids: Optional[Sequence[int]] = None,
    class_names: Optional[Sequence[str]] = None,
    flip_test: Optional[bool] = None,
) -> str:
    """Writes a SavedModel with the ``serving_default`` and ``serving_bytes`` signatures.

    ``serving_default``: ``images`` uint8 `(batch, height, width, 3)` (RGB,
    any size; one size per request batch). ``serving_bytes``:
    ``image_bytes`` string `(batch,)` of encoded JPEG/PNG images, of any
    sizes, each detected on its own. Both return the `to_detection_api`
    dict. The label map (``[{"id": ..., "name": ...}]`` in class order) is
    saved as the asset ``assets/label_map.json``.

    TF Serving wants a numbered version folder: write to
    ``.../MODEL_NAME/1``.

    Args:
        model: a built detector (see `DetectionModule`).
        config: `Config`.
        output: str. SavedModel folder (created; must not hold a SavedModel).
        category_ids: sequence of ints or None. Defaults to
            `label_map_from_config`.
        class_names: sequence of str or None. Defaults to
            `label_map_from_config` (when `category_ids` is None too) or
            the ids' string form.
        flip_test: bool or None. Defaults to ``config.decode.flip_test``.

    Returns:
        str. The absolute path of the SavedModel folder.

    Raises:
        FileExistsError: `output` already holds a SavedModel.
    """
    output = _prepare_output(output, is_dir=True)
    if os.path.exists(os.path.join(output, "saved_model.pb")):
        raise FileExistsError(f"{output} already holds a SavedModel; choose a new version folder.")
    if category_ids is None:
        category_ids, default_names = label_map_from_config(config)
        class_names = class_names or default_names
    class_names = list(class_names or [str(c) for c in category_ids])
    module = DetectionModule(model, config, category_ids=category_ids, flip_test=flip_test)
    with tempfile.TemporaryDirectory() as tmp:
        label_path = os.path.join(tmp, LABEL_MAP_FILE)
        entries = [{"id": int(i), "name": str(n)} for i, n in zip(module.category_ids, class_names)]
        with open(label_path, "w", encoding="utf-8") as f:
            f.write("[\n" + ",\n".join(json.dumps(e) for e in entries) + "\n]\n")
        module.label_map = tf.saved_model.Asset(label_path)
        signatures = {
            SERVING_DEFAULT: module.serve.get_concrete_function(),
            SERVING_BYTES: module.serve_bytes.get_concrete_function(),
        }
        module.heads.get_concrete_function()
        with _quiet_absl():
            tf.saved_model.save(module, output, signatures=signatures)
    logger.info("Wrote SavedModel %s (signatures %s, %s)", output, SERVING_DEFAULT, SERVING_BYTES)
    return output


def _input_size(config: Config, input_size) -> Tuple[int, int]:
    if input_size is None:
        return config.data.input_size, config.data.input_size
    if isinstance(input_size, int):
        return input_size, input_size
    height, width = (int(v) for v in input_size)
    return height, width


def export_tflite(
    model,
    config: Config,
    output: str,
    quantization: str = "float32",
    input_size=None,
    flip_test: Optional[bool] = None,
    category_ids: Optional[Sequence[int]] = None,
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
        config: `Config`.
        output: str. The `.tflite` file.
        quantization: str. ``"float32"``; ``"float16"`` (weights stored in
            float16, computed in float32 on CPU); ``"int8"`` (dynamic-range:
            weights int8, activations float). Defaults to `"float32"`.
        input_size: int, ``(height, width)`` or None. Defaults to
            ``config.data.input_size``.
        flip_test: bool or None. Defaults to ``config.decode.flip_test``.
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
    height, width = _input_size(config, input_size)
    module = DetectionModule(model, config, category_ids=category_ids, flip_test=flip_test)
    fn = module.static_detector(height, width) if decoding else module.static_heads(height, width)
    concrete = fn.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], module)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    with _quiet_absl():
        flatbuffer = converter.convert()
    output = _prepare_output(output, is_dir=False)
    with open(output, "wb") as f:
        f.write(flatbuffer)
    logger.info("Wrote %s (%s, %dx%d input, %.1f MB)", output, quantization, height, width, len(flatbuffer) / 1e6)
    return output


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
    model,
    config: Config,
    output: str,
    precision: str = "FP16",
    input_size=None,
    flip_test: Optional[bool] = None,
    category_ids: Optional[Sequence[int]] = None,
) -> str:
    """Writes a TF-TRT SavedModel (``serving_default`` only).

    Exports the SavedModel, then converts its ``serving_default`` with
    `tf.experimental.tensorrt.Converter` in dynamic-shape mode: the network's
    convolutions run in TensorRT engines, the pooling scans and decoding stay
    TensorFlow ops. With `input_size` the engines are built for that size
    before saving; otherwise at the first request of each new size.

    Args:
        model, config, flip_test, category_ids: see `export_saved_model`.
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

    output = _prepare_output(output, is_dir=True)  # pragma: no cover
    with tempfile.TemporaryDirectory() as tmp:  # pragma: no cover
        source = export_saved_model(
            model, config, os.path.join(tmp, "saved_model"),
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
            height, width = _input_size(config, input_size)

            def input_fn():
                yield (tf.zeros([1, height, width, 3], tf.uint8),)

            converter.build(input_fn=input_fn)
        converter.save(output)
    logger.info("Wrote TF-TRT SavedModel %s (%s)", output, precision)  # pragma: no cover
    return output  # pragma: no cover


def export_onnx(
    model,
    config: Config,
    output: str,
    input_size=None,
    flip_test: Optional[bool] = None,
    category_ids: Optional[Sequence[int]] = None,
    opset: int = 17,
) -> str:
    """Writes an ONNX model of the fixed-size detector through tf2onnx.

    The graph of `DetectionModule.static_detector` (input ``images`` uint8
    `(1, H, W, 3)`, the `to_detection_api` outputs), converted with
    ``tf2onnx.convert.from_function``. Needs the ``onnx`` extra
    (``pip install "tf-centernet[onnx]"``).

    Args:
        model, config, input_size, flip_test, category_ids: see
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
            "ONNX export needs tf2onnx: pip install \"tf-centernet[onnx]\"."
        ) from error
    height, width = _input_size(config, input_size)
    module = DetectionModule(model, config, category_ids=category_ids, flip_test=flip_test)
    fn = module.static_detector(height, width)
    output = _prepare_output(output, is_dir=False)
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
    if ctx.get_dtype(on_value) == TensorProto.BOOL:
        # onnxruntime has no boolean Where: (hot and on) or (not hot and off).
        cold = ctx.make_node("Not", [hot]).output[0]
        on_part = ctx.make_node("And", [hot, on_value]).output[0]
        off_part = ctx.make_node("And", [cold, off_value]).output[0]
        ctx.replace_inputs(node, [on_part, off_part])
        node.type = "Or"
    else:
        ctx.replace_inputs(node, [hot, on_value, off_value])
        node.type = "Where"
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
    if ctx.get_dtype(node.output[0]) == TensorProto.BOOL:
        negated = ctx.make_node("Not", [condition]).output[0]
        on_part = ctx.make_node("And", [condition, true_value]).output[0]
        off_part = ctx.make_node("And", [negated, false_value]).output[0]
        ctx.replace_inputs(node, [on_part, off_part])
        node.type = "Or"
    else:
        ctx.replace_inputs(node, [condition, true_value, false_value])
        node.type = "Where"
    if "T" in node.attr:
        del node.attr["T"]
    return node


def export(
    model,
    config: Config,
    output: str,
    format: str = "savedmodel",
    input_size=None,
    flip_test: Optional[bool] = None,
    category_ids: Optional[Sequence[int]] = None,
    class_names: Optional[Sequence[str]] = None,
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
        return export_saved_model(model, config, output, category_ids, class_names, flip_test)
    if format in _TFLITE_QUANTIZATION:
        return export_tflite(
            model, config, output, _TFLITE_QUANTIZATION[format], input_size, flip_test, category_ids
        )
    if format == "tftrt":
        return export_tftrt(model, config, output, input_size=input_size, flip_test=flip_test,
                            category_ids=category_ids)
    return export_onnx(model, config, output, input_size, flip_test, category_ids)


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
            "ai-edge-litert is not installed (pip install \"tf-centernet[tflite]\"); "
            "using the deprecated tf.lite.Interpreter."
        )
        Interpreter = tf.lite.Interpreter
    interpreter = Interpreter(model_path=path, num_threads=num_threads)
    interpreter.allocate_tensors()
    return interpreter
