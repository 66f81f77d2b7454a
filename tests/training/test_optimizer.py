"""`train.optimizer` (adam, adamw, sgd) behind the non-finite guard: training, skipping, checkpoints."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from support.tiny import TINY_MODEL
from tf_centernet import losses
from tf_centernet.checkpoints import load_checkpoint, save_checkpoint
from tf_centernet.config import load_config
from tf_centernet.models.presets import build_model
from tf_centernet.training import train
from tf_centernet.training.distribute import get_strategy
from tf_centernet.training.optimizer import NonFiniteGuardOptimizer, build_optimizer


def test_build_optimizer_wraps_the_named_keras_optimizer():
    config = load_config("demo", ["train.optimizer=sgd", "train.momentum=0.8", "train.weight_decay=1e-4"])
    optimizer = build_optimizer(config.train)
    assert isinstance(optimizer, NonFiniteGuardOptimizer)
    inner = optimizer.inner_optimizer
    assert type(inner) is keras.optimizers.SGD and inner.momentum == 0.8 and inner.weight_decay == 1e-4
    assert type(build_optimizer(load_config("demo").train).inner_optimizer) is keras.optimizers.Adam  # the default
    adamw = build_optimizer(load_config("demo", ["train.optimizer=adamw", "train.weight_decay=0.05"]).train)
    assert type(adamw.inner_optimizer) is keras.optimizers.AdamW and adamw.inner_optimizer.weight_decay == 0.05
    with pytest.raises(ValueError, match="train.optimizer"):
        load_config("demo", ["train.optimizer=rmsprop"])


def test_guard_changes_nothing_on_a_non_finite_gradient_and_steps_like_the_inner_optimizer():
    """Wrapped and bare SGD-with-momentum agree on finite steps; a NaN step leaves weight, slot and count."""
    bare = keras.optimizers.SGD(0.1, momentum=0.9)
    guarded = NonFiniteGuardOptimizer(keras.optimizers.SGD(0.1, momentum=0.9))
    a, b = keras.Variable([1.0, 2.0]), keras.Variable([1.0, 2.0])
    for grad in ([1.0, -1.0], [0.5, 0.5]):
        bare.apply([tf.constant(grad)], [a])
        guarded.apply([tf.constant(grad)], [b])
    np.testing.assert_allclose(b.numpy(), a.numpy())
    before = [np.array(v.numpy()) for v in [b, *guarded.variables]]
    guarded.apply([tf.constant([np.nan, 1.0])], [b])
    after = [np.array(v.numpy()) for v in [b, *guarded.variables]]
    assert int(guarded.iterations.numpy()) == 2
    for x, y in zip(before, after):
        np.testing.assert_array_equal(x, y)


def _dataset_names(path):
    import h5py

    names = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return sorted(names)


def test_checkpoints_keep_the_layout_of_earlier_releases(tmp_path):
    """Earlier releases trained with Adam's own variables (``optimizer/vars/i``): the guard keeps that layout."""
    config = load_config("demo", TINY_MODEL + ["model.num_classes=2"])

    def compiled(seed, optimizer):
        keras.utils.set_random_seed(seed)
        model = build_model(config.model, config.loss, config.decode)
        model.compile(optimizer=optimizer)
        model.optimizer.build(model.trainable_variables)
        return model

    earlier = compiled(1, keras.optimizers.Adam(1e-3))  # what GuardedAdam (an Adam subclass) wrote
    for variable in earlier.optimizer.variables:  # distinct values: a shifted slot would show
        variable.assign(tf.cast(tf.random.uniform(variable.shape, 1, 9, seed=1), variable.dtype))
    old = save_checkpoint(earlier, str(tmp_path / "old"), 7, keep=1)
    resumed = compiled(2, NonFiniteGuardOptimizer(keras.optimizers.Adam(1e-3)))
    load_checkpoint(resumed, old)
    assert len(resumed.optimizer.variables) == len(earlier.optimizer.variables)
    for a, b in zip(earlier.optimizer.variables, resumed.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a.value), np.asarray(b.value))
    assert int(resumed.optimizer.iterations.numpy()) == int(earlier.optimizer.iterations.numpy())
    new = save_checkpoint(resumed, str(tmp_path / "new"), 7, keep=1)
    assert _dataset_names(new) == _dataset_names(old)  # no second copy under optimizer/inner_optimizer


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_each_optimizer_trains_and_skips_a_non_finite_step_without_touching_state(
    optimizer, synthetic_coco, tmp_path, monkeypatch
):
    """20 steps of a tiny detector: the loss falls, and the one NaN step changes no weight,
    no optimizer slot or count, and no BatchNorm statistic (``model.weights`` holds them)."""
    image_dir, annotation_file = synthetic_coco
    config = load_config("demo", [
        f"train_data.images={image_dir}", f"train_data.annotations={annotation_file}",
        f"train.model_dir={tmp_path / 'model'}", *TINY_MODEL, "data.input_size=63", "train.batch_size=4",
        "train.decay_steps=[]", "train.total_steps=20", "train.steps_per_epoch=10", "train.checkpoint_every=20",
        f"train.optimizer={optimizer}", "train.on_nonfinite=skip", "train.eval_every=0",
        *(["train.learning_rate=0.02"] if optimizer == "sgd" else []),
        *(["train.weight_decay=1e-4"] if optimizer == "adamw" else []),
    ])
    inject = tf.Variable(False)
    original = losses.detection_losses

    def injected(*args, **kwargs):
        terms = dict(original(*args, **kwargs))
        terms["loss"] = terms["loss"] * tf.where(inject, np.float32(np.nan), np.float32(1.0))
        return terms

    monkeypatch.setattr(losses, "detection_losses", injected)
    nan_batch = 2
    seen = {}

    class Inject(keras.callbacks.Callback):
        def _state(self):
            bn = [w for w in self.model.non_trainable_weights if "moving" in w.path]
            return [np.array(v.value) for v in self.model.weights + self.model.optimizer.variables], bn

        def on_train_batch_begin(self, batch, logs=None):
            inject.assign(batch == nan_batch)
            self.before, bn = self._state()
            seen.setdefault("bn", len(bn))

        def on_train_batch_end(self, batch, logs=None):
            after, _ = self._state()
            same = all(np.array_equal(a, b) for a, b in zip(after, self.before))
            seen.setdefault("unchanged", []).append(same)

    model, history = train(config, strategy=get_strategy("one_device"), verbose=0, extra_callbacks=[Inject()])
    assert seen["bn"] > 0  # the tiny detector has BatchNorm statistics, and they are compared
    assert seen["unchanged"][nan_batch] and not any(seen["unchanged"][:nan_batch])
    assert int(model.optimizer.iterations.numpy()) == 20  # the skipped step did not count
    loss = history.history["loss"]
    assert np.isfinite(loss).all() and loss[1] < loss[0], loss  # epoch means: steps 3-9, then 10-19


