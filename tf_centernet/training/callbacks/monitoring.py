"""Callbacks for watching training: plain-log progress, evaluation, pictures.

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
  the predicted corner and center heatmaps, the decoded detections. (The
  learning rate is a scalar of the train run, written by Keras'
  `TensorBoard` callback.)

All of them belong to the chief alone in a multi-worker job (they write the
model directory). Paths come from `tf_centernet.model_dir.ModelDirectory`.
"""

from __future__ import annotations

import json
import logging
import os
import time

import keras
import numpy as np
import tensorflow as tf

from tf_centernet.checkpoints import save_checkpoint
from tf_centernet.filesystem import atomic_write_text
from tf_centernet.model_dir import ModelDirectory

logger = logging.getLogger("tf_centernet")

__all__ = ["EvaluationCallback", "ImageSummaries", "ProgressLog"]


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
        self.model_dir = ModelDirectory(model_dir)
        self.every = max(1, int(every))
        self.class_names = list(class_names)
        self.category_ids = list(category_ids)
        self.max_images = max_images or None
        self.best_ap = self._previous_best()
        self.dataset = None
        self.writer = None

    def _previous_best(self):
        path = self.model_dir.best.best_record
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
            self.writer = tf.summary.create_file_writer(self.model_dir.validation_logs)
        # record_if(True): Keras' TensorBoard callback records only on its
        # update_freq steps while a batch runs; an evaluation step may be none.
        with self.writer.as_default(step=step), tf.summary.record_if(True):
            for name in ("AP", "AP50", "FD"):
                tf.summary.scalar(name, metrics.get(name, float("nan")))
        self.writer.flush()
        record = {"step": step, **{k: float(v) for k, v in metrics.items()}}
        with open(self.model_dir.metrics, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        logger.info("Evaluation at step %d: AP %.4f AP50 %.4f FD %.4f", step,
                    metrics.get("AP", float("nan")), metrics.get("AP50", float("nan")),
                    metrics.get("FD", float("nan")))
        if metrics.get("AP", -1.0) > self.best_ap:
            self.best_ap = float(metrics["AP"])
            best = self.model_dir.best
            path = save_checkpoint(self.model, best.path, step, keep=1)
            atomic_write_text(best.best_record, json.dumps({**record, "checkpoint": path}))
        return metrics

    def on_train_batch_end(self, batch, logs=None):
        step = _step(self.model)
        if step % self.every == 0:
            self.evaluate(step)


class ImageSummaries(keras.callbacks.Callback):
    """TensorBoard pictures of one image every `every` steps.

    Images (``MODEL_DIR/logs/images``, uint8 unless noted):
    ``images/ground_truth`` (1, H, W, 3): the image with its ground-truth
    boxes; ``images/detections`` (1, H, W, 3): the decoded detections
    (score >= `score_threshold`); ``heatmaps/<key>`` float (1, h, w, 1) in
    [0, 1]: per output-grid cell the maximum over classes of the sigmoid of
    each heatmap head (``tl_heatmap``, ``br_heatmap``, ``ct_heatmap`` when
    the model has centers), with h, w the output grid of the model's input
    canvas. (No scalar: the learning rate is in the train run.)

    Args:
        config: `Config`.
        model_dir: str.
        every: int. Steps between pictures (0: no pictures).
        image: uint8 (H, W, 3) RGB.
        boxes: float (n, 4) ``[x1, y1, x2, y2]`` pixels; classes: int (n,).
        class_names: sequence of str or None.
        score_threshold: float.
    """

    def __init__(self, config, model_dir, every, image, boxes, classes, class_names=None,
                 score_threshold=0.3):
        super().__init__()
        self.config = config
        self.model_dir = ModelDirectory(model_dir)
        self.every = int(every)
        self.image = np.asarray(image, np.uint8)
        self.boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        self.classes = np.asarray(classes, np.int64).reshape(-1)
        self.class_names = class_names
        self.score_threshold = float(score_threshold)
        self.writer = None

    def _ensure_writer(self):
        if self.writer is None:
            self.writer = tf.summary.create_file_writer(self.model_dir.image_logs)
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
        if self.every > 0 and step % self.every == 0:
            self.write_images(step)

    def on_train_end(self, logs=None):
        if self.writer is not None:
            self.writer.flush()


class _NoFlip:
    """The training model's `predict_images` without the flip test (faster evaluation)."""

    def __init__(self, model):
        self.model = model

    def predict_images(self, images, batch_size=1):
        return self.model.predict_images(images, batch_size=batch_size, flip_test=False)
