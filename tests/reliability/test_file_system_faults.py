"""Full disks, read-only folders and over-long names end in one line and exit 2, with nothing lost.

Where the tests run as root and may mount (`fs_faults`), the disk is a real
tmpfs of a few MiB and the read-only folder a read-only tmpfs; elsewhere a
monkeypatched write raises the same `OSError` (ENOSPC / EROFS) and the
read-only folder is ``chmod 555``. Each test says in its log which variant
ran (``-rA`` shows it).
"""

import errno
import gc
import logging
import os
import sys

import keras
import numpy as np
import pytest

from support.fs_faults import read_only_folder, small_filesystem
from support.tiny import TINY_MODEL
from tf_centernet import checkpoints as ckpt  # noqa: E402
from tf_centernet import cli  # noqa: E402
from tf_centernet.filesystem import PARTIAL_PREFIX, NotWritableError, check_writable  # noqa: E402
from tf_centernet.training.callbacks import CheckpointCallback  # noqa: E402

TINY_TRAIN = [
    *TINY_MODEL, "data.input_size=63", "train.batch_size=2", "train.decay_steps=[]",
]


def train_args(synthetic_coco, model_dir, *extra):
    image_dir, annotation_file = synthetic_coco
    return ["train", "--config", "demo", "--model-dir", str(model_dir), "--progress", "none", "--set",
            f"train_data.images={image_dir}", f"train_data.annotations={annotation_file}", *TINY_TRAIN, *extra]


def errors_logged(caplog):
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


def assert_one_clean_line(caplog, capfd):
    """Exactly one ERROR record, without exc_info, and no Python traceback on stderr."""
    gc.collect()  # an HDF5 handle left open would complain when collected
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception ignored" not in err, err[-2000:]
    errors = errors_logged(caplog)
    assert len(errors) == 1 and errors[0].exc_info is None, [r.getMessage() for r in errors]
    message = errors[0].getMessage()
    assert "\n" not in message
    return message


def small_model(units=64):
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(units), keras.layers.Dense(units)])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model


def fit_with_checkpoints(model, model_dir, steps, every=1, keep=10):
    callback = CheckpointCallback(str(model_dir), every, keep)
    x = np.zeros((steps, 8), "float32")
    model.fit(x, np.zeros((steps, model.output_shape[-1]), "float32"), batch_size=1, epochs=1,
              callbacks=[callback], verbose=0, shuffle=False)
    return callback


def leftovers(folder):
    return [n for n in os.listdir(folder) if n.startswith(PARTIAL_PREFIX)] if os.path.isdir(folder) else []


# ------------------------------------------------------------ disk full


def test_disk_full_during_training_stops_with_the_steps_lost(synthetic_coco, tmp_path, caplog, capfd, monkeypatch):
    """Item 2: a real 2.5 MiB tmpfs (one 1.6 MiB checkpoint fits) or a patched ENOSPC on the second save."""
    with small_filesystem(tmp_path / "disk", 2600) as disk:
        if disk is None:  # not root: the second save fails as a full disk does, after writing some bytes
            model_dir = tmp_path / "model"
            original, calls = ckpt.write_weights, []

            def full_disk(model, path):
                calls.append(path)
                if len(calls) == 2:
                    with open(path, "wb") as f:
                        f.write(b"\0" * 1000)
                    raise OSError(errno.ENOSPC, "No space left on device")
                return original(model, path)

            monkeypatch.setattr(ckpt, "write_weights", full_disk)
            logging.getLogger("tf_centernet").info("disk full: monkeypatched ENOSPC")
        else:
            model_dir = os.path.join(disk, "model")
            logging.getLogger("tf_centernet").info("disk full: real 2.5 MiB tmpfs")
        code = cli.main(train_args(synthetic_coco, model_dir, "train.total_steps=4", "train.steps_per_epoch=4",
                                   "train.checkpoint_every=1", "train.keep_checkpoints=3"))
        message = assert_one_clean_line(caplog, capfd)
        assert code == 2
        assert "Cannot write checkpoint of step 2" in message and "No space left on device" in message
        assert "the 1 step(s) since the last checkpoint (step 1," in message
        assert "free space on the file system of" in message and "run the same command to resume" in message
        folder = os.path.join(model_dir, "checkpoints")
        assert sorted(os.listdir(folder)) == ["ckpt-1.weights.h5"]  # no partial file, the intact one kept
        assert not leftovers(str(model_dir))
        assert ckpt.validate_checkpoint(os.path.join(folder, "ckpt-1.weights.h5")) is None


