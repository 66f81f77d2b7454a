"""Callbacks for watching training: plain-log progress, COCO evaluation, pictures.

- `ProgressLog`: one plain line per logging interval (step, losses, steps/s,
  ETA) for log files, instead of Keras' carriage-return progress bar.
- `EvaluationCallback`: COCO-style evaluation of the validation set (any
  format: COCO, VOC, TFRecord; the same code as ``tf-centernet evaluate``)
  every ``train.eval_every`` steps; AP, AP50 and FD go to TensorBoard
  (``MODEL_DIR/logs/validation``, Keras' run name for validation) and to
  ``MODEL_DIR/metrics.jsonl``; the best checkpoint by AP is kept in
  ``MODEL_DIR/best/``.
- `ImageSummaries`: TensorBoard images every ``train.image_summary_every``
  steps (``MODEL_DIR/logs/images``): an input image with its ground truth,
  the predicted corner and center heatmaps, the decoded detections; and the
  learning rate as a scalar.

All of them belong to the chief alone in a multi-worker job (they write the
model directory).
"""

from __future__ import annotations

import json
import logging
import os
import time

import keras
import numpy as np
import tensorflow as tf

from tf_centernet.checkpoints import CheckpointCallback, atomic_write_text, save_checkpoint
from tf_centernet.distribute import remove_worker_dir

logger = logging.getLogger("tf_centernet")

PROGRESS_MODES = ("bar", "log", "none")
METRICS_FILE = "metrics.jsonl"
BEST_SUBDIR = "best"


def _step(model):
    return int(model.optimizer.iterations.numpy())


def _format_duration(seconds):
    seconds = int(max(0, seconds))
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class ProgressLog(keras.callbacks.Callback):
    """Logs ``step N/T loss=... <term>=... steps/s=... ETA=h:mm:ss`` every `every` steps.

    Args:
        total_steps: int. Last step of training (for the ETA).
        every: int. Steps between lines; the last step is always logged.
        log: callable taking one str. Defaults to the package logger's info.

    Losses are Keras' running means over the current epoch.
    """

    def __init__(self, total_steps, every=100, log=None):
        super().__init__()
        self.total_steps = int(total_steps)
        self.every = max(1, int(every))
        self.log = log or logger.info
        self._last = None

    def on_train_begin(self, logs=None):
        self._last = (time.monotonic(), _step(self.model))

    def on_train_batch_end(self, batch, logs=None):
        step = _step(self.model)
        if step % self.every and step < self.total_steps:
            return
        now = time.monotonic()
        then, start = self._last
        rate = (step - start) / max(now - then, 1e-9)
        self._last = (now, step)
        terms = " ".join(
            f"{k}={float(v):.4f}" for k, v in (logs or {}).items() if np.ndim(v) == 0
        )
        eta = _format_duration((self.total_steps - step) / rate) if rate > 0 else "?"
        self.log(f"step {step}/{self.total_steps} {terms} steps/s={rate:.3f} ETA={eta}")


class WorkerCheckpointCallback(CheckpointCallback):
    """`CheckpointCallback` of a non-chief worker: saves into its own
    temporary folder, then deletes it (TensorFlow's multi-worker guidance:
    every worker takes part in a save, only the chief's copy is kept).

    Args:
        write_dir: str. The worker's temporary folder (`worker_write_dir`).
        model_dir: str. The shared model directory (never deleted).
        every, keep: as `CheckpointCallback`.
    """

    def __init__(self, write_dir, model_dir, every, keep=1, last_saved=None):
        super().__init__(write_dir, every, keep, last_saved)
        self.shared_dir = model_dir

    def _save(self):
        try:
            super()._save()
        finally:
            remove_worker_dir(self.model_dir, self.shared_dir)

    def on_train_end(self, logs=None):
        try:
            super().on_train_end(logs)
        finally:  # also when no save happened
            remove_worker_dir(self.model_dir, self.shared_dir)


def _writer(model_dir, name):
    return tf.summary.create_file_writer(os.path.join(model_dir, "logs", name))


def _learning_rate(optimizer):
    rate = optimizer.learning_rate
    return float(rate.numpy() if hasattr(rate, "numpy") else rate)


