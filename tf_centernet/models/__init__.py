"""Detectors, the keras-hub way: backbone, preprocessor, task.

- `backbone`: `HourglassBackbone` (named sizes: `tf_centernet.config.BACKBONES`);
- `preprocessor`: `CenterNetImageConverter` (canvas, normalisation, geometry)
  and `CenterNetObjectDetectorPreprocessor`;
- `object_detector`: `CenterNetObjectDetector`, `CornerNetObjectDetector`,
  `build_model` (from configuration sections).
"""

from tf_centernet.models.backbone import HourglassBackbone
from tf_centernet.models.object_detector import (
    BACKBONES,
    CenterNet,
    CenterNetObjectDetector,
    CornerNet,
    CornerNetObjectDetector,
    KeypointDetector,
    KeypointObjectDetector,
    build_model,
    count_trainable_parameters,
)
from tf_centernet.models.preprocessor import CenterNetImageConverter, CenterNetObjectDetectorPreprocessor

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
