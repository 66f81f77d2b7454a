"""The detector's training hooks: Keras' `compile`, `compute_loss` and `train_step`.

`TrainingMixin` holds the methods of `KeypointObjectDetector` that `fit`
calls: the loss of docs/reference.md §5 (`tf_centernet.losses`) with one
metric per term (`LOSS_TERMS`), and the two adjustments distributed
training needs, as methods of the class instead of patches on an instance:
`train_step` shapes the logs for multi-worker reduction, and
`_maybe_symbolic_build` (Keras' pre-fit build hook) is skipped once the
detector and its optimizer are built.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tf_centernet import losses

__all__ = ["LOSS_TERMS", "TrainingMixin"]

LOSS_TERMS = ("focal_corner", "focal_center", "pull", "push", "offset_corner", "offset_center")


class TrainingMixin:
    """Training methods of `KeypointObjectDetector` (a `keras.Model`).

    They use the detector's ``trackers`` (one `keras.metrics.Mean` per
    name of `LOSS_TERMS`), ``_loss_settings`` (`LossConfig`) and
    ``centers``.
    """

    def compile(self, optimizer="auto", loss=None, metrics=None, **kwargs):
        """`keras.Model.compile`; the loss is this detector's own (`compute_loss`).

        Args:
            optimizer: `"auto"` (Adam, the releases' 2.5e-4) or a Keras optimizer.
            loss: must be None: the keypoint losses are built in.
            metrics: must be None: each loss term is reported as a metric.
            **kwargs: `keras.Model.compile` arguments (``jit_compile``, ...).
        """
        if loss is not None or metrics is not None:
            raise ValueError("The detector computes its own losses and metrics: leave loss and metrics unset.")
        if optimizer == "auto":
            optimizer = keras.optimizers.Adam(2.5e-4)
        keras.Model.compile(self, optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        """Recompiles a reloaded model with its saved optimizer (``.keras`` files)."""
        config = keras.saving.deserialize_keras_object(config)
        self.compile(optimizer=config.get("optimizer") or "auto",
                     **{k: v for k, v in config.items() if k in ("jit_compile", "steps_per_execution")})

    def fit(self, *args, **kwargs):
        """`keras.Model.fit` on batches of `tf_centernet.data.build_train_dataset` (targets encoded)."""
        return keras.Model.fit(self, *args, **kwargs)

    def evaluate(self, *args, **kwargs):
        """`keras.Model.evaluate` (the losses) on batches like `fit`'s; COCO AP: `tf_centernet.evaluation`."""
        return keras.Model.evaluate(self, *args, **kwargs)

    def train_on_batch(self, *args, **kwargs):
        """`keras.Model.train_on_batch` on one `build_train_dataset` batch (dict targets)."""
        return keras.Model.train_on_batch(self, *args, **kwargs)

    def test_on_batch(self, *args, **kwargs):
        """`keras.Model.test_on_batch` on one `build_train_dataset` batch (dict targets)."""
        return keras.Model.test_on_batch(self, *args, **kwargs)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """docs/reference.md §5 loss for `fit`; updates one metric per term.

        `y` is the target dict of `tf_centernet.data.build_train_dataset`.
        Under a distribution strategy the returned value is divided by the
        number of replicas (gradients are summed across replicas).
        """
        if y_pred is None:
            y_pred = self(x, training=training)
        if not isinstance(y_pred["tl_heatmap"], (list, tuple)):
            y_pred = {k: [v] for k, v in y_pred.items()}
        terms = losses.detection_losses(y_pred, y, self._loss_settings, self.centers)
        for name in LOSS_TERMS:
            self.trackers[name].update_state(terms[name])
        loss = terms["loss"]
        if self.losses:  # regularisers, if a user adds any
            loss += tf.add_n([tf.cast(extra, loss.dtype) for extra in self.losses])
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if replicas > 1:
            loss = loss / float(replicas)
        return loss

    def train_step(self, data):
        """`keras.Model.train_step`; under a multi-worker strategy the scalar logs get shape (1,).

        Keras 3 reduces each value ``train_step`` returns with
        ``strategy.reduce("MEAN", value, axis=0)`` when
        `tf.distribute.MultiWorkerMirroredStrategy` spans several workers,
        which fails on scalars ("Invalid reduction dimension 0"). A (1,)
        value's mean over axis 0 and the replicas is the scalar Keras
        reports anyway. Elsewhere the logs are Keras' own.
        """
        logs = keras.Model.train_step(self, data)
        if not _multi_worker(tf.distribute.get_strategy()):
            return logs
        return {
            key: tf.reshape(value, [1]) if getattr(getattr(value, "shape", None), "rank", None) == 0 else value
            for key, value in logs.items()
        }

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras' hook before fit/evaluate builds the model on a symbolic copy
        # of a real batch; with several replicas it all-reduces a whole input
        # batch, which fails under MultiWorkerMirroredStrategy (PerReplica
        # conversion error). The detector is built at construction; with a
        # built optimizer (tf_centernet.training builds it) nothing is left
        # to build.
        strategy = self.distribute_strategy
        replicas = strategy.num_replicas_in_sync if strategy is not None else 1
        if replicas > 1 and self.built and self.optimizer is not None and self.optimizer.built:
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)


def _multi_worker(strategy):
    """Whether `strategy` is a MultiWorkerMirroredStrategy over several workers (Keras' own test)."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and bool(
        strategy.extended._in_multi_worker_mode()
    )
