"""A model and what it is given disagree: evaluate on other classes, convert with the wrong
config, convert a file that is not a state dict. Each ends in one line, exit 2, before
the long work.
"""

import json
import logging
import os
import pickle
import types

import keras
import pytest

from support.tiny import TINY_MODEL
from tf_centernet import cli
from tf_centernet.checkpoints import save_checkpoint
from tf_centernet.config import load_config, to_yaml
from tf_centernet.convert.labels import COCO_CATEGORIES
from tf_centernet.data.classes import write_classes
from tf_centernet.evaluation import check_categories
from tf_centernet.models import build_model


def one_error(caplog):
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is None, [r.getMessage() for r in errors]
    return errors[0].getMessage()


# ------------------------------------------------------------ item 6: evaluate on other classes


@pytest.fixture(scope="module")
def coco80_model_dir(tmp_path_factory):
    """A model directory of an 80-class COCO model (random tiny weights, classes.json of COCO)."""
    model_dir = tmp_path_factory.mktemp("coco80")
    config = load_config("demo", [*TINY_MODEL, "data.input_size=63", "model.num_classes=80",
                                  f"train.model_dir={model_dir}"])
    (model_dir / "config.yaml").write_text(to_yaml(config))
    ids, names = zip(*COCO_CATEGORIES)
    write_classes(str(model_dir), types.SimpleNamespace(category_ids=list(ids), class_names=list(names)))
    keras.utils.set_random_seed(0)
    model = build_model(config.model)
    model.build((None, 63, 63, 3))
    save_checkpoint(model, str(model_dir), 1, keep=1)
    return str(model_dir)


def test_evaluate_on_a_set_with_other_classes_is_an_error(coco80_model_dir, synthetic_coco, tmp_path, caplog,
                                                          capfd):
    """Item 6: exit 0 and metrics for an 80-class model on a 3-category set; now exit 2, nothing scored."""
    image_dir, annotation_file = synthetic_coco
    out = tmp_path / "eval"
    code = cli.main(["evaluate", "--model-dir", coco80_model_dir, "--output", str(out), "--set",
                     f"validation_data.annotations={annotation_file}", f"validation_data.images={image_dir}"])
    assert code == 2
    assert "Traceback" not in capfd.readouterr().err
    message = one_error(caplog)
    assert f"those of {annotation_file} disagree" in message
    assert "the model has 80 classes (person, bicycle, car," in message and "the data 3 categories (" in message
    assert "category id 1 is 'person' in the model but" in message
    assert not (out / "metrics.json").exists() and not (out / "detections.json").exists()


def test_a_subset_of_the_model_classes_with_the_same_names_is_scored_with_a_warning(caplog):
    data = types.SimpleNamespace(category_ids=[1, 3], class_names=["person", "car"], annotation_file="val.json")
    ids, names = [1, 2, 3], ["person", "bicycle", "car"]
    with caplog.at_level(logging.WARNING):
        check_categories(data, ids, names)
    assert "val.json has 2 of the model's 3 classes (person, car): only those are scored." in caplog.text
    check_categories(types.SimpleNamespace(category_ids=ids, class_names=names), ids, names)  # equal: silent
    with pytest.raises(ValueError, match="category id 3 is 'car' in the model but 'truck' in the data"):
        check_categories(types.SimpleNamespace(category_ids=ids, class_names=["person", "bicycle", "truck"]),
                         ids, names)


# ------------------------------------------------------------ item 9: convert


def fake_snapshot(keys_file, path):
    """A release-style snapshot with every key and shape of `keys_file`, each tensor a
    zero-stride view of one number (a few KB on disk, whatever the model's size)."""
    torch = pytest.importorskip("torch")
    with open(keys_file, encoding="utf-8") as f:
        keys = json.load(f)
    one = {"float32": torch.zeros(1), "int64": torch.zeros(1, dtype=torch.int64)}
    state = {k["key"]: one[k["dtype"]].reshape(()).expand(*k["shape"]) if k["shape"] else one[k["dtype"]][0]
             for k in keys}
    torch.save(state, path)
    return str(path)


def test_convert_with_the_wrong_config_names_the_matching_one_before_building(fixtures_dir, tmp_path, caplog,
                                                                              monkeypatch):
    """Item 9: a CenterNet-52 snapshot with cornernet_hg104 built CornerNet-104 first (199 s, 2.4 GB)."""
    from tf_centernet.convert import model_dir as conversion

    snapshot = fake_snapshot(os.path.join(fixtures_dir, "release_keys_CenterNet-52.json"), tmp_path / "cn52.pkl")

    def no_build(config):
        raise AssertionError("the model was built before the configuration was checked")

    monkeypatch.setattr(conversion, "build_for_conversion", no_build)
    target = tmp_path / "converted"
    assert cli.main(["convert", "--config", "cornernet_hg104", snapshot, "--model-dir", str(target)]) == 2
    message = one_error(caplog)
    assert f"{snapshot} holds a centernet model other than the configured one" in message
    assert "architecture centernet (config: cornernet)" in message and "num_stacks 1 (config: 2)" in message
    assert "use --config centernet_hg52" in message
    assert not target.exists()


@pytest.mark.parametrize("kind", ["empty", "text", "pickled object"])
def test_convert_of_a_file_that_is_not_a_state_dict_gives_our_reason(tmp_path, caplog, capfd, kind):
    """Item 9: an empty file gave a blank reason, others torch's 're-run with weights_only=False' advice."""
    pytest.importorskip("torch")
    path = tmp_path / "snapshot.pth"
    if kind == "empty":
        path.write_bytes(b"")
        reason = "empty file (0 bytes)"
    elif kind == "text":
        path.write_text("this is a README, not weights\n" * 3)
        reason = "a text file, not a PyTorch snapshot"
    else:
        path.write_bytes(pickle.dumps(types.SimpleNamespace(epoch=3)))
        reason = "it holds Python objects other than tensors"
    assert cli.main(["convert", "--config", "centernet_small", str(path), "--model-dir", str(tmp_path / "m")]) == 2
    err = capfd.readouterr().err
    assert "Traceback" not in err and "UserWarning" not in err
    message = one_error(caplog)
    assert message.startswith(f"{path}: ") and reason in message
    assert "weights_only" not in message and "file an issue" not in message.lower()
    assert "torch.save(model.state_dict())" in message
    assert not (tmp_path / "m").exists()
