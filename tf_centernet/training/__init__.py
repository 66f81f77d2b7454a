"""Training: one home for the model, optimizer, data and callbacks of a run.

- `task`: `train` (build the model, the optimizer with its schedule, the
  datasets and the callbacks; lock, resume, fit);
- `optimizer`: the optimizer of ``train.optimizer`` behind the non-finite
  guard (`NonFiniteGuardOptimizer`, a wrapper over any Keras optimizer);
- `callbacks`: every Keras callback of a run (checkpoints, guards, stop,
  progress, evaluation, pictures);
- `distribute`: strategies and the roles of workers (``TF_CONFIG``).

Checkpoint files themselves are `tf_centernet.checkpoints` (storage only);
the paths of a model directory are `tf_centernet.model_dir.ModelDirectory`.
"""

from tf_centernet.training.task import train

__all__ = ["train"]
