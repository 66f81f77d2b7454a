"""Detectors: CornerNet and CenterNet on a stacked hourglass."""

from tf_centernet.models.detector import (
    BACKBONES,
    CenterNet,
    CornerNet,
    KeypointDetector,
    build_model,
    count_trainable_parameters,
)

__all__ = [
    "BACKBONES",
    "CenterNet",
    "CornerNet",
    "KeypointDetector",
    "build_model",
    "count_trainable_parameters",
]