def test_float16_training_keeps_keras_loss_scaling_around_the_guard(synthetic_coco, tmp_path):
    """``model.compute_dtype=float16``: compile wraps the guard in Keras' LossScaleOptimizer. Its own
    overflow skips (each halves the scale) do not stop training: every step is either applied or
    such a skip."""
    image_dir, annotation_file = synthetic_coco
    config = load_config("demo", [
        f"train_data.images={image_dir}", f"train_data.annotations={annotation_file}",
        f"train.model_dir={tmp_path / 'model'}", *TINY_MODEL, "data.input_size=63", "train.batch_size=2",
        "train.decay_steps=[]", "train.total_steps=3", "train.steps_per_epoch=3", "train.checkpoint_every=3",
        "model.compute_dtype=float16",
    ])
    model, history = train(config, strategy=get_strategy("one_device"), verbose=0)
    optimizer = model.optimizer
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(optimizer.inner_optimizer, NonFiniteGuardOptimizer)
    halvings = round(np.log2(optimizer.initial_scale / float(optimizer.dynamic_scale.numpy())))
    assert int(optimizer.iterations.numpy()) + halvings == 3
    assert np.isfinite(history.history["loss"]).all()


def test_float16_checkpoints_keep_their_layout(tmp_path):
    """Under loss scaling, the guard sits where the earlier releases' GuardedAdam sat (same file layout)."""
    config = load_config("demo", TINY_MODEL + ["model.num_classes=2", "model.compute_dtype=float16"])
    names = []
    for inner in (keras.optimizers.Adam(1e-3), NonFiniteGuardOptimizer(keras.optimizers.Adam(1e-3))):
        model = build_model(config.model, config.loss, config.decode)
        model.compile(optimizer=inner)
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        model.optimizer.build(model.trainable_variables)
        names.append(_dataset_names(save_checkpoint(model, str(tmp_path / str(len(names))), 1, keep=1)))
    assert names[0] == names[1]
