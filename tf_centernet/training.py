"""Training with `model.fit` under a `tf.distribute` strategy.

What `train` does, in order:

1. picks a strategy (`get_strategy`): MirroredStrategy over the visible GPUs
   when there are any, else one device (the CPU);
2. reads the data (COCO, Pascal VOC or TFRecord:
   `tf_centernet.data.records.open_dataset`) and builds the
   `tf.data` pipeline (augmentation and targets in-graph);
3. builds the model and Adam with the piecewise-constant schedule of docs/reference.md §6
   (learning rate x decay_rate after each of `decay_steps`);
4. locks the model directory (`tf_centernet.guards.ModelDirLock`: a second
   `train` into it fails with a clear error), removes leftovers of killed
   saves, and restores the newest usable checkpoint of
   `model_dir/checkpoints` if there is one (model, optimizer state and
   step; see `tf_centernet.checkpoints`), so re-running an interrupted
   command resumes where it stopped; otherwise loads `train.init_from` (a
   converted or trained model directory, or a release snapshot) if set,
   re-initializing the heatmap output layers when the class count differs
   (`tf_centernet.convert.finetune`);
5. writes `config.yaml` and `classes.json` (only now that the
   configuration, data and checkpoint validated);
6. runs `fit` with a progress bar, an atomic checkpoint every
   `checkpoint_every` steps and at the end, TensorBoard scalars of every
   loss term in `model_dir/logs`, and stops exactly at `total_steps`; a
   non-finite loss stops or skips (``train.on_nonfinite``), Ctrl-C /
   SIGTERM saves and stops (`tf_centernet.guards`).

The input pipeline's position is not checkpointed: a resumed run starts a
new shuffle and continues the augmentation seeds from the number of images
already seen, so it neither replays nor reproduces the interrupted run's
batches exactly.
"""

from __future__ import annotations

import logging
import math
import os

import keras
import tensorflow as tf

