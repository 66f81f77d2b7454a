"""Detectors, the keras-hub way: backbone, preprocessor, task.

- `backbone`: `HourglassBackbone` (named sizes: `tf_centernet.config.BACKBONES`);
- `preprocessor`: `CenterNetImageConverter` (canvas, normalisation, geometry)
  and `CenterNetObjectDetectorPreprocessor`;
- `object_detector`: `CenterNetObjectDetector`, `CornerNetObjectDetector`
  (the task: network, loss, training hooks), with `detection` (the
  test-time path, `DetectionMixin`);
- `presets`: `build_model` (from configuration sections) and `load_preset`
  (keras-hub preset folders).
"""

from tf_centernet.config import BACKBONES
from tf_centernet.models.backbone import HourglassBackbone
from tf_centernet.models.object_detector import (
    CenterNet,
    CenterNetObjectDetector,
    CornerNet,
    CornerNetObjectDetector,
    KeypointDetector,
    KeypointObjectDetector,
)
from tf_centernet.models.preprocessor import CenterNetImageConverter, CenterNetObjectDetectorPreprocessor
from tf_centernet.models.presets import build_model, count_trainable_parameters

__all__ = [
    "BACKBONES",
    "CenterNet",
    "CenterNetImageConverter",
    "CenterNetObjectDetector",
    "CenterNetObjectDetectorPreprocessor",
    "CornerNet",
    "CornerNetObjectDetector",
    "HourglassBackbone",
    "KeypointDetector",
    "KeypointObjectDetector",
    "build_model",
    "count_trainable_parameters",
]
