"""Training with `model.fit` under a `tf.distribute` strategy.

What `train` does, in order:

1. picks a strategy (`get_strategy`): MirroredStrategy over the visible GPUs
   when there are any, else one device (the CPU);
2. reads the data (COCO, Pascal VOC or TFRecord:
   `tf_centernet.data.records.open_dataset`) and builds the
   `tf.data` pipeline (augmentation and targets in-graph);
3. builds the model and Adam with the piecewise-constant schedule of docs/reference.md §6
   (learning rate x decay_rate after each of `decay_steps`);
4. checks that the model directory and its ``checkpoints/`` folder take
   new files (`tf_centernet.guards.check_writable`) and that
   ``train.init_from`` exists, before anything is created; locks the model
   directory (`tf_centernet.guards.ModelDirLock`: a second
   `train` into it fails with a clear error; a run that fails before
   writing anything leaves no folder or lock file it created), removes
   leftovers of killed saves, checks that one checkpoint fits in the free
   space, and restores the newest usable checkpoint of
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
   SIGTERM saves and stops (`tf_centernet.guards`); a checkpoint that
   cannot be written (disk full, read-only) stops training with one
   message naming the steps lost (`tf_centernet.checkpoints.CheckpointCallback`).

The input pipeline's position is not checkpointed: a resumed run starts a
new shuffle and continues the augmentation seeds from the number of images
already seen, so it neither replays nor reproduces the interrupted run's
batches exactly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os

import keras

from tf_centernet import config as config_lib
from tf_centernet import distribute
from tf_centernet.checkpoints import (  # noqa: F401  (re-exported: public names of this module)
    CHECKPOINT_SUBDIR,
    CheckpointCallback,
    CheckpointError,
    CheckpointWriteError,
    checkpoint_bytes,
    atomic_write_text,
    checkpoint_path,
    cleanup_partials,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from tf_centernet.callbacks import WorkerCheckpointCallback, progress_mode, watch_callbacks
from tf_centernet.guards import (
    LOCK_FILE,
    GuardedAdam,
    InterruptGuard,
    ModelDirLock,
    NonFiniteGuard,
    NotWritableError,
    check_writable,
    display_path,
)
from tf_centernet.data.labels import CLASSES_FILE, class_labels, read_classes, write_classes  # noqa: F401
from tf_centernet.models.object_detector import build_model
from tf_centernet.inference import load_trained_model  # noqa: F401  (its earlier home)

logger = logging.getLogger("tf_centernet")


def get_strategy(kind="auto"):
    """The distribution strategy for training: `tf_centernet.distribute.get_strategy`."""
    return distribute.get_strategy(kind)


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


def train(config, strategy=None, verbose=1, extra_callbacks=(), progress=None):
    """Trains (or resumes training) as described in the module docstring.

    Args:
        config: `tf_centernet.config.Config`.
        strategy: `tf.distribute.Strategy` or None for `get_strategy()`.
        verbose: int. Keras progress display (1: progress bar).
        extra_callbacks: more Keras callbacks.
        progress: "bar" (Keras' progress bar), "log" (one plain line per
            ``train.log_every`` steps, `tf_centernet.callbacks.ProgressLog`),
            "none", or None: "bar" when stdout is a terminal, else "log";
            "none" when `verbose` is 0.

    Returns:
        (model, history): the trained `KeypointDetector` and the Keras
        `History` of this run (empty if training was already complete).

    Raises:
        ValueError: the data's number of classes differs from the model's,
            the training data hold no object at all, or `train.init_from`
            does not match the model beyond its class count (the message
            names the first mismatching keys), or a bad
            ``train.on_nonfinite``.
        FileNotFoundError: `train.init_from` does not exist (checked
            before the model directory is created or locked).
        NotWritableError (an OSError): the model directory or its
            ``checkpoints/`` folder cannot take new files, or one
            checkpoint would not fit in the free space.
        CheckpointWriteError: a checkpoint could not be written during
            training (disk full, read-only); the message says how many
            steps are lost. Nothing partial is left.
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
    config_lib.check_choice("train.on_nonfinite", tc.on_nonfinite)
    # MultiWorkerMirroredStrategy must exist before other TensorFlow ops run.
    strategy = strategy or get_strategy(tc.strategy)
    keras.utils.set_random_seed(tc.seed)
    # model.compute_dtype (the one precision setting) is applied by
    # build_model; float16 gets Keras' loss scaling when compiled.

    chief = distribute.strategy_is_chief(strategy)
    if chief:  # before reading the data: fail in seconds, not after minutes of work
        check_writable(model_dir, "train.model_dir (--model-dir)")
        check_writable(os.path.join(model_dir, CHECKPOINT_SUBDIR), "the checkpoint folder")
    if tc.init_from and not os.path.exists(tc.init_from):
        raise FileNotFoundError(
            f"train.init_from (--init-from): no model directory or snapshot at {display_path(tc.init_from)}."
        )
    dataset = open_dataset(config, "train")
    report = check_dataset(dataset, config, decode_images=False)
    (logger.warning if report.counts else logger.info)("Data check: %s", report.summary())
    if dataset.num_classes != config.model.num_classes:
        raise ValueError(
            f"The annotations have {dataset.num_classes} categories but "
            f"model.num_classes is {config.model.num_classes}; set "
            f"model.num_classes={dataset.num_classes}."
        )
    if dataset.records and not report.objects:
        raise ValueError(f"No object to train on: {report.zero_objects_reason()}")
    # One writer per model directory; config.yaml and classes.json are
    # written once the data validated and the checkpoint (if any) loaded.
    # Only the chief of a multi-worker job writes (and locks) the model directory.
    created = chief and not os.path.exists(model_dir)
    try:
        with (ModelDirLock(model_dir) if chief else contextlib.nullcontext()), InterruptGuard() as interrupt:
            if chief:
                cleanup_partials(model_dir)
            mode = progress_mode(progress, verbose)
            return _train_locked(config, dataset, strategy, mode, extra_callbacks, interrupt, chief)
    except BaseException:
        if created:
            _remove_if_unused(model_dir)
        raise


