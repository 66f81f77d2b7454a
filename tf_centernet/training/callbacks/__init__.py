"""Every Keras callback of a training run, in one place.

Run control (`control`): `StopAtStep`, `NonFiniteGuard`, `InterruptGuard`
(and the errors they raise, `NonFiniteLossError`, `TrainingInterrupted`).
Checkpoints (`checkpointing`): `CheckpointCallback`,
`WorkerCheckpointCallback`. Watching (`monitoring`): `ProgressLog`,
`EvaluationCallback`, `ImageSummaries`.

`tf_centernet.training.task.build_callbacks` puts them together in the
order `fit` needs (the guard before the checkpoints, so that a non-finite
step blocks the save).
"""

from tf_centernet.training.callbacks.checkpointing import CheckpointCallback, WorkerCheckpointCallback
from tf_centernet.training.callbacks.control import (
    InterruptGuard,
    NonFiniteGuard,
    NonFiniteLossError,
    StopAtStep,
    TrainingInterrupted,
)
from tf_centernet.training.callbacks.monitoring import EvaluationCallback, ImageSummaries, ProgressLog

__all__ = [
    "CheckpointCallback",
    "EvaluationCallback",
    "ImageSummaries",
    "InterruptGuard",
    "NonFiniteGuard",
    "NonFiniteLossError",
    "ProgressLog",
    "StopAtStep",
    "TrainingInterrupted",
    "WorkerCheckpointCallback",
]
