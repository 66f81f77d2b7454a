"""Training with `model.fit` under a `tf.distribute` strategy.

What `train` does, in order:

1. picks a strategy (`get_strategy`): MirroredStrategy over the visible GPUs
   when there are any, else one device (the CPU);
2. reads the data (COCO, Pascal VOC or TFRecord:
   `tf_centernet.data.records.open_dataset`) and builds the
   `tf.data` pipeline (augmentation and targets in-graph);
3. builds the model and Adam with the piecewise-constant schedule of docs/reference.md §6
   (learning rate x decay_rate after each of `decay_steps`);
4. restores the latest checkpoint of `model_dir/checkpoints` if there is
   one (model, optimizer state and step), so re-running an interrupted
   command resumes where it stopped; otherwise loads `train.init_from` (a
   converted or trained model directory, or a release snapshot) if set,
   re-initializing the heatmap output layers when the class count differs
   (`tf_centernet.convert.finetune`);
5. runs `fit` with a progress bar, a checkpoint every `checkpoint_every`
   steps and at the end, TensorBoard scalars of every loss term in
   `model_dir/logs`, and stops exactly at `total_steps`.

The input pipeline's position is not checkpointed: a resumed run starts a
new shuffle and continues the augmentation seeds from the number of images
already seen, so it neither replays nor reproduces the interrupted run's
batches exactly.
"""

from __future__ import annotations

import logging
import math
import os
import re

import keras
import tensorflow as tf

from tf_centernet import config as config_lib
from tf_centernet.data.labels import CLASSES_FILE, class_labels, read_classes, write_classes  # noqa: F401
from tf_centernet.models.detector import build_model

logger = logging.getLogger("tf_centernet")

CHECKPOINT_SUBDIR = "checkpoints"


def get_strategy(kind="auto"):
    """The distribution strategy for training.

    Args:
        kind: str. "auto" (MirroredStrategy over all visible GPUs if there
            is at least one, else the one-device CPU strategy), "mirrored"
            (MirroredStrategy over all visible devices of the first kind
            found: GPUs, else logical CPUs) or "one_device".

    Returns:
        A `tf.distribute.Strategy`.

    Raises:
        ValueError: unknown `kind`.
    """
    if kind not in ("auto", "mirrored", "one_device"):
        raise ValueError(f"strategy must be 'auto', 'mirrored' or 'one_device', got {kind!r}.")
    gpus = tf.config.list_logical_devices("GPU")
    if kind == "auto":
        if gpus:
            return tf.distribute.MirroredStrategy([d.name for d in gpus])
        return tf.distribute.OneDeviceStrategy("/cpu:0")
    if kind == "mirrored":
        devices = gpus or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")


def learning_rate_schedule(train_config):
    """Piecewise-constant learning rate (docs/reference.md §6).

    Args:
        train_config: `TrainConfig`: learning_rate, decay_steps, decay_rate.

    Returns:
        A `keras.optimizers.schedules.LearningRateSchedule` (or the float
        rate when there is no decay step).
    """
    boundaries = sorted(int(s) for s in train_config.decay_steps)
    if not boundaries:
        return train_config.learning_rate
    values = [train_config.learning_rate * train_config.decay_rate**i for i in range(len(boundaries) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def checkpoint_path(model_dir, step):
    """The checkpoint file of `step`: MODEL_DIR/checkpoints/ckpt-STEP.weights.h5."""
    return os.path.join(model_dir, CHECKPOINT_SUBDIR, f"ckpt-{int(step)}.weights.h5")


def list_checkpoints(model_dir):
    """(step, path) of every complete checkpoint in `model_dir`, oldest first."""
    folder = os.path.join(model_dir, CHECKPOINT_SUBDIR)
    found = []
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            match = re.fullmatch(r"ckpt-(\d+)\.weights\.h5", name)
            if match:
                found.append((int(match.group(1)), os.path.join(folder, name)))
    return sorted(found)


def latest_checkpoint(model_dir):
    """Path of the newest checkpoint in `model_dir`, or None."""
    found = list_checkpoints(model_dir)
    return found[-1][1] if found else None


def save_checkpoint(model, model_dir, step, keep):
    """Writes model + optimizer state (Keras `.weights.h5`) and prunes old ones.

    The file is written under a temporary name and renamed, so a process
    killed while saving never leaves a truncated "latest" checkpoint.
    Keras' weights file holds the optimizer's variables (moments and step
    count) when the model is compiled, so a resumed run continues exactly.
    """
    path = checkpoint_path(model_dir, step)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = os.path.join(os.path.dirname(path), f".partial-ckpt-{int(step)}.weights.h5")
    model.save_weights(partial, overwrite=True)
    os.replace(partial, path)
    for _, old in list_checkpoints(model_dir)[: -max(1, keep)]:
        os.remove(old)
    return path


class CheckpointCallback(keras.callbacks.Callback):
    """Saves model + optimizer every `every` optimiser steps and at the end.

    Args:
        model_dir: str. Checkpoints go to ``model_dir/checkpoints``.
        every: int. Steps between checkpoints.
        keep: int. Number of newest checkpoints kept.
    """

    def __init__(self, model_dir, every, keep=3):
        super().__init__()
        self.model_dir = model_dir
        self.every = max(1, int(every))
        self.keep = keep
        self.last_saved = None

    def _save(self):
        step = int(self.model.optimizer.iterations.numpy())
        if step != self.last_saved:
            save_checkpoint(self.model, self.model_dir, step, self.keep)
            self.last_saved = step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) % self.every == 0:
            self._save()

    def on_train_end(self, logs=None):
        self._save()


class StopAtStep(keras.callbacks.Callback):
    """Ends `fit` once the optimizer has made `total_steps` steps."""

    def __init__(self, total_steps):
        super().__init__()
        self.total_steps = int(total_steps)

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) >= self.total_steps:
            self.model.stop_training = True


