"""Release snapshot conversion: parity with the authors' PyTorch code.

The expectations come from `../shared/data/release-fixtures` (see its
README): small CenterNet / CornerNet snapshots written by the releases' own
code, the official head outputs and `_decode` outputs on fixed inputs, and
the key lists of the three published models.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the convert extra (torch) is not installed")

from tf_centernet.config import DecodeConfig, load_config  # noqa: E402
from tf_centernet.convert import (  # noqa: E402
    COCO_CATEGORIES,
    MappingError,
    convert_snapshot,
    initialize_from,
    load_release_state,
    match_keys,
    read_snapshot,
    release_entries,
    release_state,
    save_snapshot,
    snapshot_labels,
)
from tf_centernet.convert.model_dir import build_for_conversion  # noqa: E402
from tf_centernet.convert.snapshot import import_torch  # noqa: E402
from tf_centernet.decode import decode_keypoints, decode_outputs  # noqa: E402
from tf_centernet.inference import load_trained_model  # noqa: E402

# The fixtures' architecture (their README), as --set overrides.
SMALL = [
    "model.num_classes=3", "model.levels=2", "model.widths=[32,32,48]", "model.blocks=[1,1,2]",
    "model.stem_channels=16", "model.head_channels=32", "model.pool_channels=128",
    "model.pooling_impl=scan",
]
HEAD_TOLERANCE = 1e-4
# The release `_decode` settings of the fixtures.
RELEASE_DECODE = DecodeConfig(top_k=70, nms_kernel=3, ae_threshold=0.5, num_dets=1000)


@pytest.fixture(scope="module", params=["centernet", "cornernet"])
def converted(request, fixtures_dir, tmp_path_factory):
    """(arch, config, model, checkpoint, snapshot path, reference npz) of a converted fixture."""
    arch = request.param
    # CenterNet from the legacy format, CornerNet from the zip format.
    snapshot = os.path.join(fixtures_dir, "centernet_small.pkl" if arch == "centernet" else "cornernet_small_zip.pth")
    config = load_config(f"{arch}_small", SMALL)
    model_dir = str(tmp_path_factory.mktemp(f"{arch}_converted"))
    convert_snapshot(snapshot, config, model_dir)
    model = load_trained_model(load_config(os.path.join(model_dir, "config.yaml")), model_dir)
    # All weights in one file, to restore the model after tests that change it.
    checkpoint = os.path.join(model_dir, "restore.weights.h5")
    model.save_weights(checkpoint)
    reference = dict(np.load(os.path.join(fixtures_dir, f"{arch}_small_outputs.npz")))
    return arch, config, model, checkpoint, snapshot, reference


def nhwc(array):
    return np.ascontiguousarray(array.transpose(0, 2, 3, 1))


def rgb_input(reference, name):
    """The fixture's (BGR, NCHW) input as this project's RGB NHWC input."""
    return np.ascontiguousarray(nhwc(reference[f"{name}/image"])[..., ::-1])


def head_errors(model, reference, name, reverse_channels=True):
    image = rgb_input(reference, name) if reverse_channels else nhwc(reference[f"{name}/image"])
    outputs = model(image, training=False)
    return {key: float(np.abs(value.numpy() - nhwc(reference[f"{name}/{key}"])).max()) for key, value in outputs.items()}


def test_legacy_and_zip_snapshots_read_alike(fixtures_dir):
    legacy = read_snapshot(os.path.join(fixtures_dir, "cornernet_small.pkl"))
    zipped = read_snapshot(os.path.join(fixtures_dir, "cornernet_small_zip.pth"))
    assert len(legacy) == 456 and list(legacy) == list(zipped)
    assert all(not key.startswith("module.") for key in legacy)
    for key in legacy:
        np.testing.assert_array_equal(legacy[key], zipped[key], err_msg=key)
    assert legacy["pre.0.conv.weight"].shape == (16, 3, 7, 7)  # OIHW as stored


@pytest.mark.parametrize("name", ["a", "b"])
def test_converted_heads_match_the_release(converted, name):
    arch, _, model, _, _, reference = converted
    errors = head_errors(model, reference, name)
    expected = {"tl_heatmap", "br_heatmap", "tl_embedding", "br_embedding", "tl_offset", "br_offset"}
    if arch == "centernet":
        expected |= {"ct_heatmap", "ct_offset"}
    assert set(errors) == expected
    assert max(errors.values()) < HEAD_TOLERANCE, errors
    # The first convolution's input channels were reversed: the BGR input
    # itself, fed as if RGB, does not reproduce the release.
    assert max(head_errors(model, reference, name, reverse_channels=False).values()) > 100 * HEAD_TOLERANCE


def test_converted_preset_loads_with_keras_hub(converted):
    """`tf-centernet convert` writes a keras-hub preset: its loaders give back the release heads."""
    import keras_hub

    import tf_centernet

    arch, _, _, weights, _, reference = converted
    preset = os.path.dirname(weights)
    expected = tf_centernet.CenterNetObjectDetector if arch == "centernet" else tf_centernet.CornerNetObjectDetector
    for model in (keras_hub.models.ObjectDetector.from_preset(preset), expected.from_preset(preset)):
        assert type(model) is expected
        assert model.category_ids == [1, 2, 3]
        errors = head_errors(model, reference, "a")
        assert max(errors.values()) < HEAD_TOLERANCE, errors


def rows(decoded, b):
    """The release `_decode` row layout (x1, y1, x2, y2, score, tl, br, class)."""
    return np.concatenate(
        [
            decoded["boxes"][b].numpy(),
            decoded["scores"][b].numpy()[:, None],
            decoded["tl_scores"][b].numpy()[:, None],
            decoded["br_scores"][b].numpy()[:, None],
            decoded["classes"][b].numpy()[:, None].astype(np.float32),
        ],
        axis=1,
    )


def sort_rows(array):
    return array[np.lexsort(np.round(array, 3).T[::-1])]


def assert_rows_found(needles, haystack, atol, what):
    """Every row of `needles` equals some row of `haystack` within `atol`."""
    for row in needles:
        assert np.abs(haystack - row).max(axis=1).min() < atol, f"{what}: {row} not found"


@pytest.mark.parametrize("name", ["a", "b"])
def test_decode_of_converted_model_matches_release_decode(converted, name):
    arch, _, model, _, _, reference = converted
    outputs = model(rgb_input(reference, name), training=False)
    decoded = decode_outputs(outputs, RELEASE_DECODE, use_centers=arch == "centernet")
    release = reference[f"{name}/decode_0"]
    tl = decode_keypoints(outputs["tl_heatmap"], outputs["tl_offset"], RELEASE_DECODE.top_k)
    br = decode_keypoints(outputs["br_heatmap"], outputs["br_offset"], RELEASE_DECODE.top_k)
    for b in range(release.shape[0]):
        ours = rows(decoded, b)
        # Accepted pairs: the same boxes, scores and classes, up to order.
        theirs_valid, ours_valid = release[b][release[b][:, 4] > -1], ours[ours[:, 4] > -1]
        assert len(ours_valid) == len(theirs_valid)
        np.testing.assert_allclose(sort_rows(ours_valid), sort_rows(theirs_valid), atol=1e-4)
        # Rejected pairs (score -1) tie, so which of them fill the 1000 rows
        # depends on top-k's tie order; each is still a pair of our top-K
        # corners (position with offset, score; class of the top-left).
        ours_tl = np.stack([tl["xs"][b], tl["ys"][b], tl["scores"][b], tf_float(tl["classes"][b])], 1)
        ours_br = np.stack([br["xs"][b], br["ys"][b], br["scores"][b]], 1)
        assert_rows_found(release[b][:, [0, 1, 5, 7]], ours_tl, 1e-4, "top-left corner")
        assert_rows_found(release[b][:, [2, 3, 6]], ours_br, 1e-4, "bottom-right corner")
        if arch == "centernet":
            centers = reference[f"{name}/decode_1"][b]  # x, y, class, score
            ours_centers = np.concatenate(
                [
                    decoded["centers"][b].numpy(),
                    tf_float(decoded["center_classes"][b])[:, None],
                    decoded["center_scores"][b].numpy()[:, None],
                ],
                axis=1,
            )
            np.testing.assert_allclose(sort_rows(ours_centers), sort_rows(centers), atol=1e-4)
    if arch == "cornernet":
        assert (release[..., 4] > -1).sum() > 100  # the comparison above was not vacuous


def tf_float(tensor):
    return np.asarray(tensor, np.float32)


def perturbed(state, kind):
    """A copy of a release state dict with a deliberately wrong mapping."""
    state = dict(state)
    if kind == "swap_tl_br":
        for key in [k for k in state if k.startswith(("tl_heats", "tl_cnvs"))]:
            other = "br" + key[2:]
            state[key], state[other] = state[other], state[key]
    elif kind == "transposed_kernels":
        for key, value in state.items():
            if value.ndim == 4 and value.shape[2] > 1:
                state[key] = np.ascontiguousarray(value.transpose(0, 1, 3, 2))
    return state


@pytest.mark.parametrize("kind", ["swap_tl_br", "transposed_kernels"])
def test_a_wrong_mapping_fails_parity(converted, kind, tmp_path):
    _, _, model, checkpoint, snapshot, reference = converted
    wrong_file = save_snapshot(perturbed(read_snapshot(snapshot), kind), str(tmp_path / "wrong.pkl"))
    try:
        load_release_state(model, read_snapshot(wrong_file))  # same shapes: it loads
        errors = head_errors(model, reference, "a")
        assert errors["tl_heatmap"] > 100 * HEAD_TOLERANCE
    finally:
        model.load_weights(checkpoint)
    assert max(head_errors(model, reference, "a").values()) < HEAD_TOLERANCE


def test_inverse_mapping_gives_back_the_snapshot(converted):
    """Every value went through the checkpoint and back unchanged."""
    _, _, model, _, snapshot, _ = converted
    original = read_snapshot(snapshot)
    back = release_state(model)
    assert set(back) == set(original)
    for key, value in original.items():
        if not key.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(back[key], value, err_msg=key)


def test_missing_leftover_and_misshaped_keys_are_named(converted):
    _, _, model, checkpoint, snapshot, _ = converted
    state = read_snapshot(snapshot)
    # torch 0.4.0 wrote no num_batches_tracked: accepted.
    load_release_state(model, {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")})
    broken = dict(state)
    del broken["pre.1.bn1.running_var"]
    broken["pre.9.conv.weight"] = np.zeros((1,), np.float32)
    broken["tl_heats.0.0.conv.bias"] = np.zeros((7,), np.float32)
    with pytest.raises(MappingError) as error:
        load_release_state(model, broken, source="broken.pkl")
    message = str(error.value)
    for text in ("broken.pkl", "pre.1.bn1.running_var", "pre.9.conv.weight", "tl_heats.0.0.conv.bias (7,)"):
        assert text in message
    # Nothing was assigned by the failed load.
    assert max(head_errors(model, converted[5], "a").values()) < HEAD_TOLERANCE
    model.load_weights(checkpoint)


def test_other_architecture_error_proposes_the_snapshot_settings(converted, fixtures_dir):
    arch, _, model, _, _, _ = converted
    other = "cornernet_small.pkl" if arch == "centernet" else "centernet_small.pkl"
    with pytest.raises(MappingError) as error:
        load_release_state(model, read_snapshot(os.path.join(fixtures_dir, other)))
    expected_arch = "cornernet" if arch == "centernet" else "centernet"
    message = str(error.value)
    assert "look_conv" in message  # the first keys of cascade corner pooling
    assert f"model.architecture={expected_arch}" in message and "model.widths=[32,32,48]" in message


def test_init_from_snapshot_with_other_class_count(converted, tmp_path):
    """80-class snapshot into the 3-class model: all but heatmap outputs loaded."""
    _, _, model, checkpoint, snapshot, _ = converted
    state = read_snapshot(snapshot)
    rng = np.random.default_rng(0)
    for key in [k for k in state if k.split(".")[0].endswith("_heats") and k.split(".")[2] == "1"]:
        state[key] = rng.standard_normal((80,) + state[key].shape[1:]).astype(np.float32)
    path = save_snapshot(state, str(tmp_path / "eighty.pkl"), legacy=False)
    before = {e.key: e.variable.numpy().copy() for e in release_entries(model)[0] if e.heatmap_output}
    try:
        report = initialize_from(model, path)
        entries = {e.key: e for e in release_entries(model)[0]}
        assert sorted(report.reinitialized) == sorted(before)
        assert set(report.loaded) | set(report.reinitialized) == set(entries)
        for key, value in before.items():  # untouched, not loaded
            np.testing.assert_array_equal(entries[key].variable.numpy(), value)
        back = release_state(model)
        for key in report.loaded:
            np.testing.assert_array_equal(back[key], state[key], err_msg=key)
    finally:
        model.load_weights(checkpoint)


def test_coco_labels_follow_the_release_order(coco_tiny):
    ids, names = snapshot_labels(80)
    assert ids == sorted(ids) and len(set(ids)) == 80 and len(COCO_CATEGORIES) == 80
    with open(coco_tiny["val"][0]) as f:
        categories = sorted(json.load(f)["categories"], key=lambda c: c["id"])
    assert ids == [c["id"] for c in categories] and names == [c["name"] for c in categories]
    assert snapshot_labels(3) == ([1, 2, 3], ["1", "2", "3"])


def test_classes_file(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("platelet\n\nred cell\nwhite cell\n")
    assert snapshot_labels(3, str(path)) == ([1, 2, 3], ["platelet", "red cell", "white cell"])
    with pytest.raises(ValueError, match="classes.txt lists 3 class names but the model has 4"):
        snapshot_labels(4, str(path))


def test_missing_torch_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"tf-centernet\[convert\]"):
        import_torch()


def test_torch_is_not_a_core_import(repo_root):
    code = (
        "import sys, tf_centernet, tf_centernet.cli, tf_centernet.training, tf_centernet.convert, "
        "tf_centernet.convert.model_dir, tf_centernet.convert.finetune; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    env = dict(os.environ, PYTHONPATH=repo_root, TF_CPP_MIN_LOG_LEVEL="3")
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=repo_root)


RELEASES = [
    ("centernet_hg52", "CenterNet-52", 630, 104_844_152),
    ("centernet_hg104", "CenterNet-104", 1260, 210_062_960),
    ("cornernet_hg104", "CornerNet", 1128, 201_035_212),
]


@pytest.mark.slow
@pytest.mark.parametrize("config_name,release,entries,values", RELEASES)
def test_full_release_keys_map_one_to_one(config_name, release, entries, values, fixtures_dir):
    with open(os.path.join(fixtures_dir, f"release_keys_{release}.json")) as f:
        keys = json.load(f)
    assert len(keys) == entries and all(k["key"].startswith("module.") for k in keys)
    shapes = {k["key"][len("module."):]: k["shape"] for k in keys}
    model = build_for_conversion(load_config(config_name))
    mapped, optional = release_entries(model)
    mismatch = match_keys(mapped, optional, shapes)
    assert mismatch.ok, mismatch.message(release)
    # One to one: every non-counter key fills exactly one variable.
    assert len(mapped) == len(model.weights) == entries - len(optional)
    assert set(optional) == {k for k in shapes if k.endswith("num_batches_tracked")}
    stats = ("running_mean", "running_var", "num_batches_tracked")
    counted = sum(int(np.prod(s)) for k, s in shapes.items() if not k.endswith(stats))
    assert counted == values  # the fixtures' README figure
