"""tf-centernet-triplets: CenterNet (keypoint triplets) and CornerNet in TensorFlow 2 / Keras 3.

The detectors, the keras-hub way:

>>> import tf_centernet
>>> model = tf_centernet.CenterNetObjectDetector.from_preset("path/to/preset")  # doctest: +SKIP
>>> detections = model.predict([image_uint8_rgb])  # doctest: +SKIP

Public names: `CenterNetObjectDetector`, `CornerNetObjectDetector`,
`HourglassBackbone`, `CenterNetObjectDetectorPreprocessor`,
`CenterNetImageConverter`, `Decoder`, `DecodeConfig`, `load_config`,
`build_model`, `load_detector` (a model directory or a preset). Importing the package registers them with Keras, so
``keras_hub.models.ObjectDetector.from_preset(dir)`` loads our presets.

Packages, in the direction of their imports: `ops` -> `layers`, `decode` ->
`models` -> `targets`, `losses`, `data` -> `training`, `inference`,
`evaluation` -> `export` -> `cli`. The behaviour each implements, with its
sources, is described in docs/reference.md (cited as ``docs/reference.md
§N``); README.md is the tour.
"""

import os as _os

__version__ = "0.1.0"

# TensorFlow's C++ INFO lines at import (oneDNN, "Could not find cuda
# drivers" on CPU machines) say nothing to a user; warnings and errors stay.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from tf_centernet import runtime as _runtime  # noqa: E402

_runtime.list_devices_quietly()  # no CUDA error line on machines without a GPU

from tf_centernet.config import DecodeConfig, load_config  # noqa: E402
from tf_centernet.decode import Decoder  # noqa: E402
from tf_centernet.inference import load_detector  # noqa: E402
from tf_centernet.models import (  # noqa: E402
    CenterNetImageConverter,
    CenterNetObjectDetector,
    CenterNetObjectDetectorPreprocessor,
    CornerNetObjectDetector,
    HourglassBackbone,
    build_model,
)

__all__ = [
    "CenterNetImageConverter",
    "CenterNetObjectDetector",
    "CenterNetObjectDetectorPreprocessor",
    "CornerNetObjectDetector",
    "DecodeConfig",
    "Decoder",
    "HourglassBackbone",
    "build_model",
    "load_config",
    "load_detector",
]