def load_trained_model(config, checkpoint):
    """A built model with weights from a checkpoint, for inference.

    Args:
        config: `Config`.
        checkpoint: str. A model directory (its latest checkpoint is used)
            or a `.weights.h5` file.

    Returns:
        `KeypointDetector` built for `config.data.input_size`.

    Raises:
        FileNotFoundError: no checkpoint there.
    """
    model = build_model(config.model, config.loss, config.decode)
    size = config.data.input_size
    model.build((None, size, size, 3))
    path = latest_checkpoint(checkpoint) if os.path.isdir(checkpoint) else checkpoint
    if not path or not path.endswith(".weights.h5") or not os.path.isfile(path):
        raise FileNotFoundError(
            f"No checkpoint found at {checkpoint!r} (expected a model directory "
            f"with {CHECKPOINT_SUBDIR}/ckpt-STEP.weights.h5, or a .weights.h5 file)."
        )
    model.load_weights(path)
    logger.info("Loaded weights from %s", path)
    return model


def train(config, strategy=None, verbose=1, extra_callbacks=()):
    """Trains (or resumes training) as described in the module docstring.

    Args:
        config: `tf_centernet.config.Config`.
        strategy: `tf.distribute.Strategy` or None for `get_strategy()`.
        verbose: int. Keras progress display (1: progress bar).
        extra_callbacks: more Keras callbacks.

    Returns:
        (model, history): the trained `KeypointDetector` and the Keras
        `History` of this run (empty if training was already complete).

    Raises:
        ValueError: the data's number of classes differs from the model's,
            or `train.init_from` does not match the model beyond its class
            count (the message names the first mismatching keys).
        FileNotFoundError: `train.init_from` does not exist.
        ImportError: `train.init_from` is a snapshot and torch is missing.
    """
    from tf_centernet.data import build_train_dataset
    from tf_centernet.data.records import open_dataset

    tc = config.train
    model_dir = tc.model_dir
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, "config.yaml"), "w", encoding="utf-8") as f:
        f.write(config_lib.to_yaml(config))
    keras.utils.set_random_seed(tc.seed)
    if tc.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")

    dataset = open_dataset(config, "train")
    from tf_centernet.data.check import check_dataset

    report = check_dataset(dataset, config, decode_images=False)
    (logger.warning if report.counts else logger.info)("Data check: %s", report.summary())
    if dataset.num_classes != config.model.num_classes:
        raise ValueError(
            f"The annotations have {dataset.num_classes} categories but "
            f"model.num_classes is {config.model.num_classes}; set "
            f"model.num_classes={dataset.num_classes}."
        )
    write_classes(model_dir, dataset)
    strategy = strategy or get_strategy(tc.strategy)
    logger.info(
        "Training on %d images, %d replica(s), global batch %d",
        len(dataset.records), strategy.num_replicas_in_sync, tc.batch_size,
    )
    size = config.data.input_size
    with strategy.scope():
        model = build_model(config.model, config.loss)
        model.build((None, size, size, 3))
        optimizer = keras.optimizers.Adam(learning_rate_schedule(tc))
        model.compile(optimizer=optimizer, jit_compile=False)
        optimizer.build(model.trainable_variables)
        resume_from = latest_checkpoint(model_dir)
        if resume_from:
            model.load_weights(resume_from)
            logger.info("Resumed from %s (step %d)", resume_from, int(optimizer.iterations.numpy()))
            if tc.init_from:
                logger.info("train.init_from=%s ignored: resuming from %s", tc.init_from, resume_from)
        elif tc.init_from:
            from tf_centernet.convert.finetune import initialize_from

            initialize_from(model, tc.init_from)

    step = int(optimizer.iterations.numpy())
    if step >= tc.total_steps:
        logger.info("Training already complete: step %d >= total_steps %d", step, tc.total_steps)
        return model, keras.callbacks.History()
    # A resumed run continues the random stream instead of replaying it.
    data = build_train_dataset(
        dataset, config, batch_size=tc.batch_size, start_element=step * tc.batch_size
    )
    steps_per_epoch = max(1, min(tc.steps_per_epoch, tc.total_steps))
    callbacks = [
        CheckpointCallback(model_dir, tc.checkpoint_every, tc.keep_checkpoints),
        StopAtStep(tc.total_steps),
        keras.callbacks.TensorBoard(
            os.path.join(model_dir, "logs"), update_freq=max(1, min(100, tc.checkpoint_every))
        ),
        *extra_callbacks,
    ]
    history = model.fit(
        data,
        epochs=math.ceil(tc.total_steps / steps_per_epoch),
        initial_epoch=step // steps_per_epoch,
        steps_per_epoch=steps_per_epoch,
        callbacks=callbacks,
        verbose=verbose,
        shuffle=False,  # the pipeline shuffles
    )
    return model, history