# The disk fills *during* the HDF5 write (the free-space check passed): run as
# the program, since HDF5 then holds a file it cannot close.
RACE = """
import sys
from tf_centernet import checkpoints
checkpoints.free_bytes = lambda folder: None  # as if the disk filled after the check
from tf_centernet.cli import main
sys.argv = ["tf-centernet", *sys.argv[1:]]
sys.exit(main())
"""


@pytest.mark.slow
def test_disk_filling_during_the_checkpoint_write_exits_2_without_a_crash(synthetic_coco, tmp_path):
    """Item 2, the write itself failing: no traceback storm, no SIGSEGV at exit, no partial file."""
    import subprocess

    with small_filesystem(tmp_path / "disk", 2600) as disk:
        if disk is None:
            pytest.skip("needs a real small file system (root and mount)")
        model_dir = os.path.join(disk, "model")
        repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([repo, os.path.join(repo, "tests")]),
                   TF_CPP_MIN_LOG_LEVEL="3")
        args = train_args(synthetic_coco, model_dir, "train.total_steps=4", "train.steps_per_epoch=4",
                          "train.checkpoint_every=1")
        done = subprocess.run([sys.executable, "-c", RACE, *args], capture_output=True, text=True, env=env,
                              timeout=300)
        assert done.returncode == 2, done.stderr[-3000:]  # not -11 (SIGSEGV), not 1
        assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr[-3000:]
        errors = [line for line in done.stderr.splitlines() if " ERROR tf_centernet: " in line]
        assert len(errors) == 1 and "Cannot write checkpoint of step 2" in errors[0]
        assert "No space left on device" in errors[0] and "(step 1," in errors[0]
        assert sorted(os.listdir(os.path.join(model_dir, "checkpoints"))) == ["ckpt-1.weights.h5"]


# ------------------------------------------------------------ read-only


@pytest.mark.parametrize("fault", [errno.EROFS, errno.EACCES])
def test_checkpoint_folder_turning_read_only_stops_without_losing_the_last_checkpoint(tmp_path, monkeypatch, fault):
    """Item 3 (monkeypatched, any user): the third save is refused; training stops at that step."""
    model = small_model()
    original, calls = ckpt.write_weights, []

    def refused(model, path):
        calls.append(path)
        if len(calls) >= 3:
            raise OSError(fault, os.strerror(fault), path)
        return original(model, path)

    monkeypatch.setattr(ckpt, "write_weights", refused)
    callback = fit_with_checkpoints(model, tmp_path, steps=6)
    assert len(calls) == 3  # stopped at the failing step: no save tried after it
    assert int(model.optimizer.iterations.numpy()) == 3
    message = str(callback.error)
    assert callback.error.exit_code == 2
    assert f"Cannot write checkpoint of step 3 in {tmp_path / 'checkpoints'}: {os.strerror(fault)}" in message
    assert "the 1 step(s) since the last checkpoint (step 2," in message and "make " in message
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["ckpt-1.weights.h5", "ckpt-2.weights.h5"]
    assert ckpt.latest_checkpoint(str(tmp_path)).endswith("ckpt-2.weights.h5")