class EvaluationCallback(keras.callbacks.Callback):
    """Evaluation of the model being trained on the validation split, every `every` steps.

    The validation data is ``config.validation_data`` in any format, read by
    `tf_centernet.data.records.open_dataset` (once, at the first
    evaluation) and scored by `tf_centernet.evaluation.evaluate_dataset`:
    the same path as ``tf-centernet evaluate``, without the flip test.

    Writes the scalars ``AP``, ``AP50`` and ``FD`` (fractions in [0, 1],
    SPEC 8; FD is the CenterNet paper's false discovery rate) at the
    optimizer step to ``MODEL_DIR/logs/validation`` (the run where Keras'
    TensorBoard callback writes ``val_*`` metrics, so TensorBoard shows them
    beside the training run), appends ``{"step": ..., <all metrics>}`` as
    one JSON line to ``MODEL_DIR/metrics.jsonl`` and, when AP beats every
    earlier evaluation, writes the weights to
    ``MODEL_DIR/best/checkpoints/ckpt-STEP.weights.h5`` (atomic, with a
    SHA-256 manifest; older best files removed) and
    ``MODEL_DIR/best/best.json``.

    Args:
        config: `Config`. Uses ``validation_data`` and the ``data.*``
            reader settings (see `open_dataset`).
        model_dir: str.
        every: int. Steps between evaluations (a positive number).
        class_names: sequence of str. The model's class name per class
            index (the training data's); VOC / TFRecord class names are
            mapped to it, COCO categories are checked against it.
        category_ids: sequence of int. COCO category id of each class index.
        max_images: int or None. Evaluate on the first N images only.

    Raises:
        FileNotFoundError, ValueError: at the first evaluation, when the
            validation data cannot be read (from `open_dataset`) or its
            classes disagree with the model's (from `evaluate_dataset`).
    """

    def __init__(self, config, model_dir, every, class_names, category_ids, max_images=None):
        super().__init__()
        self.config = config
        self.model_dir = model_dir
        self.every = max(1, int(every))
        self.class_names = list(class_names)
        self.category_ids = list(category_ids)
        self.max_images = max_images or None
        self.best_ap = self._previous_best()
        self.dataset = None
        self.writer = None

    def _previous_best(self):
        path = os.path.join(self.model_dir, BEST_SUBDIR, "best.json")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                return float(json.load(f).get("AP", -1.0))
        return -1.0

    def evaluate(self, step):
        """Evaluates now; returns the metrics dict."""
        from tf_centernet.evaluation import evaluate_dataset

        if self.dataset is None:
            from tf_centernet.data.records import open_dataset

            self.dataset = open_dataset(self.config, "val", class_names=self.class_names)
        metrics = evaluate_dataset(
            _NoFlip(self.model), self.dataset, self.category_ids,
            max_images=self.max_images, compute_fd=True, verbose=False,
        )
        if self.writer is None:
            self.writer = _writer(self.model_dir, "validation")
        # record_if(True): Keras' TensorBoard callback records only on its
        # update_freq steps while a batch runs; an evaluation step may be none.
        with self.writer.as_default(step=step), tf.summary.record_if(True):
            for name in ("AP", "AP50", "FD"):
                tf.summary.scalar(name, metrics.get(name, float("nan")))
        self.writer.flush()
        record = {"step": step, **{k: float(v) for k, v in metrics.items()}}
        with open(os.path.join(self.model_dir, METRICS_FILE), "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        logger.info("Evaluation at step %d: AP %.4f AP50 %.4f FD %.4f", step,
                    metrics.get("AP", float("nan")), metrics.get("AP50", float("nan")),
                    metrics.get("FD", float("nan")))
        if metrics.get("AP", -1.0) > self.best_ap:
            self.best_ap = float(metrics["AP"])
            best_dir = os.path.join(self.model_dir, BEST_SUBDIR)
            path = save_checkpoint(self.model, best_dir, step, keep=1)
            atomic_write_text(os.path.join(best_dir, "best.json"), json.dumps({**record, "checkpoint": path}))
        return metrics

    def on_train_batch_end(self, batch, logs=None):
        step = _step(self.model)
        if step % self.every == 0:
            self.evaluate(step)


