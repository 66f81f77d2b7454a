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
from tf_centernet.training.optimizer import FusedAdam, NonFiniteGuardOptimizer, build_optimizer


def test_build_optimizer_wraps_the_named_keras_optimizer():
    config = load_config("demo", ["train.optimizer=sgd", "train.momentum=0.8", "train.weight_decay=1e-4"])
    optimizer = build_optimizer(config.train)
    assert isinstance(optimizer, NonFiniteGuardOptimizer)
    inner = optimizer.inner_optimizer
    assert type(inner) is keras.optimizers.SGD and inner.momentum == 0.8 and inner.weight_decay == 1e-4
    assert type(build_optimizer(load_config("demo").train).inner_optimizer) is FusedAdam  # the default: Adam
    adamw = build_optimizer(load_config("demo", ["train.optimizer=adamw", "train.weight_decay=0.05"]).train)
    assert type(adamw.inner_optimizer) is keras.optimizers.AdamW and adamw.inner_optimizer.weight_decay == 0.05
    with pytest.raises(ValueError, match="train.optimizer"):
        load_config("demo", ["train.optimizer=rmsprop"])


def numpy_adam(weights, grads, lr, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
    """Adam as Kingma & Ba's algorithm 1 with Keras' epsilon-hat placement, in float64 (betas as float32 holds them)."""
    beta_1, beta_2 = float(np.float32(beta_1)), float(np.float32(beta_2))
    w, m, v = np.array(weights, np.float64), 0.0, 0.0
    for t, g in enumerate(grads, start=1):
        m = beta_1 * m + (1 - beta_1) * g
        v = beta_2 * v + (1 - beta_2) * g * g
        w = w - lr * np.sqrt(1 - beta_2**t) / (1 - beta_1**t) * m / (np.sqrt(v) + epsilon)
    return w, m, v


def stepper(optimizer, weight):
    return lambda grad: optimizer.apply([grad], [weight])


@pytest.mark.parametrize("in_function", [False, True])
def test_fused_adam_steps_like_adam_and_algorithm_1(in_function):
    """One fused kernel per variable: weights and moments as Keras' Adam and a float64 reference."""
    rng = np.random.default_rng(0)
    start = rng.normal(size=(6, 5)).astype("float32")
    grads = [rng.normal(scale=s, size=start.shape).astype("float32") for s in (1.0, 0.1, 3.0, 1e-3)]
    results = []
    for cls in (keras.optimizers.Adam, FusedAdam):
        weight = keras.Variable(start)
        optimizer = cls(0.01)
        optimizer.build([weight])
        apply = stepper(optimizer, weight)
        apply = tf.function(apply) if in_function else apply
        for grad in grads:
            apply(tf.constant(grad))
        state = {v.path.replace("/", "_").rsplit("_", 1)[-1]: np.asarray(v.numpy()) for v in optimizer.variables}
        results.append({"weight": weight.numpy(), **state})  # adam/iteration, .../learning_rate, ..._momentum, ..._velocity
    assert sorted(results[1]) == ["iteration", "momentum", "rate", "velocity", "weight"]
    for name, keras_value in results[0].items():  # float32 rounding of values ~1
        np.testing.assert_allclose(results[1][name], keras_value, rtol=1e-5, atol=1e-6, err_msg=name)
    w, m, v = numpy_adam(start, grads, 0.01)
    fused = results[1]
    assert int(fused["iteration"]) == len(grads)
    np.testing.assert_allclose(fused["weight"], w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fused["momentum"], m, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(fused["velocity"], v, rtol=1e-5, atol=1e-9)
    assert np.abs(fused["weight"] - start).max() > 0.03  # it moved (4 steps of about lr = 0.01)


def test_fused_adam_keeps_adams_variables_and_falls_back_where_it_cannot_fuse():
    """Same slot variables as Adam (checkpoints interchange); amsgrad and sparse gradients use Keras' update."""
    adam, fused = keras.optimizers.Adam(), FusedAdam()
    weight = keras.Variable(np.ones((3, 2), "float32"))
    adam.build([weight])
    fused.build([weight])
    def layout(optimizer):  # the optimizer's name is made unique per process: adam, adam_1, ...
        return [(v.path.split("/", 1)[1], v.shape, v.dtype) for v in optimizer.variables]

    assert fused.name.startswith("adam") and layout(fused) == layout(adam)
    assert FusedAdam.from_config(fused.get_config()).get_config() == fused.get_config()
    for optimizer in (FusedAdam(0.1, amsgrad=True), FusedAdam(0.1)):
        table = keras.Variable(np.zeros((4, 2), "float32"))
        sparse = tf.IndexedSlices(tf.ones((1, 2)), tf.constant([2]), tf.constant([4, 2]))
        optimizer.apply([sparse if not optimizer.amsgrad else tf.ones((4, 2))], [table])
        moved = np.abs(table.numpy()).max(axis=1) > 0
        assert moved.tolist() == ([True] * 4 if optimizer.amsgrad else [False, False, True, False])


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
