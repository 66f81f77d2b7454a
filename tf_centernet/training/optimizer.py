"""The optimizer of a training run: any Keras optimizer behind a non-finite guard.

`build_optimizer` makes the optimizer ``train.optimizer`` names (``adam``,
the releases', as `FusedAdam`: Keras' Adam updating each variable with
TensorFlow's one fused kernel; ``adamw``; ``sgd`` with ``train.momentum``)
with the learning-rate schedule of docs/reference.md §6
(`learning_rate_schedule`), wrapped in `NonFiniteGuardOptimizer`.

`NonFiniteGuardOptimizer` wraps another optimizer the way Keras'
`keras.optimizers.LossScaleOptimizer` does: a step whose loss or
gradients hold a NaN or Inf is not applied at all, so weights, the inner
optimizer's slots (moments, momentum) and its step count stay as they
were. BatchNorm moving statistics change in the forward pass, before the
optimizer runs: `tf_centernet.training.callbacks.NonFiniteGuard` restores
those in ``train.on_nonfinite=skip`` mode.

Checkpoints: the wrapper owns no variable; Keras' weights file holds the
inner optimizer's variables where an unwrapped optimizer's go
(``optimizer/vars/0..n``), so checkpoints of earlier releases (whose
``GuardedAdam`` had Adam's variables) resume into ``adam`` unchanged.
"""

from __future__ import annotations

import threading

import keras
import tensorflow as tf

from tf_centernet.config import check_choice

__all__ = ["FusedAdam", "NonFiniteGuardOptimizer", "build_optimizer", "learning_rate_schedule"]


def learning_rate_schedule(train_config):
    """The learning rate of ``train.lr_schedule``.

    ``"step"`` (default, the releases', docs/reference.md §6): piecewise
    constant, the rate times ``decay_rate**i`` after the i-th of
    ``decay_steps``. ``"cosine"``: linear from 0 to ``learning_rate`` over
    ``warmup_steps``, then a half cosine down to 0 at ``total_steps``.

    Args:
        train_config: `TrainConfig`: ``learning_rate`` (for ``batch_size``
            images), ``lr_schedule``, ``decay_steps`` (optimizer steps),
            ``decay_rate``, ``warmup_steps``, ``total_steps``.

    Returns:
        A `keras.optimizers.schedules.LearningRateSchedule`, or the float
        rate for "step" without a decay step.
    """
    if train_config.lr_schedule == "cosine":
        warmup = max(0, int(train_config.warmup_steps))
        return keras.optimizers.schedules.CosineDecay(
            0.0 if warmup else train_config.learning_rate,
            decay_steps=max(1, int(train_config.total_steps) - warmup),
            warmup_target=train_config.learning_rate if warmup else None,
            warmup_steps=warmup,
        )
    boundaries = sorted(int(s) for s in train_config.decay_steps)
    if not boundaries:
        return train_config.learning_rate
    values = [train_config.learning_rate * train_config.decay_rate**i for i in range(len(boundaries) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def build_optimizer(train_config):
    """The optimizer of ``train.optimizer`` with its schedule, behind a `NonFiniteGuardOptimizer`.

    Args:
        train_config: `TrainConfig`. ``optimizer``: ``"adam"`` (the
            releases': Keras' defaults, beta 0.9 / 0.999, epsilon 1e-7),
            ``"adamw"`` (Adam with decoupled ``weight_decay``) or ``"sgd"``
            (``momentum``, ``nesterov``); ``weight_decay`` applies to
            ``adamw`` and ``sgd`` (0: none; Adam's is the releases' none).

    Returns:
        `NonFiniteGuardOptimizer` around the Keras optimizer (for
        ``"adam"`` a `FusedAdam`).

    Raises:
        ValueError: an unknown ``train.optimizer``.
    """
    kind = check_choice("train.optimizer", getattr(train_config, "optimizer", "adam"))
    rate = learning_rate_schedule(train_config)
    decay = float(getattr(train_config, "weight_decay", 0.0)) or None
    if kind == "adam":
        inner = FusedAdam(rate)
    elif kind == "adamw":
        inner = keras.optimizers.AdamW(rate, weight_decay=decay or 0.0)
    else:
        inner = keras.optimizers.SGD(
            rate, momentum=float(getattr(train_config, "momentum", 0.9)),
            nesterov=bool(getattr(train_config, "nesterov", False)), weight_decay=decay,
        )
    return NonFiniteGuardOptimizer(inner)


def _handle(variable):
    """The resource handle of a `keras.Variable` or `tf.Variable` (this replica's, under `tf.distribute`)."""
    if isinstance(variable, keras.Variable):
        variable = variable.value
    return variable.handle


@keras.saving.register_keras_serializable(package="tf_centernet")
class FusedAdam(keras.optimizers.Adam):
    """`keras.optimizers.Adam` whose update of a variable is TensorFlow's one fused kernel.

    Keras' Adam updates each variable with about a dozen element-wise ops
    (each a pass over the weights, moments and temporaries); TensorFlow's
    ``ResourceApplyAdam`` does the same arithmetic in one pass, in place:
    m += (g - m)(1 - beta_1), v += (g^2 - v)(1 - beta_2),
    w -= lr sqrt(1 - beta_2^t) / (1 - beta_1^t) m / (sqrt(v) + epsilon),
    t the step (1-based). Same variables (so checkpoints of `keras.optimizers.Adam`
    resume), same results to float rounding. Sparse gradients, ``amsgrad``
    and other backends take Keras' update. Named ``adam`` by default, as Keras' Adam.
    """

    def __init__(self, *args, name="adam", **kwargs):
        super().__init__(*args, name=name, **kwargs)

    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad or isinstance(gradient, tf.IndexedSlices) or keras.backend.backend() != "tensorflow":
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        index = self._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable), m=_handle(self._momentums[index]), v=_handle(self._velocities[index]),
            beta1_power=tf.pow(tf.cast(self.beta_1, dtype), step), beta2_power=tf.pow(tf.cast(self.beta_2, dtype), step),
            lr=tf.cast(learning_rate, dtype), beta1=tf.cast(self.beta_1, dtype), beta2=tf.cast(self.beta_2, dtype),
            epsilon=tf.cast(self.epsilon, dtype), grad=tf.cast(gradient, dtype), use_locking=False,
        )


