"""Tests of the training-target encoder (docs/reference.md §4).

Expected values are derived by hand (in the comments) or by brute-force NumPy
loops written here, independent of `tf_centernet.targets`.
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from tf_centernet.targets import draw_gaussian, encode_targets, gaussian_radius

EPS64 = 2.220446049250313e-16


def brute_force_gaussian(height, width, cx, cy, radius, divisor):
    """The releases' draw_gaussian on a zero map, as an explicit double loop."""
    out = np.zeros((height, width), np.float64)
    sigma = (2 * radius + 1) / divisor
    for y in range(height):
        for x in range(width):
            dx, dy = x - cx, y - cy
            if abs(dx) <= radius and abs(dy) <= radius:
                value = math.exp(-(dx * dx + dy * dy) / (2 * sigma * sigma))
                out[y, x] = value if value >= EPS64 else 0.0
    return out


def release_radius(height, width, t=0.7):
    """max(0, int(r)) with the release formula, computed in the test."""
    a3, b3, c3 = 4 * t, -2 * t * (height + width), (t - 1) * width * height
    r3 = (b3 + math.sqrt(b3 * b3 - 4 * a3 * c3)) / 2
    b1 = height + width
    r1 = (b1 + math.sqrt(b1 * b1 - 4 * width * height * (1 - t) / (1 + t))) / 2
    b2 = 2 * (height + width)
    r2 = (b2 + math.sqrt(b2 * b2 - 16 * (1 - t) * width * height)) / 2
    return max(0, int(min(r1, r2, r3)))


def encode(boxes, classes, **kwargs):
    args = dict(input_size=127, output_size=32, num_classes=3, max_objects=8)
    args.update(kwargs)
    out = encode_targets(
        tf.constant(boxes, tf.float32, shape=[len(boxes), 4]),
        tf.constant(classes, tf.int32, shape=[len(classes)]),
        **args,
    )
    return {k: v.numpy() for k, v in out.items()}


# --- gaussian_radius -------------------------------------------------------


def test_gaussian_radius_release_by_hand():
    # h = w = 10, t = 0.7.
    # r1 = (20 + sqrt(400 - 4 * 100 * 0.3 / 1.7)) / 2 = (20 + 18.1497) / 2 = 19.07
    # r2 = (40 + sqrt(1600 - 16 * 30)) / 2 = (40 + 33.4664) / 2 = 36.73
    # r3: a3 = 2.8, b3 = -28, c3 = -30: (-28 + sqrt(784 + 336)) / 2 = 2.7332
    assert gaussian_radius((10, 10), 0.7) == pytest.approx(2.7332005, abs=1e-6)


def test_gaussian_radius_paper_by_hand():
    # r1 = (20 - 18.1497) / 2 = 0.92516; r2 = (40 - 33.4664) / 8 = 0.81670;
    # r3 = (-28 + 33.4664) / 5.6 = 0.97614 -> min = r2.
    assert gaussian_radius((10, 10), 0.7, variant="paper") == pytest.approx(
        (40 - math.sqrt(1120)) / 8, abs=1e-9
    )


@pytest.mark.parametrize("h, w, t", [(10, 10, 0.7), (5, 40, 0.7), (33, 7, 0.3), (1, 1, 0.5)])
def test_paper_radius_is_geometric(h, w, t):
    """At the paper radius the worst of the three corner shifts has IoU t."""
    r = float(gaussian_radius((h, w), t, variant="paper"))

    def iou(a, b):
        ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = ix * iy
        def area(z):
            return (z[2] - z[0]) * (z[3] - z[1])
        return inter / (area(a) + area(b) - inter)

    gt = (0.0, 0.0, w, h)
    case1 = (r, r, w + r, h + r)  # both corners shifted down-right
    case2 = (r, r, w - r, h - r)  # both inside
    case3 = (-r, -r, w + r, h + r)  # both outside
    worst = min(iou(gt, case1), iou(gt, case2), iou(gt, case3))
    assert worst == pytest.approx(t, abs=1e-6)