from tf_centernet import config as config_lib
from tf_centernet.checkpoints import (  # noqa: F401  (re-exported: public names of this module)
    CHECKPOINT_SUBDIR,
    CheckpointCallback,
    CheckpointError,
    atomic_write_text,
    checkpoint_path,
    cleanup_partials,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from tf_centernet.guards import NONFINITE_POLICIES, GuardedAdam, InterruptGuard, ModelDirLock, NonFiniteGuard
from tf_centernet.data.labels import CLASSES_FILE, class_labels, read_classes, write_classes  # noqa: F401
from tf_centernet.models.detector import build_model

logger = logging.getLogger("tf_centernet")


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
        checkpoint: str. A model directory (its newest usable checkpoint:
            an unusable newer one is skipped with a logged warning, see
            `tf_centernet.checkpoints.load_checkpoint`) or a `.weights.h5`
            file.

    Returns:
        `KeypointDetector` built for `config.data.input_size`.

    Raises:
        FileNotFoundError: no checkpoint there.
        CheckpointError (a ValueError): the named file, or every checkpoint
            of the directory, is corrupt, truncated or does not fit the
            model.
    """
    model = build_model(config.model, config.loss, config.decode)
    size = config.data.input_size
    model.build((None, size, size, 3))
    is_dir = os.path.isdir(checkpoint)
    path = None
    if is_dir or (os.path.isfile(checkpoint) and checkpoint.endswith(".weights.h5")):
        path = load_checkpoint(model, checkpoint)
    if not path:
        raise FileNotFoundError(
            f"No checkpoint found at {checkpoint!r} (expected a model directory "
            f"with {CHECKPOINT_SUBDIR}/ckpt-STEP.weights.h5, or a .weights.h5 file)."
        )
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
            count (the message names the first mismatching keys), or a bad
            ``train.on_nonfinite``.
        FileNotFoundError: `train.init_from` does not exist.
        ImportError: `train.init_from` is a snapshot and torch is missing.
        CheckpointError (a ValueError): no checkpoint of the model directory
            is usable, or they do not fit the model.
        ModelDirLocked: another live process trains into the same model
            directory.
        NonFiniteLossError: a non-finite loss stopped training (see
            `tf_centernet.guards`).
        TrainingInterrupted: SIGINT / SIGTERM (after saving a checkpoint
            when a step finished since the last one).
    """
    from tf_centernet.data.check import check_dataset
    from tf_centernet.data.records import open_dataset

    tc = config.train
    model_dir = tc.model_dir
    if tc.on_nonfinite not in NONFINITE_POLICIES:
        raise ValueError(f"train.on_nonfinite must be one of {NONFINITE_POLICIES}, got {tc.on_nonfinite!r}.")
    keras.utils.set_random_seed(tc.seed)
    if tc.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")

    dataset = open_dataset(config, "train")
    report = check_dataset(dataset, config, decode_images=False)
    (logger.warning if report.counts else logger.info)("Data check: %s", report.summary())
    if dataset.num_classes != config.model.num_classes:
        raise ValueError(
            f"The annotations have {dataset.num_classes} categories but "
            f"model.num_classes is {config.model.num_classes}; set "
            f"model.num_classes={dataset.num_classes}."
        )
    # One writer per model directory; config.yaml and classes.json are
    # written once the data validated and the checkpoint (if any) loaded.
    with ModelDirLock(model_dir), InterruptGuard() as interrupt:
        cleanup_partials(model_dir)
        return _train_locked(config, dataset, strategy, verbose, extra_callbacks, interrupt)


def _train_locked(config, dataset, strategy, verbose, extra_callbacks, interrupt):
    """`train` once the model directory is locked."""
    from tf_centernet.data import build_train_dataset

    tc = config.train
    model_dir = tc.model_dir
    strategy = strategy or get_strategy(tc.strategy)
    logger.info(
        "Training on %d images, %d replica(s), global batch %d",
        len(dataset.records), strategy.num_replicas_in_sync, tc.batch_size,
    )
    size = config.data.input_size
    with strategy.scope():
        model = build_model(config.model, config.loss)
        model.build((None, size, size, 3))
        optimizer = GuardedAdam(learning_rate_schedule(tc))
        model.compile(optimizer=optimizer, jit_compile=False)
        optimizer.build(model.trainable_variables)
        resume_from = load_checkpoint(model, model_dir)
        if resume_from:
            logger.info("Resumed from %s (step %d)", resume_from, int(optimizer.iterations.numpy()))
            if tc.init_from:
                logger.info("train.init_from=%s ignored: resuming from %s", tc.init_from, resume_from)
        elif tc.init_from:
            from tf_centernet.convert.finetune import initialize_from

            initialize_from(model, tc.init_from)
    atomic_write_text(os.path.join(model_dir, "config.yaml"), config_lib.to_yaml(config))
    write_classes(model_dir, dataset)

    step = int(optimizer.iterations.numpy())
    if step >= tc.total_steps:
        logger.info("Training already complete: step %d >= total_steps %d", step, tc.total_steps)
        return model, keras.callbacks.History()
    # A resumed run continues the random stream instead of replaying it.
    data = build_train_dataset(
        dataset, config, batch_size=tc.batch_size, start_element=step * tc.batch_size
    )
    steps_per_epoch = max(1, min(tc.steps_per_epoch, tc.total_steps))
    checkpoints = CheckpointCallback(
        model_dir, tc.checkpoint_every, tc.keep_checkpoints, last_saved=step  # saved, or step 0: nothing to save
    )
    guard = NonFiniteGuard(tc.on_nonfinite, tc.max_consecutive_nonfinite, checkpoints)
    callbacks = [
        guard,  # before checkpoints: a non-finite step blocks the save
        interrupt,
        checkpoints,
        StopAtStep(tc.total_steps),
        keras.callbacks.TensorBoard(
            os.path.join(model_dir, "logs"), update_freq=max(1, min(100, tc.checkpoint_every))
        ),
        *extra_callbacks,
    ]
    epochs = math.ceil(tc.total_steps / steps_per_epoch)
    if tc.on_nonfinite == "skip":  # skipped steps do not count: StopAtStep ends the run
        epochs *= 2 + tc.max_consecutive_nonfinite
    history = model.fit(
        data,
        epochs=epochs,
        initial_epoch=step // steps_per_epoch,
        steps_per_epoch=steps_per_epoch,
        callbacks=callbacks,
        verbose=verbose,
        shuffle=False,  # the pipeline shuffles
    )
    if guard.skipped:
        logger.warning("Skipped %d non-finite step(s) in this run.", guard.skipped)
    if guard.error is not None:
        raise guard.error
    if interrupt.signum is not None:
        step = int(optimizer.iterations.numpy())
        saved = checkpoint_path(model_dir, step)
        raise interrupt.error(step, saved if checkpoints.last_saved == step and os.path.isfile(saved) else None)
    return model, history
