"""Configuration loading and validation."""

import pytest

from tf_centernet import config as config_lib
from tf_centernet.config import BACKBONES, load_config, to_yaml


@pytest.mark.parametrize(
    "name,architecture,backbone,batch,top_k,iou",
    [
        ("centernet_hg52", "centernet", "hourglass_52", 48, 70, 0.7),
        ("centernet_hg104", "centernet", "hourglass_104", 48, 70, 0.7),
        ("cornernet_hg104", "cornernet", "hourglass_104", 49, 100, 0.3),
    ],
)
def test_paper_configs(name, architecture, backbone, batch, top_k, iou):
    config = load_config(name)
    assert (config.model.architecture, config.model.backbone) == (architecture, backbone)
    assert config.train.batch_size == batch and config.train.learning_rate == 2.5e-4
    assert config.decode.top_k == top_k and config.data.gaussian_iou == iou
    assert config.data.input_size == 511 and config.data.output_size == 128


def test_overrides_and_yaml_round_trip(tmp_path):
    config = load_config("centernet_small", ["train.learning_rate=0.5", "data.rand_scales=[1.0]"])
    assert config.train.learning_rate == 0.5 and config.data.rand_scales == [1.0]
    path = tmp_path / "saved.yaml"
    path.write_text(to_yaml(config))
    assert load_config(str(path)) == config


def test_bad_values_are_clear_errors():
    with pytest.raises(ValueError, match="train.no_such_key"):
        load_config("demo", ["train.no_such_key=1"])
    with pytest.raises(ValueError, match="batch_size"):
        load_config("demo", ["train.batch_size=many"])
    with pytest.raises(ValueError, match="levels \\+ 1"):
        load_config("demo", ["model.levels=4"])
    with pytest.raises(ValueError, match="model.backbone must be one of"):
        load_config("demo", ["model.backbone=resnet"])
    with pytest.raises(FileNotFoundError, match="centernet_hg104"):
        load_config("nope")


def test_small_backbone_is_cpu_sized():
    assert BACKBONES["hourglass_small"]["widths"][0] < BACKBONES["hourglass_52"]["widths"][0]


@pytest.mark.parametrize("key", sorted(config_lib.CHOICES))
def test_a_wrong_enumerated_value_fails_when_the_config_loads(key):
    """Every enumerated setting is checked by `load_config`, naming the key and what it allows."""
    with pytest.raises(ValueError) as error:
        load_config("demo", [f"{key}=no_such_value"])
    message = str(error.value)
    assert key in message and "no_such_value" in message
    assert all(repr(allowed) in message for allowed in config_lib.CHOICES[key]), message
    # and every allowed value loads
    for allowed in config_lib.CHOICES[key]:
        if allowed != "":
            load_config("demo", [f"{key}={allowed}"])


def test_model_configs_carry_no_data_and_data_configs_add_it():
    """A model configuration never overrides the data (e.g. a VOC set's own image folder)."""
    for name in ("centernet_small", "cornernet_small", "centernet_hg52", "centernet_hg104", "cornernet_hg104"):
        config = load_config(name)
        assert config.train_data == config.validation_data == config_lib.InputConfig(), name
    merged = load_config(["centernet_small", "coco_tiny"])
    assert merged.model.backbone == "hourglass_small" and merged.data.input_size == 255
    assert merged.train_data.annotations.endswith("coco-tiny/annotations/instances_train2017.json")
    assert merged.train_data.images.startswith("/")  # resolved against configs/, not the working directory


def test_legacy_data_keys_move_to_the_split_sections(tmp_path, monkeypatch):
    """Keys of earlier releases (``data.train_annotations`` ...) still load, with one warning each."""
    folder = tmp_path / "cfg"
    folder.mkdir()
    (folder / "old.yaml").write_text(
        "data:\n  train_annotations: voc/ImageSets/Main/train.txt\n  val_images: imgs\n"
        "  format: voc\n  classes: names.txt\n  input_size: 127\n"
    )
    monkeypatch.chdir(tmp_path)
    with pytest.warns(FutureWarning) as caught:
        config = load_config(str(folder / "old.yaml"), ["data.val_annotations=here/val.txt"])
    messages = sorted(str(w.message).split(" is deprecated")[0] for w in caught)
    assert messages == ["data.classes", "data.format", "data.train_annotations", "data.val_annotations",
                        "data.val_images"]
    assert config.train_data.annotations == str(folder / "voc/ImageSets/Main/train.txt")  # file's folder
    assert config.validation_data.images == str(folder / "imgs")
    assert config.validation_data.annotations == str(tmp_path / "here/val.txt")  # working directory
    assert config.train_data.format == config.validation_data.format == "voc"
    assert config.train_data.classes == config.validation_data.classes == str(folder / "names.txt")
    assert config.data.input_size == 127
    assert config_lib.input_config(config, "val") is config.validation_data
    assert config_lib.input_config(config, "train") is config.train_data
    with pytest.raises(ValueError, match="split"):
        config_lib.input_config(config, "test")
    # A new key given in the same place wins over the old one.
    with pytest.warns(FutureWarning):
        config = load_config(None, ["data.train_images=/old", "train_data.images=/new"])
    assert config.train_data.images == "/new"
    # The new keys alone warn about nothing, and the written YAML has no old key.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = load_config(None, ["train_data.annotations=/a.json"])
    assert "train_annotations" not in to_yaml(config) and "mixed_precision" not in to_yaml(config)