def test_gaussian_radius_vectorised_numpy_and_tf():
    sizes = np.array([[10, 10], [26, 23], [1, 1], [32, 32], [3, 90]], np.float64)
    expected = [gaussian_radius((h, w), 0.7) for h, w in sizes]
    np_out = gaussian_radius((sizes[:, 0], sizes[:, 1]), 0.7)
    tf_out = gaussian_radius(tf.constant(sizes, tf.float32), 0.7)
    tf64 = gaussian_radius((tf.constant(sizes[:, 0]), tf.constant(sizes[:, 1])), 0.7)
    np.testing.assert_allclose(np_out, expected, rtol=1e-12)
    np.testing.assert_allclose(tf_out.numpy(), expected, rtol=1e-5)
    assert tf64.dtype == tf.float64
    np.testing.assert_allclose(tf64.numpy(), expected, rtol=1e-12)
    # Integer tensors are promoted to float32.
    assert gaussian_radius(tf.constant([[10, 10]]), 0.7).dtype == tf.float32


def test_gaussian_radius_bad_variant():
    with pytest.raises(ValueError, match="variant"):
        gaussian_radius((10, 10), 0.7, variant="nope")


# --- draw_gaussian ---------------------------------------------------------


@pytest.mark.parametrize(
    "center, radius, divisor",
    [((7, 5), 3, 6.0), ((0, 0), 4, 6.0), ((11, 9), 5, 5.0), ((6, 0), 2, 5.0), ((3, 3), 0, 6.0)],
)
def test_draw_gaussian_matches_brute_force(center, radius, divisor):
    out = draw_gaussian(np.zeros((10, 12), np.float32), center, radius, divisor)
    expected = brute_force_gaussian(10, 12, center[0], center[1], radius, divisor)
    assert out.dtype == tf.float32
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-6)
    assert out.numpy()[center[1], center[0]] == 1.0


def test_draw_gaussian_keeps_maximum():
    base = np.full((8, 8), 0.5, np.float32)
    out = draw_gaussian(base, (4, 4), 2).numpy()
    window = brute_force_gaussian(8, 8, 4, 4, 2, 6.0)
    np.testing.assert_allclose(out, np.maximum(0.5, window), atol=1e-6)


def test_draw_gaussian_zeroes_values_below_float64_eps():
    # r = 3, divisor 20: sigma = 0.35, 2 sigma^2 = 0.245.
    # (dx, dy) = (3, 0): exp(-9 / 0.245) = exp(-36.7) = 1.1e-16 < eps -> 0.
    # (dx, dy) = (2, 2): exp(-8 / 0.245) = exp(-32.7) = 6.6e-15 >= eps, kept.
    out = draw_gaussian(np.zeros((9, 9), np.float32), (4, 4), 3, 20.0).numpy()
    assert out[4, 7] == 0.0
    assert out[6, 6] > 0.0


# --- encode_targets --------------------------------------------------------


def test_single_object_by_hand():
    # input 127, output 32: ratio 32 / 127.
    # tl (10, 20): fx = 320 / 127 = 2.5197 -> cell 2, offset 0.5197;
    #              fy = 640 / 127 = 5.0394 -> cell 5, offset 0.0394; index 162.
    # br (100, 120): 3200 / 127 = 25.197 -> 25; 3840 / 127 = 30.236 -> 30;
    #              index 30 * 32 + 25 = 985.
    # ct (55, 70): 1760 / 127 = 13.858 -> 13; 2240 / 127 = 17.638 -> 17;
    #              index 17 * 32 + 13 = 557.
    # size on the grid: w = ceil(90 * 32 / 127) = ceil(22.68) = 23,
    #                   h = ceil(100 * 32 / 127) = ceil(25.20) = 26.
    out = encode([[10, 20, 100, 120]], [1])
    np.testing.assert_array_equal(out["tl_index"][:2], [162, 0])
    np.testing.assert_array_equal(out["br_index"][:1], [985])
    np.testing.assert_array_equal(out["ct_index"][:1], [557])
    np.testing.assert_allclose(out["tl_offset"][0], [320 / 127 - 2, 640 / 127 - 5], atol=1e-6)
    np.testing.assert_allclose(out["br_offset"][0], [3200 / 127 - 25, 3840 / 127 - 30], atol=1e-6)
    np.testing.assert_allclose(out["ct_offset"][0], [1760 / 127 - 13, 2240 / 127 - 17], atol=1e-6)
    np.testing.assert_array_equal(out["mask"], [1, 0, 0, 0, 0, 0, 0, 0])
    assert out["num_objects"] == 1
    assert not out["tl_offset"][1:].any() and not out["tl_index"][1:].any()

    radius = release_radius(26, 23)  # = 6
    assert radius == 6
    for key, (cx, cy), divisor in [
        ("tl_heatmap", (2, 5), 6.0),
        ("br_heatmap", (25, 30), 6.0),
        ("ct_heatmap", (13, 17), 5.0),
    ]:
        heatmap = out[key]
        assert heatmap.shape == (32, 32, 3) and heatmap.dtype == np.float32
        expected = brute_force_gaussian(32, 32, cx, cy, radius, divisor)
        np.testing.assert_allclose(heatmap[..., 1], expected, atol=1e-6)
        assert not heatmap[..., 0].any() and not heatmap[..., 2].any()


