"""The model directory is the unit; evaluate / detect skip bad images; Ctrl-C.

A model directory (config.yaml with a *relative* ``train.model_dir``, as the
demo writes, classes.json, one checkpoint) is copied elsewhere and used from
another working directory: export's label map and evaluate's output must
come from the copy.
"""

import json
import logging
import os
import shutil

import keras
import pytest

from support.corpus import build_image_corpus
from support.tiny import TINY_MODEL
from tf_centernet import cli  # noqa: E402
from tf_centernet.config import load_config, to_yaml  # noqa: E402
from tf_centernet.data.classes import write_classes  # noqa: E402
from tf_centernet.data.coco import CocoDataset  # noqa: E402
from tf_centernet.models import build_model  # noqa: E402

CATEGORIES = [{"id": 7, "name": "cat"}, {"id": 3, "name": "bird"}, {"id": 90, "name": "toaster"}]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A trained-model directory (random weights) with 3 non-contiguous categories."""
    root = tmp_path_factory.mktemp("model_dir_case")
    corpus = build_image_corpus(str(root / "images"))
    names = ["good.jpg", "grayscale.png", "truncated.jpg", "zero_byte.jpg", "naïve_ünïcode_名前.jpg"]
    images = [{"id": i + 1, "file_name": n, "height": 48, "width": 64} for i, n in enumerate(names)]
    annotations = [{"id": i + 1, "image_id": i + 1, "category_id": 7, "bbox": [5.0, 5.0, 20.0, 20.0],
                    "area": 400.0, "iscrowd": 0} for i in range(len(names))]
    annotation_file = root / "val.json"
    annotation_file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    model_dir = root / "original"
    (model_dir / "checkpoints").mkdir(parents=True)
    config = load_config("demo", [
        "data.input_size=63", *TINY_MODEL, f"validation_data.annotations={annotation_file}",
        f"validation_data.images={os.path.dirname(corpus['good.jpg'])}", "decode.flip_test=false",
        "train.model_dir=runs/relative/model",  # relative, as the demo's: must not win
    ])
    (model_dir / "config.yaml").write_text(to_yaml(config))
    write_classes(str(model_dir), CocoDataset(str(annotation_file), os.path.dirname(corpus["good.jpg"])))
    keras.utils.set_random_seed(0)
    model = build_model(config.model)
    model.build((None, 63, 63, 3))
    model.save_weights(str(model_dir / "checkpoints" / "ckpt-1.weights.h5"))
    return root, str(model_dir), corpus


@pytest.mark.slow
def test_copied_model_dir_exports_and_evaluates_from_another_cwd(model_dir, tmp_path, monkeypatch):
    root, original, _ = model_dir
    copy = str(tmp_path / "elsewhere" / "copied_model")
    shutil.copytree(original, copy)
    cwd = tmp_path / "unrelated_cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert cli.main(["export", "--model-dir", copy]) == 0
    with open(os.path.join(copy, "export", "saved_model", "1", "assets", "label_map.json"), encoding="utf-8") as f:
        label_map = json.load(f)
    # Class order: category ids ascending (3, 7, 90), names from classes.json.
    assert label_map == [{"id": 3, "name": "bird"}, {"id": 7, "name": "cat"}, {"id": 90, "name": "toaster"}]

    assert cli.main(["evaluate", "--model-dir", copy]) == 0
    with open(os.path.join(copy, "eval", "metrics.json"), encoding="utf-8") as f:
        metrics = json.load(f)
    # 5 listed images: 2 undecodable ones are counted skips, the 3 good ones scored.
    assert metrics["num_images"] == 3 and metrics["skipped_unreadable_images"] == 2
    assert not os.path.exists(os.path.join(original, "eval"))
    assert os.listdir(cwd) == []  # nothing written into the working directory


@pytest.mark.slow
def test_detect_keeps_results_of_good_images(model_dir, tmp_path, caplog):
    _, original, corpus = model_dir
    files = [corpus["good.jpg"], corpus["truncated.jpg"], corpus["text_as.jpg"], corpus["rgba.png"]]
    out = str(tmp_path / "detections")
    with caplog.at_level(logging.WARNING):
        code = cli.main(["detect", *files, "--model-dir", original, "--output", out, "--score-threshold", "0"])
    assert code == 1  # some files could not be read
    with open(os.path.join(out, "detections.json"), encoding="utf-8") as f:
        results = json.load(f)
    # Random weights may find nothing in an image; both good images were processed.
    assert {r["file_name"] for r in results} <= {"good.jpg", "rgba.png"}
    assert sorted(os.listdir(out)) == ["detections.json", "good_detections.jpg", "rgba_detections.jpg"]
    assert all(r["category"] in {"bird", "cat", "toaster"} for r in results)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "truncated.jpg" in text and "text_as.jpg" in text and "2 image(s) could not be read" in text


def test_missing_model_dir_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no such directory"):
        cli.main(["evaluate", "--model-dir", str(tmp_path / "nope")])


def test_ctrl_c_is_one_line_without_traceback(monkeypatch, capsys, caplog):
    def interrupted(args):
        raise KeyboardInterrupt

    from tf_centernet.cli import model_commands

    monkeypatch.setattr(model_commands, "cmd_detect", interrupted)
    assert cli.main(["detect", "x.jpg"]) == 130
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert lines == ["Interrupted (Ctrl-C): detect stopped."]


def test_only_model_directory_spells_the_model_directory_layout():
    """No string in tf_centernet/ (docstrings and prose aside) is a model-directory file or folder name,
    or a path through one, but in `tf_centernet.model_dir`."""
    import ast

    names = {"config.yaml", "classes.json", "metrics.jsonl", ".train.lock", "checkpoints.sha256", "best.json",
             "checkpoints", "logs"}
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tf_centernet")
    found = []
    for folder, _, files in os.walk(root):
        rel_folder = os.path.relpath(folder, root).replace(os.sep, "/")
        for name in files:
            rel = f"{rel_folder}/{name}".lstrip("./")
            if not name.endswith(".py") or rel == "model_dir.py":
                continue
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                tree = ast.parse(f.read())
            docstrings = {
                id(node.body[0].value) for node in ast.walk(tree)
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
            }
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                    words = {w.strip("`'\".,:;()") for w in node.value.split()}
                    paths = {part for w in words if "/" in w for part in w.split("/")}
                    if node.value in names or paths & names:  # a path, or a part of one (prose may name files)
                        found.append(f"{rel}:{node.lineno}: {node.value!r}")
    assert found == []
