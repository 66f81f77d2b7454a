"""Multi-worker training: roles, input sharding, two real worker processes, faults, XLA."""

import glob
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from support import REPO_ROOT
from support.tiny import TINY_MODEL
from tf_centernet.checkpoints import validate_checkpoint
from tf_centernet.config import load_config
from tf_centernet.data import CocoDataset, build_train_dataset
from tf_centernet.models.presets import build_model
from tf_centernet.training import distribute

WORKER = os.path.join(REPO_ROOT, "tests", "support", "train_worker.py")


def _tf_config(ports, index, kind="worker"):
    return json.dumps({
        "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
        "task": {"type": kind, "index": index},
    })


def test_tf_config_roles(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.num_workers() == 1 and distribute.task() == (None, 0) and distribute.is_chief()
    monkeypatch.setenv("TF_CONFIG", _tf_config([1, 2, 3], 2))
    assert distribute.num_workers() == 3 and distribute.task() == ("worker", 2)
    assert not distribute.is_chief() and distribute.is_chief("worker", 0)
    monkeypatch.setenv("TF_CONFIG", json.dumps({
        "cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "worker", "index": 0}}))
    assert distribute.num_workers() == 2 and not distribute.is_chief() and distribute.is_chief("chief", 0)
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distribute.tf_config()
    with pytest.raises(ValueError, match="train.strategy"):
        distribute.get_strategy("parameter_server")


def test_worker_dir_is_temporary_and_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", _tf_config([1, 2], 1))
    model_dir = str(tmp_path / "model")
    assert distribute.worker_write_dir(model_dir, chief=True) == model_dir
    own = distribute.worker_write_dir(model_dir, chief=False)
    assert os.path.isdir(own) and not own.startswith(model_dir)
    distribute.remove_worker_dir(own, model_dir)
    assert not os.path.exists(own)
    os.makedirs(model_dir)
    distribute.remove_worker_dir(model_dir, model_dir)  # never the model directory
    assert os.path.isdir(model_dir)


def test_sharded_input_equals_one_pipeline(synthetic_coco):
    """Two pipelines (workers) with one replica each see, step by step, the
    per-replica batches one pipeline feeding two replicas gives: replica r of
    step s gets elements [(2s + r) * b, (2s + r + 1) * b). No image repeats."""
    image_dir, annotation_file = synthetic_coco
    config = load_config("demo", [f"train_data.images={image_dir}", "data.num_parallel_calls=0"])
    dataset = CocoDataset(annotation_file, image_dir)
    per_replica, steps = 2, 3
    one = build_train_dataset(dataset, config, batch_size=per_replica)
    expected = [x for x, _ in one.take(2 * steps)]
    for worker in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=worker, num_replicas_in_sync=2)
        sharded = build_train_dataset(dataset, config, batch_size=2 * per_replica, input_context=context)
        got = [x for x, _ in sharded.take(steps)]
        for step, images in enumerate(got):
            assert images.shape[0] == per_replica
            np.testing.assert_array_equal(images.numpy(), expected[2 * step + worker].numpy())
    assert not np.array_equal(expected[0].numpy(), expected[1].numpy())


# ------------------------------------------------------------ worker processes


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _start(args, log_path, tf_config=None, tmpdir=None):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("TF_CONFIG", None)
    if tf_config:
        env["TF_CONFIG"] = tf_config
    if tmpdir:
        os.makedirs(tmpdir, exist_ok=True)
        env["TMPDIR"] = tmpdir
    log = open(log_path, "w")
    return subprocess.Popen([sys.executable, *args], env=env, stdout=log, stderr=subprocess.STDOUT)


def _wait_all(procs, timeout):
    deadline = time.monotonic() + timeout
    try:
        for proc in procs:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return [proc.returncode for proc in procs]


def _overrides(synthetic_coco, model_dir, steps, every):
    image_dir, annotation_file = synthetic_coco
    return [
        f"train_data.images={image_dir}", f"train_data.annotations={annotation_file}",
        f"train.model_dir={model_dir}", "train.batch_size=2", f"train.total_steps={steps}",
        f"train.steps_per_epoch={steps}", f"train.checkpoint_every={every}", "train.log_every=1",
        "data.num_parallel_calls=0", *TINY_MODEL,
    ]


def _tail(path):
    with open(path) as f:
        return f.read()[-3000:]


@pytest.mark.slow
def test_two_workers_equal_one_process(synthetic_coco, tmp_path):
    """Two MultiWorkerMirroredStrategy processes (one replica each, global
    batch 2) against one process with MirroredStrategy over two logical CPUs
    (two replicas, global batch 2): the same replicas see the same images and
    the gradients are summed the same way, so losses and weights agree to
    float tolerance (all-reduce order may differ); the two workers hold
    bit-identical trainable weights."""
    steps = 3
    ports = _free_ports(2)
    model_dir = str(tmp_path / "model")
    worker = WORKER
    procs = [
        _start([worker, str(tmp_path / f"w{i}.npz"), "1", *_overrides(synthetic_coco, model_dir, steps, 2)],
               tmp_path / f"log{i}", _tf_config(ports, i), str(tmp_path / f"tmp{i}"))
        for i in range(2)
    ]
    procs.append(_start(
        [worker, str(tmp_path / "single.npz"), "2", *_overrides(synthetic_coco, str(tmp_path / "single"), steps, 2),
         "train.strategy=mirrored"], tmp_path / "logs"))
    codes = _wait_all(procs, timeout=1800)
    for code, name in zip(codes, ("log0", "log1", "logs")):
        assert code == 0, _tail(tmp_path / name)
    w0, w1, single = (np.load(tmp_path / f"{n}.npz") for n in ("w0", "w1", "single"))
    assert len(w0["loss"]) == steps
    np.testing.assert_allclose(w0["loss"], single["loss"], rtol=1e-4)
    np.testing.assert_array_equal(w0["loss"], w1["loss"])
    names = [f"w{i}" for i in w0["trainable"]]
    config = load_config("demo", _overrides(synthetic_coco, model_dir, steps, 2))
    reference = build_model(config.model)
    reference.build((None, config.data.input_size, config.data.input_size, 3))
    assert len(names) == len(reference.trainable_weights)  # all of them
    for name in names:  # the trainable weights: one all-reduced update
        np.testing.assert_array_equal(w0[name], w1[name], err_msg=name)
    # Batch-norm moving statistics are updated from each worker's own images
    # (Keras 3 does not all-reduce them); the chief's are the ones saved.
    others = [k for k in w0.files if k.startswith("w") and k not in names]
    assert all(np.isfinite(w1[k]).all() for k in others)
    # Adam turns float noise in near-zero gradients into whole steps of
    # some single weights, so the two runs' weights are compared as a whole.
    flat = lambda npz: np.concatenate([npz[n].ravel() for n in names])  # noqa: E731
    difference = np.linalg.norm(flat(w0) - flat(single)) / np.linalg.norm(flat(single))
    assert difference < 1e-3
    # Only the chief wrote the model directory; the other worker's temporary
    # folder is gone.
    saved = sorted(os.path.basename(p) for p in glob.glob(os.path.join(model_dir, "checkpoints", "*")))
    assert saved == ["ckpt-2.weights.h5", "ckpt-3.weights.h5"]
    assert not [n for n in os.listdir(tmp_path / "tmp1") if n.startswith("tf-centernet-")]
    logs = [open(tmp_path / f"log{i}").read() for i in range(2)]
    assert "this is worker 0 (chief)" in logs[0] and "this is worker 1" in logs[1] and "(chief)" not in logs[1]


@pytest.mark.slow
def test_killed_worker_job_resumes_from_same_step(synthetic_coco, tmp_path):
    steps = 6
    ports = _free_ports(2)
    model_dir = str(tmp_path / "model")
    command = ["-m", "tf_centernet", "train", "--config", "demo", "--progress", "log",
               "--set", *_overrides(synthetic_coco, model_dir, steps, 2)]

    def start(round_):
        return [_start(command, tmp_path / f"r{round_}-{i}", _tf_config(ports, i), str(tmp_path / f"tmp{i}"))
                for i in range(2)]

    first = start(1)
    manifest = os.path.join(model_dir, "checkpoints.sha256")
    deadline = time.monotonic() + 1500
    try:
        while time.monotonic() < deadline and all(p.poll() is None for p in first):
            if os.path.isfile(manifest) and "ckpt-2." in open(manifest).read():
                break
            time.sleep(0.5)
        assert all(p.poll() is None for p in first), _tail(tmp_path / "r1-0")
        first[1].send_signal(signal.SIGKILL)  # a worker dies
        first[1].wait()
        time.sleep(2)
    finally:
        for p in first:  # the job is torn down, as an orchestrator would
            if p.poll() is None:
                p.kill()
                p.wait()
    saved = {int(re.search(r"ckpt-(\d+)", p).group(1)): os.stat(p).st_mtime_ns
             for p in glob.glob(os.path.join(model_dir, "checkpoints", "ckpt-*.weights.h5"))}
    last = max(saved)
    assert 2 <= last < steps
    codes = _wait_all(start(2), timeout=1200)
    logs = [open(tmp_path / f"r2-{i}").read() for i in range(2)]  # "Resumed" is near the start
    assert codes == [0, 0], [text[-3000:] for text in logs]
    resumed = [re.search(r"Resumed from \S+ \(step (\d+)\)", text) for text in logs]
    assert all(resumed), [text[-3000:] for text in logs]
    assert [int(m.group(1)) for m in resumed] == [last, last]
    assert re.search(rf"step {steps}/{steps} ", logs[0])
    final = glob.glob(os.path.join(model_dir, "checkpoints", "ckpt-*.weights.h5"))
    assert os.path.join(model_dir, "checkpoints", f"ckpt-{steps}.weights.h5") in final
    for path in final:
        assert validate_checkpoint(path) is None, path
    # The checkpoint resumed from was not written again.
    assert os.stat(os.path.join(model_dir, "checkpoints", f"ckpt-{last}.weights.h5")).st_mtime_ns == saved[last]
    assert not glob.glob(os.path.join(model_dir, "checkpoints", ".partial-*"))


@pytest.mark.slow
def test_jit_compile_first_step_loss_matches(synthetic_coco, tmp_path):
    from tf_centernet.training import train
    from tf_centernet.training.distribute import get_strategy

    losses = {}
    for jit in (False, True):
        config = load_config("demo", _overrides(synthetic_coco, str(tmp_path / f"jit{jit}"), 1, 1)
                             + [f"train.jit_compile={str(jit).lower()}", "model.pooling_impl=scan"])
        _, history = train(config, strategy=get_strategy("one_device"), verbose=0)
        losses[jit] = history.history["loss"][0]
    assert np.isfinite(losses[False])
    assert losses[True] == pytest.approx(losses[False], rel=1e-3)
