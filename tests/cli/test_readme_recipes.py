"""The README's own-data commands, run as written on a data set built here.

The commands are read from README.md (the block that starts with the
``# my_data/train and my_data/val`` comment), not retyped; only `train` gets
extra ``--set`` overrides appended so that it runs 2 steps of the tiny
hourglass (tests/tiny.py) at 127 px instead of the recipe's full schedule.
"""

import json
import os
import shlex

import cv2
import numpy as np
import pytest

from support import REPO_ROOT
from support.tiny import TINY_MODEL
from tf_centernet.cli import main

REPO = REPO_ROOT
MARKER = "# my_data/train and my_data/val"
QUICK_TRAIN = ["--set", "train.total_steps=2", "train.steps_per_epoch=2", "train.checkpoint_every=2",
               "train.log_every=1", "train.batch_size=2", "data.input_size=127", "train.eval_every=0",
               "train.image_summary_every=0", *TINY_MODEL]


def readme_commands(marker):
    """The tf-centernet commands of the README block that starts with `marker`, as argv lists."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        text = f.read()
    block = text.split(marker, 1)[1].split("```", 1)[0]
    lines = block.replace("\\\n", " ").splitlines()
    return [shlex.split(line)[1:] for line in lines if line.startswith("tf-centernet ")]


def write_labelimg_split(root, names, rng):
    """`root/images/NAME.jpg` + `root/annotations/NAME.xml` (LabelImg's Pascal VOC), two classes."""
    os.makedirs(os.path.join(root, "images"))
    os.makedirs(os.path.join(root, "annotations"))
    for name in names:
        image = np.full((180, 240, 3), 40, np.uint8)
        objects = []
        for k, cls in enumerate(("cat", "dog")):
            x1, y1 = int(rng.integers(10, 100)), int(rng.integers(10, 80))
            x2, y2 = x1 + int(rng.integers(40, 110)), y1 + int(rng.integers(40, 90))
            cv2.rectangle(image, (x1, y1), (x2, y2), (200, 60 + 120 * k, 90), -1)
            objects.append(f"<object><name>{cls}</name><pose>Unspecified</pose><truncated>0</truncated>"
                           f"<difficult>0</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
                           f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")
        cv2.imwrite(os.path.join(root, "images", f"{name}.jpg"), image)
        with open(os.path.join(root, "annotations", f"{name}.xml"), "w", encoding="utf-8") as f:
            f.write(f"<annotation><folder>images</folder><filename>{name}.jpg</filename>"
                    f"<size><width>240</width><height>180</height><depth>3</depth></size>"
                    f"{''.join(objects)}</annotation>")


@pytest.mark.slow
def test_readme_labelimg_recipe_runs_as_written(tmp_path, monkeypatch):
    commands = readme_commands(MARKER)
    assert [c[0] for c in commands] == ["check-data", "train", "evaluate", "detect"]
    rng = np.random.default_rng(0)
    monkeypatch.chdir(tmp_path)
    write_labelimg_split("my_data/train", [f"{i:04d}" for i in range(10, 14)], rng)
    write_labelimg_split("my_data/val", ["0001", "0002"], rng)
    for argv in commands:
        if argv[0] == "train":
            argv = argv + QUICK_TRAIN
        assert main(argv) == 0, argv
    with open("runs/mine/classes.json", encoding="utf-8") as f:
        assert json.load(f)["names"] == ["cat", "dog"]
    assert os.path.isfile("runs/mine/eval/metrics.json")
    assert os.path.isfile("runs/mine/detections/0001_detections.jpg")