def _remove_if_unused(model_dir):
    """Removes a model directory this run created when it holds nothing but the lock file.

    A run that failed before writing anything (bad checkpoint, init_from,
    data) then leaves no trace; anything else in the folder keeps it.
    """
    try:
        names = set(os.listdir(model_dir))
        if names - {LOCK_FILE, CHECKPOINT_SUBDIR}:
            return
        checkpoints = os.path.join(model_dir, CHECKPOINT_SUBDIR)
        if CHECKPOINT_SUBDIR in names:
            if os.listdir(checkpoints):
                return
            os.rmdir(checkpoints)
        if LOCK_FILE in names:
            os.remove(os.path.join(model_dir, LOCK_FILE))
        os.rmdir(model_dir)
    except OSError:
        pass  # someone else is using it: leave it


def _check_free_space(model, model_dir):
    """Fails when one checkpoint of `model` cannot fit in `model_dir`; warns when `keep` + 1 may not."""
    need = checkpoint_bytes(model)
    try:
        stat = os.statvfs(model_dir)
    except (OSError, AttributeError):
        return
    free = stat.f_bavail * stat.f_frsize
    if free < need:
        import errno

        raise NotWritableError(
            errno.ENOSPC,
            f"train.model_dir (--model-dir) {display_path(model_dir)}: {free / 2**20:.1f} MiB free, but one "
            f"checkpoint takes about {need / 2**20:.1f} MiB; free space on that file system or train into "
            "another --model-dir.",
        )
    return need, free


