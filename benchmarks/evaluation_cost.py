"""What the default evaluation cadence costs: one evaluation and one picture vs one training step.

Trains ``--config`` (default ``centernet_small`` on ``coco_tiny``: 80
validation images) for a few steps, then times, on the model as it is:

- a training step (median of `--steps` steps after two warm-up steps);
- an evaluation of the validation set, as `EvaluationCallback` runs it
  every ``train.eval_every`` steps (no flip test; the first one also reads
  the validation data and traces the detection function, the second is the
  steady cost);
- the TensorBoard pictures of `ImageSummaries`.

Prints one JSON line. Run: ``python benchmarks/evaluation_cost.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tf_centernet.config import load_config  # noqa: E402
from tf_centernet.data import build_train_dataset  # noqa: E402
from tf_centernet.data.records import open_dataset  # noqa: E402
from tf_centernet.evaluation import load_image_rgb  # noqa: E402
from tf_centernet.models import build_model  # noqa: E402
from tf_centernet.training.callbacks import EvaluationCallback, ImageSummaries  # noqa: E402
from tf_centernet.training.optimizer import build_optimizer  # noqa: E402


class _StepTimes(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times = []

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", default=None)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--set", nargs="*", default=[])
    args = parser.parse_args()
    config = load_config(args.config or ["centernet_small", "coco_tiny"], args.set)
    model_dir = tempfile.mkdtemp(prefix="evaluation-cost-")
    train = open_dataset(config, "train")
    model = build_model(config.model, config.loss, config.decode, config.data)
    model.compile(optimizer=build_optimizer(config.train))
    model.optimizer.build(model.trainable_variables)
    data = build_train_dataset(train, config, batch_size=config.train.batch_size)
    timer = _StepTimes()
    model.fit(data, epochs=1, steps_per_epoch=args.steps + 2, callbacks=[timer], verbose=0)
    step = float(np.median(timer.times[2:]))

    evaluation = EvaluationCallback(config, model_dir, 1, train.class_names, train.category_ids)
    evaluation.set_model(model)
    seconds = []
    for i in range(2):
        start = time.perf_counter()
        metrics = evaluation.evaluate(i + 1)
        seconds.append(time.perf_counter() - start)
    record = train.records[0]
    pictures = ImageSummaries(config, model_dir, 1, load_image_rgb(record.file_name), record.boxes, record.classes,
                              list(train.class_names))
    pictures.set_model(model)
    picture_seconds = []
    for i in range(2):
        start = time.perf_counter()
        pictures.write_images(i + 1)
        picture_seconds.append(time.perf_counter() - start)
    images = len(evaluation.dataset.records)
    print(json.dumps({
        "config": args.config or ["centernet_small", "coco_tiny"], "batch_size": config.train.batch_size,
        "input_size": config.data.input_size, "validation_images": images, "cpu_count": os.cpu_count(),
        "seconds_per_step": round(step, 3), "first_evaluation_s": round(seconds[0], 1),
        "evaluation_s": round(seconds[1], 1), "evaluation_in_steps": round(seconds[1] / step, 1),
        "pictures_s": round(picture_seconds[1], 2), "first_pictures_s": round(picture_seconds[0], 2),
        "AP": metrics.get("AP"),
    }))


if __name__ == "__main__":
    main()
