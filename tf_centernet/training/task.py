"""Training with `model.fit` under a `tf.distribute` strategy.

What `train` does, in order:

1. picks a strategy (`tf_centernet.training.distribute.get_strategy`): MirroredStrategy over the visible GPUs
   when there are any, else one device (the CPU);
2. reads the data (COCO, Pascal VOC or TFRecord:
   `tf_centernet.data.records.open_dataset`) and builds the
   `tf.data` pipeline (augmentation and targets in-graph);
3. builds the model and the optimizer of ``train.optimizer`` (Adam, the
   releases', AdamW or SGD with momentum) with the piecewise-constant
   schedule of docs/reference.md §6 (learning rate x decay_rate after each
   of `decay_steps`) behind the non-finite guard
   (`tf_centernet.training.optimizer`);
4. checks that the model directory and its ``checkpoints/`` folder take
   new files (`tf_centernet.filesystem.check_writable`) and that
   ``train.init_from`` exists, before anything is created; locks the model
   directory (`tf_centernet.model_dir.ModelDirLock`: a second
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
   SIGTERM saves and stops (`tf_centernet.training.callbacks`); a checkpoint that
   cannot be written (disk full, read-only) stops training with one
   message naming the steps lost (`tf_centernet.training.callbacks.CheckpointCallback`).

The input pipeline's position is not checkpointed: a resumed run starts a
new shuffle and continues the augmentation seeds from the number of images
already seen, so it neither replays nor reproduces the interrupted run's
batches exactly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import math
import os

import keras

from tf_centernet import config as config_lib
from tf_centernet.checkpoints import CheckpointError, checkpoint_bytes, cleanup_partials, load_checkpoint
from tf_centernet.data.classes import write_classes
from tf_centernet.data.paths import display_path
from tf_centernet.filesystem import NotWritableError, atomic_write_text, check_writable
from tf_centernet.model_dir import ModelDirectory
from tf_centernet.models.presets import build_model
from tf_centernet.training import distribute
from tf_centernet.training.callbacks import (
    CheckpointCallback,
    EvaluationCallback,
    ImageSummaries,
    InterruptGuard,
    NonFiniteGuard,
    ProgressLog,
    StopAtStep,
    WorkerCheckpointCallback,
)
from tf_centernet.training.optimizer import build_optimizer

logger = logging.getLogger("tf_centernet")

__all__ = ["build_callbacks", "check_validation_data", "progress_mode", "train"]

PROGRESS_MODES = ("bar", "log", "none")
# The most evaluations the automatic cadence runs in one training (`evaluation_cadence`).
AUTO_EVALUATIONS = 4


def train(config, strategy=None, verbose=1, extra_callbacks=(), progress=None):
    """Trains (or resumes training) as described in the module docstring.

    Args:
        config: `tf_centernet.config.Config`.
        strategy: `tf.distribute.Strategy` or None for ``distribute.get_strategy(train.strategy)``.
        verbose: int. Keras progress display (1: progress bar).
        extra_callbacks: more Keras callbacks.
        progress: "bar" (Keras' progress bar), "log" (one plain line per
            ``train.log_every`` steps, `tf_centernet.training.callbacks.ProgressLog`),
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
            `tf_centernet.training.callbacks`).
        TrainingInterrupted: SIGINT / SIGTERM (after saving a checkpoint
            when a step finished since the last one).
    """
    from tf_centernet.data.check import check_dataset
    from tf_centernet.data.records import open_dataset

    tc = config.train
    model_dir = ModelDirectory(tc.model_dir)
    config_lib.check_choice("train.on_nonfinite", tc.on_nonfinite)
    # MultiWorkerMirroredStrategy must exist before other TensorFlow ops run.
    strategy = strategy or distribute.get_strategy(tc.strategy)
    keras.utils.set_random_seed(tc.seed)
    # model.compute_dtype (the one precision setting) is applied by
    # build_model; float16 gets Keras' loss scaling when compiled.

    chief = distribute.strategy_is_chief(strategy)
    if chief:  # before reading the data: fail in seconds, not after minutes of work
        check_writable(model_dir.path, "train.model_dir (--model-dir)")
        check_writable(model_dir.checkpoints, "the checkpoint folder")
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
    created = chief and not os.path.exists(model_dir.path)
    try:
        with (model_dir.lock() if chief else contextlib.nullcontext()), InterruptGuard() as interrupt:
            if chief:
                cleanup_partials(model_dir.path)
            mode = progress_mode(progress, verbose)
            return _train_locked(config, dataset, strategy, mode, extra_callbacks, interrupt, chief)
    except BaseException:
        if created:
            model_dir.remove_if_unused()
        raise


def _check_free_space(model, model_dir):
    """Fails when one checkpoint of `model` cannot fit in `model_dir`; warns when `keep` + 1 may not."""
    need = checkpoint_bytes(model)
    try:
        stat = os.statvfs(model_dir.path)
    except (OSError, AttributeError):
        return
    free = stat.f_bavail * stat.f_frsize
    if free < need:
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
    model_dir = ModelDirectory(tc.model_dir)
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
        optimizer = build_optimizer(tc)
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
        resume_from = load_checkpoint(model, model_dir.path)
        if resume_from:
            logger.info("Resumed from %s (step %d)", resume_from, int(optimizer.iterations.numpy()))
            if tc.init_from:
                logger.info("train.init_from=%s ignored: resuming from %s", tc.init_from, resume_from)
        elif tc.init_from:
            from tf_centernet.convert.finetune import initialize_from

            initialize_from(model, tc.init_from)
    if not distribute.all_equal_across_workers(strategy, int(optimizer.iterations.numpy())):
        raise CheckpointError(
            f"The workers restored different steps from {model_dir.path} (this worker: "
            f"{int(optimizer.iterations.numpy())}); the model directory must be storage all workers share."
        )
    if chief:
        atomic_write_text(model_dir.config_yaml, config_lib.to_yaml(config))
        write_classes(model_dir.path, dataset)

    step = int(optimizer.iterations.numpy())
    if step >= tc.total_steps:
        logger.info("Training already complete: step %d >= total_steps %d", step, tc.total_steps)
        return model, keras.callbacks.History()
    # A resumed run continues the random stream instead of replaying it.
    def make_data(input_context=None):
        return build_train_dataset(
            dataset, config, batch_size=tc.batch_size, start_element=step * tc.batch_size,
            input_context=input_context,
            heatmaps=target_heatmaps(tc),
        )

    if strategy.num_replicas_in_sync > 1:  # each worker reads its own share
        # (The detector skips Keras' pre-fit symbolic build then, and shapes
        # its logs for multi-worker reduction: KeypointObjectDetector.train_step.)
        data = strategy.distribute_datasets_from_function(make_data)
    else:
        data = make_data()
    steps_per_epoch = max(1, min(tc.steps_per_epoch, tc.total_steps))
    callbacks = build_callbacks(config, dataset, interrupt, mode, chief, last_saved=step)
    guard, checkpoints = callbacks[0], callbacks[2]
    callbacks += list(extra_callbacks)
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
        saved = model_dir.checkpoint(step)
        raise interrupt.error(step, saved if checkpoints.last_saved == step and os.path.isfile(saved) else None)
    return model, history


def target_heatmaps(train_config):
    """``"sparse"`` or ``"dense"``: how `train` asks `build_train_dataset` for the heatmap targets.

    ``train.heatmaps`` when set; "auto": the keypoints (drawn into maps in
    the loss, on the device), or the dense maps under ``train.jit_compile``
    (XLA needs a static shape, and the drawing's window count is not).
    """
    choice = config_lib.check_choice("train.heatmaps", getattr(train_config, "heatmaps", "auto"))
    if choice == "auto":
        return "dense" if train_config.jit_compile else "sparse"
    return choice


def build_callbacks(config, dataset, interrupt, mode, chief=True, last_saved=0):
    """The callbacks of `fit`, in the order they must run.

    ``[NonFiniteGuard, interrupt, checkpoints, StopAtStep, ...]``: the guard
    comes before the checkpoints (a non-finite step blocks the save). The
    chief adds Keras' `TensorBoard` (train-run scalars in ``logs/``,
    every ``train.log_every`` steps, and the learning rate per epoch),
    `ProgressLog` when `mode` is "log", `ImageSummaries` and
    `EvaluationCallback` at the cadence of `evaluation_cadence`.

    Args:
        config: `Config`.
        dataset: the training dataset (its first image is drawn; its class
            names and category ids label the evaluation).
        interrupt: `InterruptGuard` (entered by the caller).
        mode: "bar", "log" or "none" (`progress_mode`).
        chief: bool. Whether this worker writes the model directory.
        last_saved: int. The step training starts from (not saved again).

    Returns:
        list of `keras.callbacks.Callback`.

    Raises:
        ValueError: ``train.eval_every`` > 0 without usable validation
            data (`check_validation_data`).
    """
    tc = config.train
    model_dir = ModelDirectory(tc.model_dir)
    if chief:
        checkpoints = CheckpointCallback(model_dir.path, tc.checkpoint_every, tc.keep_checkpoints, last_saved)
    else:
        checkpoints = WorkerCheckpointCallback(
            distribute.worker_write_dir(model_dir.path, False), model_dir.path, tc.checkpoint_every, 1, last_saved
        )
    found = [
        NonFiniteGuard(tc.on_nonfinite, tc.max_consecutive_nonfinite, checkpoints),
        interrupt,
        checkpoints,
        StopAtStep(tc.total_steps),
    ]
    if not chief:
        return found
    every = max(1, int(tc.log_every))
    found.append(keras.callbacks.TensorBoard(model_dir.logs, update_freq=max(1, min(every, tc.checkpoint_every))))
    if mode == "log":
        found.append(ProgressLog(tc.total_steps, every))
    eval_every, image_every = evaluation_cadence(config)
    if image_every > 0:
        from tf_centernet.evaluation import record_image

        record = dataset.records[0]
        found.append(ImageSummaries(
            config, model_dir.path, image_every, record_image(record), record.boxes, record.classes,
            list(dataset.class_names),
        ))
    if eval_every > 0:
        check_validation_data(config)
        found.append(EvaluationCallback(
            config, model_dir.path, eval_every, dataset.class_names, dataset.category_ids, tc.eval_max_images,
        ))
    return found


def evaluation_cadence(config):
    """(steps between evaluations, steps between TensorBoard pictures); 0 is off.

    ``train.eval_every`` and ``train.image_summary_every`` are used as given
    when >= 0. Their default, -1 (auto), is on when
    ``validation_data.annotations`` is set and 0 otherwise: pictures at every
    checkpoint (``train.checkpoint_every``); evaluations at every k-th
    checkpoint, k the smallest that gives at most `AUTO_EVALUATIONS` (4)
    evaluations in ``train.total_steps``, so that their cost stays bounded
    whatever the run's length (``best/`` holds the best of them). One
    evaluation of coco-tiny's 80 validation images costs about as much as
    34 training steps of ``centernet_small`` on a 2-core CPU
    (`benchmarks/evaluation_cost.py`; the README's "Configurations,
    hardware and time").

    Args:
        config: `Config`.

    Returns:
        (int, int).
    """
    tc = config.train
    every = max(1, int(tc.checkpoint_every))
    on = bool(config_lib.input_config(config, "val").annotations)
    evaluations = every * max(1, math.ceil(int(tc.total_steps) / (AUTO_EVALUATIONS * every))) if on else 0
    return (
        evaluations if int(tc.eval_every) < 0 else int(tc.eval_every),
        (every if on else 0) if int(tc.image_summary_every) < 0 else int(tc.image_summary_every),
    )


def check_validation_data(config):
    """Checks, before training starts, that ``validation_data`` names validation data.

    Only what is cheap: ``validation_data.annotations`` is set, its format is
    known (``validation_data.format`` or
    `tf_centernet.data.records.detect_format`) and, for COCO,
    ``validation_data.images`` is set (a VOC layout finds its own images, a
    TFRecord holds them). The files themselves are read at the first
    evaluation.

    Returns:
        str. The format: ``"coco"``, ``"voc"`` or ``"tfrecord"``.

    Raises:
        ValueError: one line naming the missing setting or the path whose
            format is unknown.
    """
    from tf_centernet.data.records import detect_format

    data = config_lib.input_config(config, "val")  # validation_data, or train_data's held-out share
    if not data.annotations:
        raise ValueError(
            "train.eval_every needs validation_data.annotations (a COCO .json, a VOC folder or image-set "
            ".txt, or TFRecord files)."
        )
    fmt = data.format or detect_format(data.annotations)
    if fmt == "coco" and not data.images:
        raise ValueError(
            "train.eval_every with COCO validation data needs validation_data.images (the image folder)."
        )
    return fmt


def progress_mode(progress, verbose=1, isatty=None):
    """Resolves ``--progress`` (None: "bar" on a terminal, else "log"; "none" when verbose is 0).

    Raises:
        ValueError: unknown mode.
    """
    if progress is None:
        if not verbose:
            return "none"
        tty = isatty if isatty is not None else _stdout_isatty()
        return "bar" if tty else "log"
    if progress not in PROGRESS_MODES:
        raise ValueError(f"progress must be one of {PROGRESS_MODES}, got {progress!r}.")
    return progress


def _stdout_isatty():
    import sys

    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False