def _train_locked(config, dataset, strategy, mode, extra_callbacks, interrupt, chief=True):
    """`train` once the model directory is locked."""
    from tf_centernet.data import build_train_dataset

    tc = config.train
    model_dir = tc.model_dir
    if tc.jit_compile and config.model.pooling_impl != "scan":
        logger.info("train.jit_compile: the pooling uses the pure-TF scans (XLA cannot compile the custom op).")
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, pooling_impl="scan"))
    logger.info(
        "Training on %d images, %d replica(s), global batch %d",
        len(dataset.records), strategy.num_replicas_in_sync, tc.batch_size,
    )
    size = config.data.input_size
    with strategy.scope():
        model = build_model(config.model, config.loss, config.decode, config.data)
        model.build((None, size, size, 3))
        optimizer = GuardedAdam(learning_rate_schedule(tc))
        model.compile(optimizer=optimizer, jit_compile=bool(tc.jit_compile))
        optimizer.build(model.trainable_variables)
        if chief:
            room = _check_free_space(model, model_dir)
            if room and room[1] < (tc.keep_checkpoints + 1) * room[0]:
                logger.warning(
                    "%s has %.1f MiB free; %d checkpoints of about %.1f MiB are kept (train.keep_checkpoints) "
                    "plus the one being written: training stops with a clear message when the disk fills.",
                    display_path(model_dir), room[1] / 2**20, tc.keep_checkpoints, room[0] / 2**20,
                )
        resume_from = load_checkpoint(model, model_dir)
        if resume_from:
            logger.info("Resumed from %s (step %d)", resume_from, int(optimizer.iterations.numpy()))
            if tc.init_from:
                logger.info("train.init_from=%s ignored: resuming from %s", tc.init_from, resume_from)
        elif tc.init_from:
            from tf_centernet.convert.finetune import initialize_from

            initialize_from(model, tc.init_from)
    if not distribute.all_equal_across_workers(strategy, int(optimizer.iterations.numpy())):
        raise CheckpointError(
            f"The workers restored different steps from {model_dir} (this worker: "
            f"{int(optimizer.iterations.numpy())}); the model directory must be storage all workers share."
        )
    if chief:
        atomic_write_text(os.path.join(model_dir, "config.yaml"), config_lib.to_yaml(config))
        write_classes(model_dir, dataset)

    step = int(optimizer.iterations.numpy())
    if step >= tc.total_steps:
        logger.info("Training already complete: step %d >= total_steps %d", step, tc.total_steps)
        return model, keras.callbacks.History()
    # A resumed run continues the random stream instead of replaying it.
    def make_data(input_context=None):
        return build_train_dataset(
            dataset, config, batch_size=tc.batch_size, start_element=step * tc.batch_size,
            input_context=input_context,
        )

    if strategy.num_replicas_in_sync > 1:  # each worker reads its own share
        data = strategy.distribute_datasets_from_function(make_data)
        # Keras' pre-fit "symbolic build" would all-reduce a whole input
        # batch, which fails under MultiWorkerMirroredStrategy (PerReplica
        # conversion error); the model and optimizer are built already.
        model._maybe_symbolic_build = lambda *args, **kwargs: None
        distribute.make_logs_reducible(model, strategy)
    else:
        data = make_data()
    steps_per_epoch = max(1, min(tc.steps_per_epoch, tc.total_steps))
    last_saved = step  # saved, or step 0: nothing to save
    if chief:
        checkpoints = CheckpointCallback(model_dir, tc.checkpoint_every, tc.keep_checkpoints, last_saved)
    else:
        checkpoints = WorkerCheckpointCallback(
            distribute.worker_write_dir(model_dir, False), model_dir, tc.checkpoint_every, 1, last_saved
        )
    guard = NonFiniteGuard(tc.on_nonfinite, tc.max_consecutive_nonfinite, checkpoints)
    callbacks = [
        guard,  # before checkpoints: a non-finite step blocks the save
        interrupt,
        checkpoints,
        StopAtStep(tc.total_steps),
        *(watch_callbacks(config, dataset, model_dir, mode) if chief else []),
        *extra_callbacks,
    ]
    epochs = math.ceil(tc.total_steps / steps_per_epoch)
    if tc.on_nonfinite == "skip":  # skipped steps do not count: StopAtStep ends the run
        epochs *= 2 + tc.max_consecutive_nonfinite
    verbose = 1 if mode == "bar" and chief else 0
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
    if getattr(checkpoints, "error", None) is not None:
        raise checkpoints.error
    if interrupt.signum is not None:
        step = int(optimizer.iterations.numpy())
        saved = checkpoint_path(model_dir, step)
        raise interrupt.error(step, saved if checkpoints.last_saved == step and os.path.isfile(saved) else None)
    return model, history