@keras.saving.register_keras_serializable(package="tf_centernet")
class NonFiniteGuardOptimizer(keras.optimizers.Optimizer):
    """Applies `inner_optimizer`'s steps whose loss and gradients are finite; skips the others.

    A skipped step changes nothing: no weight, no slot of the inner
    optimizer, and ``iterations`` (the inner optimizer's) does not advance.
    The decision is all-reduced across replicas under `tf.distribute`, so
    every replica takes the same branch; the inner optimizer's update runs
    in a `tf.cond` as in `keras.optimizers.LossScaleOptimizer` (which
    Keras wraps around this one when the model computes in float16). The
    loss is seen through `scale_loss`, which Keras' ``train_step`` calls
    before taking the gradients.

    Args:
        inner_optimizer: `keras.optimizers.Optimizer`. The optimizer whose
            steps are guarded (any Keras optimizer).
        name: str or None.

    Attributes:
        inner_optimizer: the wrapped optimizer; ``iterations``,
            ``learning_rate`` and ``variables`` are its own.

    Example:

    >>> opt = NonFiniteGuardOptimizer(keras.optimizers.SGD(0.1))
    >>> v = keras.Variable([1.0])
    >>> opt.apply([tf.constant([float("nan")])], [v])
    >>> float(v.numpy()[0]), int(opt.iterations.numpy())
    (1.0, 0)
    >>> opt.apply([tf.constant([1.0])], [v])
    >>> round(float(v.numpy()[0]), 3), int(opt.iterations.numpy())
    (0.9, 1)
    """

    _local = threading.local()  # the loss of this thread's (replica's) step

    def __init__(self, inner_optimizer, name=None, **kwargs):
        if kwargs:
            raise ValueError(
                f"NonFiniteGuardOptimizer takes no optimizer arguments ({', '.join(sorted(kwargs))}): "
                "set them on the inner optimizer."
            )
        super().__init__(learning_rate=0.0, name=name or "nonfinite_guard")
        self.inner_optimizer = inner_optimizer

    def __dir__(self):
        # Keras' weights-file writer walks `dir()` for nested saveables: the
        # inner optimizer is saved through `variables` only (see the module
        # docstring), not a second time under ``optimizer/inner_optimizer``.
        return [name for name in super().__dir__() if name != "inner_optimizer"]

    def build(self, var_list):
        """Builds the inner optimizer's slots for `var_list` (list of `keras.Variable`)."""
        self.inner_optimizer.build(var_list)
        super().build(var_list)

    @property
    def variables(self):
        """The inner optimizer's variables (the wrapper keeps none that matter)."""
        return self.inner_optimizer.variables

    @property
    def iterations(self):
        """The inner optimizer's step count (int64 `keras.Variable`): skipped steps do not count."""
        return self.inner_optimizer.iterations

    @property
    def learning_rate(self):
        """The inner optimizer's current learning rate."""
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.inner_optimizer.learning_rate = learning_rate

    def scale_loss(self, loss):
        """Notes `loss` for the finiteness check, then the inner optimizer's `scale_loss`."""
        NonFiniteGuardOptimizer._local.loss = loss
        return self.inner_optimizer.scale_loss(loss)

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(var_list)

    def check_finite(self, grads):
        """Scalar bool tensor: every gradient (and the step's loss, when seen) is finite, on every replica."""
        checks = [tf.reduce_all(tf.math.is_finite(g)) for g in grads if g is not None]
        loss = getattr(NonFiniteGuardOptimizer._local, "loss", None)
        NonFiniteGuardOptimizer._local.loss = None
        same_graph = loss is not None and (
            tf.executing_eagerly() or getattr(loss, "graph", None) is tf.compat.v1.get_default_graph()
        )
        if same_graph:
            checks.append(tf.reduce_all(tf.math.is_finite(loss)))
        finite = tf.reduce_all(tf.stack(checks)) if checks else tf.constant(True)
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            bad = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(tf.logical_not(finite), tf.float32))
            finite = tf.equal(bad, 0.0)
        return finite

    def apply(self, grads, trainable_variables=None):
        """Applies `grads` with the inner optimizer when they are finite; else changes nothing.

        Args:
            grads: list of gradient tensors (None entries allowed).
            trainable_variables: list of `keras.Variable` or None (those
                the optimizer was built with).
        """
        grads = list(grads)
        if not self.built:
            with keras.name_scope(self.name, caller=self):
                self.build(trainable_variables)
            self.built = True
        finite = self.check_finite(grads)

        def step():
            self.inner_optimizer.apply(grads, trainable_variables)

        if tf.distribute.in_cross_replica_context():
            raise ValueError("apply() must be called in a replica context.")
        if tf.__internal__.distribute.strategy_supports_no_merge_call():
            tf.cond(finite, step, lambda: None)
            return

        def cross_replica(distribution, finite, grads, trainable_variables):
            # The inner update calls merge_call itself: the condition is taken
            # in the cross-replica context (as LossScaleOptimizer does).
            agreed = distribution.experimental_local_results(finite)[0]

            def apply_all():
                distribution.extended.call_for_each_replica(
                    self.inner_optimizer.apply, args=(grads, trainable_variables)
                )

            tf.cond(agreed, apply_all, lambda: None)

        tf.distribute.get_replica_context().merge_call(cross_replica, args=(finite, grads, trainable_variables))

    def stateless_apply(self, optimizer_variables, grads, trainable_variables):
        raise NotImplementedError("NonFiniteGuardOptimizer runs on the TensorFlow backend's stateful apply.")

    def get_config(self):
        return {"name": self.name, "inner_optimizer": keras.saving.serialize_keras_object(self.inner_optimizer)}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        inner = keras.saving.deserialize_keras_object(config.pop("inner_optimizer"), custom_objects=custom_objects)
        return cls(inner, **config)
