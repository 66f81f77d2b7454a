"""`detect` on a folder, and a SIGTERM during `export` (issue 22, item 9).

The model directory is made here: the tiny detector saved as a preset
plus its config.yaml, as `tf-centernet convert` writes one.
"""

import os
import signal

import cv2
import numpy as np
import pytest
import tensorflow as tf

from support.tiny import TINY_MODEL
from tf_centernet import config as config_lib
from tf_centernet.cli import main
from tf_centernet.models import build_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    config = config_lib.load_config("demo", ["model.num_classes=1", "decode.flip_test=false", *TINY_MODEL,
                                             f"train.model_dir={folder}"])
    build_model(config.model, config.loss, config.decode, config.data).save_to_preset(str(folder))
    (folder / "config.yaml").write_text(config_lib.to_yaml(config))
    return str(folder)


def test_detect_reads_a_folders_images(model_dir, tmp_path, caplog):
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for name in ("b.png", "a.JPG"):
        cv2.imwrite(str(pictures / name), np.full((40, 60, 3), 90, np.uint8))
    (pictures / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    assert main(["detect", "--model-dir", model_dir, str(pictures), "--output", str(out)]) == 0
    assert sorted(os.listdir(out)) == ["a_detections.jpg", "b_detections.jpg", "detections.json"]
    assert "Image file not found" not in caplog.text
    # A folder without images: said so, exit 1 (as for unreadable images), the others still done.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["detect", "--model-dir", model_dir, str(empty), str(pictures / "a.JPG"),
                 "--output", str(tmp_path / "out2")]) == 1
    assert f"Skipping folder {empty}: no image files" in caplog.text
    assert os.path.isfile(tmp_path / "out2" / "a_detections.jpg")


def test_sigterm_during_export_leaves_no_version_folder(model_dir, tmp_path, monkeypatch, caplog):
    saved, before = [], signal.getsignal(signal.SIGTERM)

    def interrupted(module, path, signatures=None):
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "saved_model.pb"), "wb") as f:
            f.write(b"half")
        saved.append(path)
        os.kill(os.getpid(), signal.SIGTERM)  # the handler raises at the next bytecode
        raise AssertionError("not reached")

    monkeypatch.setattr(tf.saved_model, "save", interrupted)
    output = tmp_path / "serving" / "detector" / "1"
    with pytest.raises(SystemExit) as error:
        main(["export", "--model-dir", model_dir, "--output", str(output)])
    assert error.value.code == 128 + signal.SIGTERM
    assert saved and "Interrupted by SIGTERM: export stopped" in caplog.text
    assert os.listdir(tmp_path / "serving" / "detector") == []  # no version folder, no partial one
    assert signal.getsignal(signal.SIGTERM) == before  # the export's handler is gone again