class ImageSummaries(keras.callbacks.Callback):
    """TensorBoard pictures of one image every `every` steps, and the learning rate.

    Images (``MODEL_DIR/logs/images``, uint8 unless noted):
    ``images/ground_truth`` (1, H, W, 3): the image with its ground-truth
    boxes; ``images/detections`` (1, H, W, 3): the decoded detections
    (score >= `score_threshold`); ``heatmaps/<key>`` float (1, h, w, 1) in
    [0, 1]: per output-grid cell the maximum over classes of the sigmoid of
    each heatmap head (``tl_heatmap``, ``br_heatmap``, ``ct_heatmap`` when
    the model has centers), with h, w the output grid of the model's input
    canvas. Scalar ``learning_rate`` every `lr_every` steps.

    Args:
        config: `Config`.
        model_dir: str.
        every: int. Steps between pictures (0: no pictures).
        image: uint8 (H, W, 3) RGB.
        boxes: float (n, 4) ``[x1, y1, x2, y2]`` pixels; classes: int (n,).
        class_names: sequence of str or None.
        lr_every: int. Steps between learning-rate scalars.
        score_threshold: float.
    """

    def __init__(self, config, model_dir, every, image, boxes, classes, class_names=None,
                 lr_every=100, score_threshold=0.3):
        super().__init__()
        self.config = config
        self.model_dir = model_dir
        self.every = int(every)
        self.image = np.asarray(image, np.uint8)
        self.boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        self.classes = np.asarray(classes, np.int64).reshape(-1)
        self.class_names = class_names
        self.lr_every = max(1, int(lr_every))
        self.score_threshold = float(score_threshold)
        self.writer = None

    def _ensure_writer(self):
        if self.writer is None:
            self.writer = _writer(self.model_dir, "images")
        return self.writer

    def write_images(self, step):
        """Writes the pictures of the model as it is now."""
        from tf_centernet.visualize import draw_detections

        writer = self._ensure_writer()
        truth = draw_detections(
            self.image, self.boxes, np.ones(len(self.boxes), np.float32), self.classes,
            self.class_names, score_threshold=0.0,
        )
        found = self.model.predict_images([self.image], flip_test=False)[0]
        drawn = draw_detections(
            self.image, np.asarray(found["boxes"]), np.asarray(found["scores"]),
            np.asarray(found["classes"]), self.class_names, score_threshold=self.score_threshold,
        )
        height, width = self.image.shape[:2]
        canvas, _ = self.model.image_converter(
            tf.constant(self.image[None]), tf.constant([[height, width]], tf.int32), 1.0
        )
        outputs = self.model(canvas, training=False)
        with writer.as_default(step=step), tf.summary.record_if(True):  # see EvaluationCallback.evaluate
            tf.summary.image("images/ground_truth", truth[None], step=step)
            tf.summary.image("images/detections", drawn[None], step=step)
            for key in ("tl_heatmap", "br_heatmap", "ct_heatmap"):
                if key in outputs:
                    heat = tf.sigmoid(tf.cast(outputs[key], tf.float32))
                    tf.summary.image(f"heatmaps/{key}", tf.reduce_max(heat, axis=-1, keepdims=True), step=step)
        writer.flush()

    def on_train_batch_end(self, batch, logs=None):
        step = _step(self.model)
        if step % self.lr_every == 0:
            with self._ensure_writer().as_default(step=step), tf.summary.record_if(True):
                tf.summary.scalar("learning_rate", _learning_rate(self.model.optimizer))
        if self.every > 0 and step % self.every == 0:
            self.write_images(step)

    def on_train_end(self, logs=None):
        if self.writer is not None:
            self.writer.flush()


def watch_callbacks(config, dataset, model_dir, mode):
    """The chief's watching callbacks for `tf_centernet.training.train`.

    Keras' TensorBoard scalars (``MODEL_DIR/logs``), `ProgressLog` when
    `mode` is "log", `ImageSummaries` (learning rate every
    ``train.log_every`` steps; pictures of the first training image every
    ``train.image_summary_every`` steps), `EvaluationCallback` when
    ``train.eval_every`` > 0 (validation data in any format, see
    `check_validation_data`).

    Raises:
        ValueError: ``train.eval_every`` set without usable validation data
            (`check_validation_data`).
    """
    from tf_centernet.evaluation import load_image_rgb

    tc = config.train
    every = max(1, int(tc.log_every))
    found = [
        keras.callbacks.TensorBoard(os.path.join(model_dir, "logs"), update_freq=max(1, min(every, tc.checkpoint_every)))
    ]
    if mode == "log":
        found.append(ProgressLog(tc.total_steps, every))
    record = dataset.records[0]
    image = load_image_rgb(record.file_name) if tc.image_summary_every > 0 else np.zeros((1, 1, 3), np.uint8)
    found.append(ImageSummaries(
        config, model_dir, tc.image_summary_every, image, record.boxes, record.classes,
        list(dataset.class_names), lr_every=every,
    ))
    if tc.eval_every > 0:
        check_validation_data(config)
        found.append(EvaluationCallback(
            config, model_dir, tc.eval_every, dataset.class_names, dataset.category_ids, tc.eval_max_images,
        ))
    return found


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

    data = config.validation_data
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


__all__ = [
    "watch_callbacks", "EvaluationCallback", "ImageSummaries", "ProgressLog", "WorkerCheckpointCallback",
    "check_validation_data", "progress_mode", "PROGRESS_MODES", "METRICS_FILE",
]


class _NoFlip:
    """The training model's `predict_images` without the flip test (faster evaluation)."""

    def __init__(self, model):
        self.model = model

    def predict_images(self, images, batch_size=1):
        return self.model.predict_images(images, batch_size=batch_size, flip_test=False)