def test_exact_ones_count_distinct_keypoints():
    boxes = [[4, 4, 40, 30], [60, 10, 120, 90], [20, 70, 50, 126], [0, 0, 126, 126]]
    classes = [0, 2, 0, 1]
    out = encode(boxes, classes)
    for key in ("tl_heatmap", "br_heatmap", "ct_heatmap"):
        heatmap = out[key]
        assert heatmap.max() == 1.0 and heatmap.min() == 0.0
        assert (heatmap == 1.0).sum() == 4, key
    # Peaks are exactly at the encoded cells, in the object's class channel.
    for i, c in enumerate(classes):
        for kind in ("tl", "br", "ct"):
            index = out[f"{kind}_index"][i]
            assert out[f"{kind}_heatmap"][index // 32, index % 32, c] == 1.0


def test_two_objects_on_one_cell():
    # Both top-left corners map to cell (2, 2) (x = 10 and 11 -> 2.52, 2.77).
    out = encode([[10, 10, 60, 60], [11, 11, 100, 40]], [0, 0])
    assert out["tl_index"][0] == out["tl_index"][1] == 2 * 32 + 2
    assert (out["tl_heatmap"] == 1.0).sum() == 1
    assert out["tl_heatmap"].max() == 1.0
    np.testing.assert_array_equal(out["mask"][:3], [1, 1, 0])
    assert out["tl_offset"][0, 0] != out["tl_offset"][1, 0]


def test_border_huge_and_tiny_boxes():
    # Huge: [0, 0, 126, 126]; w = h = ceil(126 * 32 / 127) = ceil(31.75) = 32;
    # r3 = (-89.6 + sqrt(8028.16 + 3440.64)) / 2 = 8.745 -> radius 8.
    # br fx = 126 * 32 / 127 = 31.75 -> cell 31 (last cell).
    assert release_radius(32, 32) == 8
    out = encode([[0, 0, 126, 126]], [0])
    np.testing.assert_allclose(out["tl_heatmap"][..., 0], brute_force_gaussian(32, 32, 0, 0, 8, 6.0), atol=1e-6)
    np.testing.assert_allclose(out["br_heatmap"][..., 0], brute_force_gaussian(32, 32, 31, 31, 8, 6.0), atol=1e-6)
    assert out["br_index"][0] == 31 * 32 + 31
    # Tiny 1 px box [50, 50, 51, 51]: w = h = ceil(32 / 127) = 1,
    # r3 = (-2.8 + sqrt(7.84 + 3.36)) / 2 = 0.273 -> radius 0: single cells.
    # 50 * 32 / 127 = 12.60 and 51 * 32 / 127 = 12.85: both corners in cell 12.
    out = encode([[50, 50, 51, 51]], [2])
    for key in ("tl_heatmap", "br_heatmap", "ct_heatmap"):
        assert np.count_nonzero(out[key]) == 1
        assert out[key][12, 12, 2] == 1.0


def test_no_gaussian_bump_single_cells():
    out = encode([[10, 20, 100, 120], [30, 30, 90, 60]], [0, 1], gaussian_bump=False)
    for key in ("tl_heatmap", "br_heatmap", "ct_heatmap"):
        assert np.count_nonzero(out[key]) == 2
        assert set(np.unique(out[key])) == {0.0, 1.0}


def test_paper_radius_variant_is_smaller():
    release = encode([[10, 20, 100, 120]], [0])
    paper = encode([[10, 20, 100, 120]], [0], radius_variant="paper")
    assert np.count_nonzero(paper["tl_heatmap"]) < np.count_nonzero(release["tl_heatmap"])


def test_more_objects_than_slots():
    # 10 objects with distinct cells (x = 12 k -> cells 3k-ish), 4 slots.
    boxes = [[12 * k, 12 * k, 12 * k + 6, 12 * k + 6] for k in range(10)]
    out = encode(boxes, [0] * 10, max_objects=4)
    assert out["num_objects"] == 10
    assert out["mask"].sum() == 4
    assert (out["tl_heatmap"] == 1.0).sum() == 10
    # The slots hold the first four objects: floor(12 k * 32 / 127).
    cells = [math.floor(12 * k * 32 / 127) for k in range(4)]
    np.testing.assert_array_equal(out["tl_index"], [c * 32 + c for c in cells])


def test_no_objects():
    out = encode([], [])
    assert out["num_objects"] == 0
    for key, value in out.items():
        assert not np.any(value), key
    assert out["tl_offset"].shape == (8, 2) and out["mask"].shape == (8,)


def test_cornernet_has_no_center_keys():
    out = encode([[10, 20, 100, 120]], [0], with_centers=False)
    assert set(out) == {
        "tl_heatmap", "br_heatmap", "tl_offset", "br_offset",
        "tl_index", "br_index", "mask", "num_objects",
    }


def test_bad_class_raises():
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_classes"):
        encode([[10, 20, 100, 120]], [3])
    with pytest.raises(ValueError, match=r"\(n, 4\)"):
        encode_targets(
            tf.zeros([2, 3]), tf.zeros([2], tf.int32),
            input_size=127, output_size=32, num_classes=3, max_objects=8,
        )


def test_graph_mode_in_tf_data_static_shapes():
    boxes = tf.ragged.constant(
        [[[10.0, 20.0, 100.0, 120.0]], [], [[0.0, 0.0, 5.0, 5.0], [60.0, 60.0, 126.0, 80.0]]],
        ragged_rank=1,
    )
    classes = tf.ragged.constant([[0], [], [1, 2]])
    dataset = tf.data.Dataset.from_tensor_slices((boxes, classes)).map(
        lambda b, c: encode_targets(
            b.to_tensor() if isinstance(b, tf.RaggedTensor) else b,
            c.to_tensor() if isinstance(c, tf.RaggedTensor) else c,
            input_size=127, output_size=32, num_classes=3, max_objects=8,
        )
    )
    spec = dataset.element_spec
    assert spec["tl_heatmap"].shape == (32, 32, 3)
    assert spec["ct_offset"].shape == (8, 2)
    assert spec["mask"].shape == (8,)
    counts = [int(t["num_objects"]) for t in dataset]
    assert counts == [1, 0, 2]
    eager = encode([[10, 20, 100, 120]], [0])
    first = next(iter(dataset))
    np.testing.assert_array_equal(first["tl_heatmap"].numpy(), eager["tl_heatmap"])


def test_windowed_heatmaps_equal_dense_windows_bit_for_bit():
    """Each Gaussian drawn in its own window == the dense per-keypoint maps.

    Reference: one full-map window per keypoint (`gaussian_windows`), merged
    per class with NumPy's maximum. Random boxes of every size, many on the
    border and sharing classes, so windows overlap and get clipped.
    """
    from tf_centernet.targets import gaussian_radius, gaussian_windows

    rng = np.random.default_rng(21)
    size, out, num_classes = 255, 64, 4
    x1 = rng.uniform(0, size - 2, 40)
    y1 = rng.uniform(0, size - 2, 40)
    x2 = np.minimum(x1 + rng.uniform(1, 250, 40), size - 1)
    y2 = np.minimum(y1 + rng.uniform(1, 250, 40), size - 1)
    boxes = np.stack([x1, y1, x2, y2], 1).astype(np.float32)
    classes = rng.integers(0, num_classes, 40).astype(np.int32)
    got = encode_targets(
        boxes, classes, input_size=size, output_size=out, num_classes=num_classes, max_objects=64
    )
    b = boxes.astype(np.float64) * (out / size)
    radii = np.maximum(
        np.floor(gaussian_radius((np.ceil(b[:, 3] - b[:, 1]), np.ceil(b[:, 2] - b[:, 0])), 0.7)), 0
    ).astype(np.int32)
    keypoints = {
        "tl": (b[:, [0, 1]], 6.0),
        "br": (b[:, [2, 3]], 6.0),
        "ct": ((b[:, [0, 1]] + b[:, [2, 3]]) / 2, 5.0),
    }
    for name, (points, divisor) in keypoints.items():
        cells = np.clip(np.floor(points).astype(np.int32), 0, out - 1)
        windows = gaussian_windows(cells, radii, divisor, out, out).numpy()
        expected = np.zeros((out, out, num_classes), np.float32)
        for i, c in enumerate(classes):
            expected[:, :, c] = np.maximum(expected[:, :, c], windows[i])
        np.testing.assert_array_equal(got[f"{name}_heatmap"].numpy(), expected, err_msg=name)


@pytest.mark.parametrize("with_centers", [True, False])
def test_sparse_targets_draw_the_dense_heatmaps_bit_for_bit(with_centers):
    """``heatmaps="sparse"`` + `draw_heatmaps` on a batch == the dense encoder, image by image.

    Images of 0 to 300 objects (beyond the 128 slots, so heatmaps hold
    objects that have no slot), every size, many on the border; batched
    through `tf.data` as the training pipeline does.
    """
    from tf_centernet.gaussians import draw_heatmaps
    from tf_centernet.targets import max_keypoint_objects

    rng = np.random.default_rng(5)
    size, out, num_classes, slots = 255, 64, 5, 128
    images = []
    for n in (0, 1, 3, 40, 200, max_keypoint_objects(slots)):
        x1, y1 = rng.uniform(0, size - 2, n), rng.uniform(0, size - 2, n)
        x2 = np.minimum(x1 + rng.uniform(0.5, 250, n), size - 1)
        y2 = np.minimum(y1 + rng.uniform(0.5, 250, n), size - 1)
        images.append((np.stack([x1, y1, x2, y2], 1).astype(np.float32), rng.integers(0, num_classes, n)))
    args = dict(input_size=size, output_size=out, num_classes=num_classes, max_objects=slots,
                with_centers=with_centers)
    dense = [encode_targets(b, c, **args) for b, c in images]
    sparse = tf.data.Dataset.from_generator(
        lambda: iter(images),
        output_signature=(tf.TensorSpec([None, 4], tf.float32), tf.TensorSpec([None], tf.int64)),
    ).map(lambda b, c: encode_targets(b, c, heatmaps="sparse", **args)).batch(3)
    drawn = [draw_heatmaps(batch, out, num_classes) for batch in sparse]
    names = ["tl", "br", "ct"] if with_centers else ["tl", "br"]
    for i, expected in enumerate(dense):
        got = {k: v[i % 3] for k, v in drawn[i // 3].items()}
        assert "keypoint_cells" not in got
        for name in names:
            np.testing.assert_array_equal(got[f"{name}_heatmap"].numpy(), expected[f"{name}_heatmap"].numpy())
            np.testing.assert_array_equal(got[f"{name}_index"].numpy(), expected[f"{name}_index"].numpy())
        assert int(got["num_objects"]) == int(expected["num_objects"])
    assert float(tf.reduce_max(dense[-1]["tl_heatmap"])) == 1.0  # the test compares drawn maps
    assert "ct_heatmap" not in drawn[0] or with_centers


def test_sparse_targets_are_small_and_padded():
    # COCO at 511: three 128 x 128 x 80 float32 maps (15 MiB) against a few KiB.
    coco = dict(input_size=511, output_size=128, num_classes=80, max_objects=128)
    size = {h: sum(v.numpy().nbytes for v in encode_targets([[1.0, 2, 300, 400]], [5], heatmaps=h, **coco).values())
            for h in ("dense", "sparse")}
    assert size["dense"] > 15 * 2**20 and size["sparse"] < 16 * 2**10
    out = encode([[10, 20, 100, 120], [0, 0, 126, 126]], [2, 0], heatmaps="sparse")
    assert "tl_heatmap" not in out
    assert out["keypoint_cells"].shape == (256, 3, 2) and out["keypoint_classes"].shape == (256,)
    np.testing.assert_array_equal(out["keypoint_classes"][:3], [2, 0, -1])
    # top-left of the first box: (10, 20) * 32 / 127 -> cells (2, 5)
    np.testing.assert_array_equal(out["keypoint_cells"][0, 0], [2, 5])
    with pytest.raises(ValueError, match="heatmaps"):
        encode([[1, 1, 5, 5]], [0], heatmaps="both")
