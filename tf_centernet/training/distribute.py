"""Distribution strategies and the roles of workers in a multi-worker job.

`get_strategy` picks the `tf.distribute.Strategy` named by
``train.strategy``:

- ``one_device``: the first GPU, else the CPU;
- ``mirrored``: `MirroredStrategy` over every visible GPU of this machine
  (else over the logical CPUs);
- ``multi_worker``: `MultiWorkerMirroredStrategy` over the cluster that the
  ``TF_CONFIG`` environment variable describes (TensorFlow's collective
  runtime: gradients are all-reduced across workers every step);
- ``tpu``: `TPUStrategy` with a `TPUClusterResolver` (code only: no TPU was
  available when this was written; untested);
- ``auto``: ``multi_worker`` when ``TF_CONFIG`` names more than one worker,
  else ``mirrored`` over the GPUs when there is at least one, else one
  device (the CPU).

Worker roles (TensorFlow's multi-worker guidance): the *chief* (task type
``chief``, or ``worker`` 0 when the cluster has no ``chief``) writes the
model directory; every other worker writes its checkpoints to a temporary
folder of its own (`worker_write_dir`) that is deleted again
(`remove_worker_dir`), so nothing is written twice into the model
directory, and all workers take part in every save.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile

import tensorflow as tf

from tf_centernet.config import CHOICES, check_choice

logger = logging.getLogger("tf_centernet")

STRATEGIES = CHOICES["train.strategy"]


def tf_config():
    """The parsed ``TF_CONFIG`` environment variable, or {} when unset.

    Raises:
        ValueError: ``TF_CONFIG`` is not JSON, or lacks ``cluster`` or
            ``task`` where the other is given.
    """
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        return {}
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON: {error}") from None
    if not isinstance(parsed, dict) or ("cluster" in parsed) != ("task" in parsed):
        raise ValueError("TF_CONFIG must be a JSON object with both 'cluster' and 'task'.")
    return parsed


def num_workers():
    """Number of training tasks (``chief`` + ``worker``) in ``TF_CONFIG``; 1 without it."""
    cluster = tf_config().get("cluster", {})
    return max(1, len(cluster.get("chief", [])) + len(cluster.get("worker", [])))


def task():
    """(task type, task index) of this process from ``TF_CONFIG``; (None, 0) without it."""
    info = tf_config().get("task", {})
    return info.get("type"), int(info.get("index", 0))


def is_chief(task_type=None, task_index=None):
    """Whether this process is the chief (writes the model directory).

    Args:
        task_type, task_index: default to ``TF_CONFIG``'s task.

    Returns:
        True for task type None (no cluster), ``chief``, or ``worker`` 0
        when the cluster has no ``chief`` task.
    """
    if task_type is None and task_index is None:
        task_type, task_index = task()
    if task_type is None or task_type == "chief":
        return True
    cluster = tf_config().get("cluster", {})
    return task_type == "worker" and int(task_index or 0) == 0 and "chief" not in cluster


def get_strategy(kind="auto"):
    """The distribution strategy for training (see the module docstring).

    Args:
        kind: str, one of `STRATEGIES`.

    Returns:
        A `tf.distribute.Strategy`. Create it before any other TensorFlow
        op runs when it is ``multi_worker`` (TensorFlow's requirement).

    Raises:
        ValueError: unknown `kind`, or ``multi_worker`` with a malformed
            ``TF_CONFIG``.
    """
    check_choice("train.strategy", kind)
    if kind == "auto" and num_workers() > 1:
        kind = "multi_worker"
    if kind == "multi_worker":
        tf_config()  # validates
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        logger.info(
            "MultiWorkerMirroredStrategy: %d worker(s), this is %s %d%s",
            num_workers(), *task(), " (chief)" if is_chief() else "",
        )
        return strategy
    if kind == "tpu":  # untested: no TPU available when written
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    gpus = tf.config.list_logical_devices("GPU")
    if kind == "auto":
        if gpus:
            return tf.distribute.MirroredStrategy([d.name for d in gpus])
        return tf.distribute.OneDeviceStrategy("/cpu:0")
    if kind == "mirrored":
        devices = gpus or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")


def strategy_is_chief(strategy):
    """Whether this process is the chief of `strategy`'s cluster (always True on one machine)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    return is_chief(resolver.task_type, resolver.task_id)


def worker_write_dir(model_dir, chief):
    """Where this worker writes checkpoints: the model directory for the chief.

    A non-chief worker gets a new temporary folder outside the model
    directory (remove it with `remove_worker_dir`).
    """
    if chief:
        return model_dir
    task_type, index = task()
    return tempfile.mkdtemp(prefix=f"tf-centernet-{task_type or 'worker'}{index}-")


def remove_worker_dir(path, model_dir):
    """Deletes a non-chief worker's temporary folder (never the model directory)."""
    if path and os.path.abspath(path) != os.path.abspath(model_dir):
        shutil.rmtree(path, ignore_errors=True)


def all_equal_across_workers(strategy, value):
    """Whether every replica of `strategy` holds the same integer `value`.

    Used after restoring: every worker must resume from the same step. Two
    all-reduce sums (of the value and of its square) are equal to n·v and
    n·v² only when all n values are equal.
    """
    if strategy.num_replicas_in_sync <= 1:
        return True
    v = tf.constant(float(value), tf.float64)

    def replica_fn():
        ctx = tf.distribute.get_replica_context()
        return ctx.all_reduce("sum", tf.stack([v, v * v, tf.constant(1.0, tf.float64)]))

    sums = strategy.experimental_local_results(strategy.run(tf.function(replica_fn)))[0].numpy()
    total, squares, n = sums
    return abs(n * squares - total * total) < 0.5


def in_multi_worker_mode(strategy):
    """Whether `strategy` is a MultiWorkerMirroredStrategy over more than one worker."""
    extended = getattr(strategy, "extended", None)
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and bool(
        getattr(extended, "_in_multi_worker_mode", lambda: False)()
    )