def test_read_only_checkpoint_folder_is_refused_before_training(synthetic_coco, tmp_path, caplog, capfd,
                                                                 monkeypatch):
    """Item 3: `train` checks checkpoints/ first (read-only tmpfs as root, chmod 555 otherwise)."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    with read_only_folder(model_dir / "checkpoints", monkeypatch):
        code = cli.main(train_args(synthetic_coco, model_dir, "train.total_steps=2"))
        message = assert_one_clean_line(caplog, capfd)
    assert code == 2
    assert f"the checkpoint folder: cannot write in {model_dir / 'checkpoints'}" in message
    assert "Read-only file system" in message or "Permission denied" in message
    assert sorted(os.listdir(model_dir)) == ["checkpoints"]  # no lock, no config written


def test_convert_data_into_a_read_only_output_fails_before_reading(synthetic_coco, tmp_path, caplog, capfd,
                                                                    monkeypatch):
    """Item 4: --output is checked before the data are read and encoded."""
    image_dir, annotation_file = synthetic_coco
    with read_only_folder(tmp_path / "out", monkeypatch) as out:
        code = cli.main(["convert-data", "--config", "demo", "--output", os.path.join(out, "records"),
                         "--split", "train", "--set", f"train_data.images={image_dir}",
                         f"train_data.annotations={annotation_file}"])
        message = assert_one_clean_line(caplog, capfd)
    assert code == 2
    assert message.startswith(f"convert-data --output: cannot write in {out}:")
    assert not any("images," in r.getMessage() for r in caplog.records)  # the data were never read


def test_tfrecord_shards_failing_midway_leave_no_partial_file(synthetic_coco, tmp_path, monkeypatch):
    """A write error while converting: the old shard stays, no partial file, an OSError naming the file."""
    import tensorflow as tf

    from tf_centernet.data.coco import CocoDataset
    from tf_centernet.data.tfrecord import write_tfrecords

    dataset = CocoDataset(synthetic_coco[1], synthetic_coco[0])
    old = tmp_path / "train-00000-of-00001.tfrecord"
    old.write_bytes(b"the previous run's shard")

    class FullWriter(tf.io.TFRecordWriter):
        def write(self, record):
            raise tf.errors.ResourceExhaustedError(None, None, "write failed: No space left on device")

    monkeypatch.setattr(tf.io, "TFRecordWriter", FullWriter)
    with pytest.raises(OSError) as failed:
        write_tfrecords(dataset, str(tmp_path / "train"))
    assert failed.value.errno == errno.ENOSPC
    assert failed.value.filename == str(tmp_path / ".partial-train-00000-of-00001.tfrecord")
    assert sorted(os.listdir(tmp_path)) == ["train-00000-of-00001.tfrecord"]
    assert old.read_bytes() == b"the previous run's shard"


# ------------------------------------------------------------ names and exit codes


def test_over_long_model_dir_is_one_line_and_exit_2(tmp_path, caplog, capfd):
    """Item 5: a 300-character --model-dir, for train (to be created) and evaluate (must exist)."""
    long_dir = str(tmp_path / ("m" * 300))
    for command in (["train", "--config", "demo"], ["evaluate"]):
        caplog.clear()
        with pytest.raises(SystemExit) as stopped:
            cli.main([*command, "--model-dir", long_dir])
        assert stopped.value.code == 2, command
        message = assert_one_clean_line(caplog, capfd)
        assert message.startswith("--model-dir ") and "name too long" in message and "300 bytes" in message
    assert not os.listdir(tmp_path)  # nothing created
    nested = str(tmp_path / "new" / ("m" * 300))  # below a folder that does not exist yet
    caplog.clear()
    assert cli.main(["train", "--config", "demo", "--model-dir", nested]) == 2
    message = assert_one_clean_line(caplog, capfd)
    assert "File name too long (300 bytes, the limit is 255)" in message and "shorter name" in message
    assert not os.listdir(tmp_path)


def test_missing_model_dir_exits_2(tmp_path, caplog, capfd):
    """Item 8: evaluate / detect / export of a --model-dir that does not exist: status 2, one line."""
    for command in (["evaluate"], ["detect", "x.jpg"], ["export"]):
        caplog.clear()
        with pytest.raises(SystemExit) as stopped:
            cli.main([*command, "--model-dir", str(tmp_path / "nope")])
        assert stopped.value.code == 2, command
        assert "no such directory" in assert_one_clean_line(caplog, capfd)


@pytest.mark.parametrize("number", [errno.EROFS, errno.ENOSPC, errno.ENAMETOOLONG, errno.EACCES])
def test_os_errors_of_any_command_exit_2_in_one_line(monkeypatch, caplog, capfd, number):
    """Item 8: an OSError escaping a command (here raised by convert-data) is status 2, not 1 and no traceback."""
    from tf_centernet.cli import data_commands

    def failing(args):
        raise OSError(number, os.strerror(number), "/data/out/train-00000-of-00001.tfrecord")

    monkeypatch.setattr(data_commands, "cmd_convert_data", failing)  # build_parser imports it at each call
    assert cli.main(["convert-data", "--config", "demo", "--output", "/data/out"]) == 2
    message = assert_one_clean_line(caplog, capfd)
    assert "/data/out/train-00000-of-00001.tfrecord" in message and os.strerror(number) in message


def test_check_writable_names_the_folder_and_creates_nothing(tmp_path):
    target = tmp_path / "a" / "b"
    check_writable(str(target), "--output")
    assert not target.exists() and not (tmp_path / "a").exists() and not os.listdir(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotWritableError) as refused:
        check_writable(str(tmp_path / "file" / "sub"), "--output")
    assert refused.value.exit_code == 2 and "--output: cannot write in" in str(refused.value)
    assert "a file stands where a folder is expected" in str(refused.value)
