"""Detectors: CornerNet and CenterNet on a stacked hourglass."""

from tf_centernet.models import detector as _detector
from tf_centernet.models.detector import (  # noqa: F401
    BACKBONES,
    CenterNet,
    CornerNet,
    KeypointDetector,
    build_model,
    count_trainable_parameters,
)

__all__ = list(_detector.__all__)
