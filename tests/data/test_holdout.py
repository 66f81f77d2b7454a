"""``data.validation_split``: validation images held out of the training data (`tf_centernet.data.holdout`)."""

from types import SimpleNamespace

import pytest

from tf_centernet.config import load_config
from tf_centernet.data.holdout import holdout_split


def _records(names):
    return [SimpleNamespace(file_name=f"/data/{n}") for n in names]


def test_holdout_is_a_partition_of_the_requested_size_independent_of_order():
    names = [f"img{i:03d}.jpg" for i in range(50)]
    train, val = holdout_split(_records(names), 0.2, seed=3)
    assert len(val) == 10 and len(train) == 40  # ceil(0.2 * 50)
    assert {r.file_name for r in train}.isdisjoint(r.file_name for r in val)
    assert sorted(r.file_name for r in train + val) == sorted(f"/data/{n}" for n in names)
    # The reader's order changes nothing; each part keeps the input order.
    shuffled = list(reversed(names))
    train2, val2 = holdout_split(_records(shuffled), 0.2, seed=3)
    assert {r.file_name for r in val2} == {r.file_name for r in val}
    held = {r.file_name for r in val}
    assert [r.file_name for r in val2] == [f"/data/{n}" for n in shuffled if f"/data/{n}" in held]
    # Another seed draws other images; the same seed the same ones.
    assert {r.file_name for r in holdout_split(_records(names), 0.2, seed=4)[1]} != {r.file_name for r in val}
    # Adding images keeps earlier held-out images mostly in place (by name, not position).
    more = names + [f"new{i}.jpg" for i in range(5)]
    _, val3 = holdout_split(_records(more), 0.2, seed=3)
    assert len({r.file_name for r in val3} & {r.file_name for r in val}) >= 8


def test_holdout_edges():
    assert holdout_split(_records(["a.jpg", "b.jpg"]), 0.0) == (_records(["a.jpg", "b.jpg"]), [])
    train, val = holdout_split(_records(["a.jpg", "b.jpg"]), 0.9)
    assert len(train) == 1 and len(val) == 1  # never every image
    assert holdout_split(_records(["a.jpg"]), 0.5) == (_records(["a.jpg"]), [])
    with pytest.raises(ValueError, match="validation_split"):
        holdout_split(_records(["a.jpg"]), 1.0)


def test_validation_split_is_checked_at_load_time():
    with pytest.raises(ValueError, match=r"validation_split must be in \[0, 1\)"):
        load_config("demo", ["data.validation_split=1.5"])
    with pytest.raises(ValueError, match="set one of them"):
        load_config("demo", ["data.validation_split=0.1", "validation_data.annotations=/v.json"])
    assert load_config("demo", ["data.validation_split=0.1"]).data.validation_split == 0.1


def test_open_dataset_splits_one_folder_into_disjoint_train_and_validation(bccd):
    import os

    from tf_centernet.data.records import open_dataset

    overrides = [f"train_data.annotations={os.path.join(bccd, 'ImageSets', 'Main', 'test.txt')}",
                 "data.validation_split=0.25", "data.split_seed=7"]
    config = load_config("bccd_small", overrides + ["validation_data.annotations=''"])
    train, val = open_dataset(config, "train"), open_dataset(config, "val")
    names = lambda dataset: [r.file_name for r in dataset.records]  # noqa: E731
    whole = open_dataset(load_config("bccd_small", overrides[:1]), "train")
    assert len(whole) == 72 and len(val) == 18 and len(train) == 54  # ceil(0.25 * 72)
    assert set(names(train)).isdisjoint(names(val))
    assert sorted(names(train) + names(val)) == sorted(names(whole))
    assert train.class_names == val.class_names == whole.class_names
    # TFRecord training data streams from its files: no holdout there, one clear error.
    config.train_data.format = "tfrecord"
    with pytest.raises(ValueError, match="convert-data"):
        open_dataset(config, "val")
