"""Tests of `tf_centernet.decode` against hand-computed expectations (docs/reference.md §7)."""

import dataclasses
import math

import numpy as np
import pytest
import tensorflow as tf

from support.decode_helpers import PEAK, make_outputs, release_reference_decode, sigmoid
from tf_centernet import decode
from tf_centernet.config import DecodeConfig

S = sigmoid(PEAK)  # score of a hand-placed keypoint


def small_config(**changes):
    base = DecodeConfig(top_k=6, num_dets=20, max_detections=10, flip_test=False)
    return dataclasses.replace(base, **changes)


# ---------------------------------------------------------------------------
# Keypoints.
# ---------------------------------------------------------------------------


def test_heatmap_nms_keeps_local_maxima_and_plateaus():
    heat = np.zeros((1, 5, 5, 1), np.float32)
    heat[0, 2, 2, 0] = 0.9
    heat[0, 2, 3, 0] = 0.5  # next to a higher peak: suppressed
    heat[0, 0, 0, 0] = 0.7  # a plateau of two equal cells: both kept
    heat[0, 0, 1, 0] = 0.7
    heat[0, 4, 4, 0] = 0.2  # corner cell, isolated: kept
    out = decode.heatmap_nms(tf.constant(heat), kernel=3).numpy()
    expected = heat.copy()
    expected[0, 2, 3, 0] = 0.0
    np.testing.assert_array_equal(out, expected)


def test_topk_orders_ties_by_class_then_row_then_column():
    heat = np.zeros((1, 4, 4, 2), np.float32)
    heat[0, 0, 0, 1] = 0.5  # class 1
    heat[0, 1, 1, 0] = 0.5  # class 0, row 1
    heat[0, 0, 2, 0] = 0.5  # class 0, row 0
    heat[0, 3, 3, 1] = 0.8
    top = decode.topk_keypoints(tf.constant(heat), k=4)
    np.testing.assert_allclose(top["scores"][0], [0.8, 0.5, 0.5, 0.5])
    np.testing.assert_array_equal(top["classes"][0], [1, 0, 0, 1])
    np.testing.assert_array_equal(top["xs"][0], [3, 2, 1, 0])
    np.testing.assert_array_equal(top["ys"][0], [3, 0, 1, 0])
    np.testing.assert_array_equal(top["indices"][0], [15, 2, 5, 0])


def test_decode_keypoints_adds_offsets():
    out = make_outputs(1, 8, 8, 2, tl=[dict(cls=1, x=5, y=2, ox=0.25, oy=0.75)])
    points = decode.decode_keypoints(out["tl_heatmap"], out["tl_offset"], k=3)
    assert float(points["xs"][0, 0]) == 5.25 and float(points["ys"][0, 0]) == 2.75
    assert int(points["classes"][0, 0]) == 1
    assert float(points["scores"][0, 0]) == pytest.approx(S)


# ---------------------------------------------------------------------------
# Corner pairs.
# ---------------------------------------------------------------------------


def decode_pairs(tl, br, **changes):
    out = make_outputs(1, 16, 16, 2, tl=tl, br=br)
    return decode.decode_outputs(out, small_config(**changes), use_centers=False)


def test_pair_gives_exact_box_score_and_class():
    dets = decode_pairs(
        [dict(cls=1, x=2, y=3, ox=0.25, oy=0.5, e=1.0)],
        [dict(cls=1, x=9, y=12, ox=0.75, oy=0.125, e=1.25)],
    )
    assert dets["boxes"].shape == (1, 20, 4)
    np.testing.assert_array_equal(dets["boxes"][0, 0], [2.25, 3.5, 9.75, 12.125])
    assert float(dets["scores"][0, 0]) == pytest.approx(S)  # (S + S) / 2
    assert int(dets["classes"][0, 0]) == 1
    assert float(dets["tl_scores"][0, 0]) == pytest.approx(S)
    assert float(dets["br_scores"][0, 0]) == pytest.approx(S)
    # Every other pair involves a background corner and fails the embedding test.
    np.testing.assert_array_equal(dets["scores"][0, 1:], -1.0)


def test_pair_score_is_mean_of_corner_scores():
    dets = decode_pairs(
        [dict(cls=0, x=1, y=1, logit=2.0)], [dict(cls=0, x=5, y=5, logit=-1.0)]
    )
    assert float(dets["scores"][0, 0]) == pytest.approx((sigmoid(2.0) + sigmoid(-1.0)) / 2)


TL = dict(cls=1, x=4, y=4, ox=0.5, oy=0.5, e=1.0)


@pytest.mark.parametrize(
    "br, accepted",
    [
        (dict(cls=0, x=9, y=9, e=1.0), False),  # class mismatch
        (dict(cls=1, x=9, y=9, e=1.75), False),  # |e_tl - e_br| = 0.75 > 0.5
        (dict(cls=1, x=9, y=9, e=1.5), True),  # distance exactly 0.5: kept
        (dict(cls=1, x=2, y=9, e=1.0), False),  # br left of tl
        (dict(cls=1, x=9, y=2, e=1.0), False),  # br above tl
        (dict(cls=1, x=4, y=9, ox=0.25, e=1.0), False),  # left after offsets
        (dict(cls=1, x=4, y=9, ox=0.5, e=1.0), True),  # zero width: kept
    ],
)
def test_pair_rejections(br, accepted):
    dets = decode_pairs([TL], [br])
    best = float(dets["scores"][0, 0])
    if accepted:
        assert best == pytest.approx(S)
    else:
        assert best == -1.0


def test_num_dets_is_capped_at_k_squared():
    dets = decode_pairs([], [], top_k=3, num_dets=1000)
    assert dets["scores"].shape == (1, 9)


# ---------------------------------------------------------------------------
# Mapping to the image.
# ---------------------------------------------------------------------------


def geometry(scale=1.0, top=0.0, left=0.0, height=64.0, width=64.0, ratio=0.25, batch=1):
    return decode.ScaleGeometry(
        scale=scale,
        borders=tf.constant([[top, top + height, left, left + width]] * batch, tf.float32),
        sizes=tf.constant([[height, width]] * batch, tf.float32),
        ratios=tf.constant([[ratio, ratio]] * batch, tf.float32),
    )


def test_boxes_to_image_maps_rejects_and_clips():
    geo = geometry(scale=2.0, top=8.0, left=4.0, height=100.0, width=60.0, ratio=0.5)
    boxes = tf.constant(
        [[[10.0, 10.0, 20.0, 30.0],  # plain: ((x / 0.5 - 4), (y / 0.5 - 8)) / 2
          [0.5, 10.0, 20.0, 30.0],   # x1 = 1 - 4 = -3 > -5: kept, clipped to 0
          [-0.5, 10.0, 20.0, 30.0],  # x1 = -1 - 4 = -5: rejected (<= -5)
          [10.0, 10.0, 34.5, 30.0],  # x2 = 69 - 4 = 65 = 60 + 5: rejected
          [10.0, 10.0, 34.0, 30.0],  # x2 = 64: kept, clipped to 60
          [10.0, 1.0, 20.0, 30.0],   # y1 = -6: rejected
          [10.0, 10.0, 20.0, 56.5]]],  # y2 = 113 - 8 = 105 >= 105: rejected
        tf.float32,
    )
    scores = tf.fill([1, 7], 0.5)
    out, new_scores = decode.boxes_to_image(boxes, scores, geo, border_tolerance=5.0)
    np.testing.assert_allclose(out[0, 0], [8.0, 6.0, 18.0, 26.0])
    np.testing.assert_allclose(out[0, 1], [0.0, 6.0, 18.0, 26.0])
    np.testing.assert_allclose(out[0, 4], [8.0, 6.0, 30.0, 26.0])
    np.testing.assert_array_equal(new_scores[0], [0.5, 0.5, -1, -1, 0.5, -1, -1])
    # An infinite tolerance (CornerNet release) rejects nothing.
    _, kept = decode.boxes_to_image(boxes, scores, geo, border_tolerance=float("inf"))
    np.testing.assert_array_equal(kept[0], 0.5)


def test_points_to_image_and_mirror():
    geo = geometry(top=8.0, left=4.0, height=100.0, width=60.0, ratio=0.5)
    points = tf.constant([[[10.0, 10.0], [1.0, 100.0]]])
    np.testing.assert_allclose(decode.points_to_image(points, geo)[0], [[16, 12], [0, 100]])
    np.testing.assert_allclose(decode.mirror_points(points, 16.0)[0], [[6, 10], [15, 100]])
    box = tf.constant([[2.0, 3.0, 5.0, 7.0]])
    np.testing.assert_allclose(decode.mirror_boxes(box, 16.0), [[11.0, 3.0, 14.0, 7.0]])


# ---------------------------------------------------------------------------
# Central region (CenterNet eq. 1).
# ---------------------------------------------------------------------------


def region_scores(box, centers, center_classes, center_scores, box_class=0, score=0.6):
    out = decode.central_region_filter(
        tf.constant([[box]], tf.float32),
        tf.constant([[score]], tf.float32),
        tf.constant([[box_class]], tf.int32),
        tf.constant([centers], tf.float32),
        tf.constant([center_scores], tf.float32),
        tf.constant([center_classes], tf.int32),
    )
    return float(out[0, 0])


# A small box, area 8100 <= 22500: n = 3, central region (30, 60) x (30, 60).
SMALL = [0.0, 0.0, 90.0, 90.0]


def test_center_inside_region_rescores_box():
    got = region_scores(SMALL, [[30.5, 45.0]], [0], [0.9])
    assert got == pytest.approx((2 * 0.6 + 0.9) / 3)  # 0.7


@pytest.mark.parametrize("center", [[30.0, 45.0], [60.0, 45.0], [45.0, 30.0], [45.0, 60.0]])
def test_center_on_region_boundary_is_rejected(center):
    assert region_scores(SMALL, [center], [0], [0.9]) == -1.0


def test_center_of_another_class_is_rejected():
    assert region_scores(SMALL, [[45.0, 45.0]], [1], [0.9]) == -1.0


def test_box_without_center_is_removed_and_invalid_stays_invalid():
    assert region_scores(SMALL, [[5.0, 5.0]], [0], [0.9]) == -1.0
    assert region_scores(SMALL, [[45.0, 45.0]], [0], [0.9], score=-1.0) == -1.0


def test_region_n_switches_at_area_22500():
    # 150 x 150 = 22500: still small, n = 3, region x in (50, 100).
    assert region_scores([0, 0, 150, 150], [[55.0, 75.0]], [0], [0.9]) > 0
    # 151 x 150 > 22500: n = 5, region x in (60.4, 90.6), y in (60, 90).
    assert region_scores([0, 0, 151, 150], [[55.0, 75.0]], [0], [0.9]) == -1.0
    assert region_scores([0, 0, 151, 150], [[61.0, 75.0]], [0], [0.9]) > 0


def test_first_matching_center_in_order_is_used():
    centers = [[5.0, 5.0], [40.0, 40.0], [50.0, 50.0]]  # the first is outside
    got = region_scores(SMALL, centers, [0, 0, 0], [0.99, 0.3, 0.9])
    assert got == pytest.approx((2 * 0.6 + 0.3) / 3)


# ---------------------------------------------------------------------------
# Soft-NMS.
# ---------------------------------------------------------------------------


def run_nms(boxes, scores, classes, impl, **kwargs):
    out = decode.soft_nms(
        tf.constant([boxes], tf.float32),
        tf.constant([scores], tf.float32),
        tf.constant([classes], tf.int32),
        impl=impl,
        **kwargs,
    )
    n = int(out["num_detections"][0])
    return {k: v[0].numpy()[:n] for k, v in out.items() if k != "num_detections"}, out


def test_soft_nms_gaussian_decay_inclusive_areas(soft_nms_impl):
    # Pixel-inclusive: both boxes 10 x 10 = 100, overlap 5 x 10 = 50, IoU = 1/3.
    boxes = [[0, 0, 9, 9], [5, 0, 14, 9]]
    got, _ = run_nms(boxes, [0.9, 0.8], [0, 0], soft_nms_impl, max_detections=5)
    np.testing.assert_allclose(got["scores"], [0.9, 0.8 * math.exp(-(1 / 9) / 0.5)], rtol=1e-6)
    np.testing.assert_array_equal(got["boxes"], boxes)
    # Exclusive areas give the same IoU for boxes one pixel larger.
    got, _ = run_nms([[0, 0, 10, 10], [5, 0, 15, 10]], [0.9, 0.8], [0, 0], soft_nms_impl, inclusive=False)
    np.testing.assert_allclose(got["scores"], [0.9, 0.8 * math.exp(-2 / 9)], rtol=1e-6)


def test_soft_nms_is_per_class_and_drops_low_scores(soft_nms_impl):
    boxes = [[0, 0, 9, 9], [0, 0, 9, 9], [0, 0, 9, 9], [50, 50, 60, 60]]
    scores = [0.9, 0.8, 0.005, 0.0005]
    classes = [0, 1, 0, 0]
    got, out = run_nms(boxes, scores, classes, soft_nms_impl, max_detections=4)
    # Class 1 is untouched; the 0.005 box decays by exp(-1 / 0.5) to 0.00068 <
    # 0.001 and is removed; 0.0005 is below the threshold from the start.
    np.testing.assert_allclose(got["scores"], [0.9, 0.8], rtol=1e-6)
    np.testing.assert_array_equal(got["classes"], [0, 1])
    assert out["boxes"].shape == (1, 4, 4)
    np.testing.assert_array_equal(out["scores"][0, 2:], 0.0)


def test_soft_nms_keeps_best_max_detections_in_order(soft_nms_impl):
    boxes = [[i * 20, 0, i * 20 + 10, 10] for i in range(6)]
    scores = [0.3, 0.9, 0.5, 0.7, 0.1, 0.6]
    got, _ = run_nms(boxes, scores, [0] * 6, soft_nms_impl, max_detections=3)
    np.testing.assert_allclose(got["scores"], [0.9, 0.7, 0.6])
    np.testing.assert_array_equal(got["boxes"][0], boxes[1])


def test_soft_nms_merge_weighted_box_fusion(soft_nms_impl):
    a, b = [0.0, 0.0, 10.0, 10.0], [2.0, 0.0, 12.0, 10.0]
    tl, br = [0.9, 0.6], [0.7, 0.5]
    out = decode.soft_nms(
        tf.constant([[a, b]]), tf.constant([[0.8, 0.55]]), tf.constant([[0, 0]]),
        max_detections=2, method="merge", weight_exp=8.0,
        tl_scores=tf.constant([tl]), br_scores=tf.constant([br]), impl=soft_nms_impl,
    )
    iou = (9 * 11) / (2 * 121 - 9 * 11)  # inclusive: overlap 9 x 11
    w = math.exp(-iou ** 2 / 0.5)
    mw = (1 - w) ** 8
    x1 = (a[0] * tl[0] + b[0] * tl[1] * mw) / (tl[0] + tl[1] * mw)
    x2 = (a[2] * br[0] + b[2] * br[1] * mw) / (br[0] + br[1] * mw)
    np.testing.assert_allclose(out["boxes"][0, 0], [x1, 0.0, x2, 10.0], rtol=1e-5)
    # The merged-in box stays (decayed) and is selected later, unmerged with
    # the already selected box.
    np.testing.assert_allclose(out["scores"][0], [0.8, 0.55 * w], rtol=1e-5)
    np.testing.assert_allclose(out["boxes"][0, 1], b, rtol=1e-6)


def test_soft_nms_matches_tf_kernel_with_half_sigma(soft_nms_impl):
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 80, (60, 2))
    wh = rng.uniform(5, 40, (60, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    scores = rng.uniform(0.01, 1.0, 60).astype(np.float32)
    classes = rng.integers(0, 3, 60).astype(np.int32)
    ours = decode.soft_nms(
        boxes[None], scores[None], classes[None], max_detections=30, inclusive=False,
        impl=soft_nms_impl,
    )
    ref = decode.soft_nms_with_tf_op(boxes, scores, classes, max_detections=30)
    assert int(ours["num_detections"][0]) == int(ref["num_detections"]) == 30
    np.testing.assert_allclose(ours["scores"][0], ref["scores"], rtol=1e-5)
    np.testing.assert_allclose(ours["boxes"][0], ref["boxes"])
    np.testing.assert_array_equal(ours["classes"][0], ref["classes"])


# ---------------------------------------------------------------------------
# The whole decoder.
# ---------------------------------------------------------------------------

# One object on a 16 x 16 grid, input 64 x 64 (ratio 1/4): cells
# (2.25, 3.5)-(9.75, 12.125) are pixels (9, 14)-(39, 48.5).
BOX_PX = [9.0, 14.0, 39.0, 48.5]


def flipped_pair_outputs(with_centers=False):
    tl = [dict(b=0, cls=1, x=2, y=3, ox=0.25, oy=0.5, e=3.0)]
    br = [dict(b=0, cls=1, x=9, y=12, ox=0.75, oy=0.125, e=3.0)]
    ct = [dict(b=0, cls=1, x=6, y=7, oy=0.8)]
    # The flipped input mirrors the box: x' = 16 - x, corners swap roles.
    tl.append(dict(b=1, cls=1, x=6, y=3, ox=0.25, oy=0.5, e=3.0))  # 16 - 9.75
    br.append(dict(b=1, cls=1, x=13, y=12, ox=0.75, oy=0.125, e=3.0))  # 16 - 2.25
    ct.append(dict(b=1, cls=1, x=10, y=7, oy=0.8))
    return make_outputs(2, 16, 16, 3, tl, br, ct if with_centers else None)


def test_decode_detections_flip_gives_the_box_twice():
    out = flipped_pair_outputs()
    config = small_config(nms="none", flip_test=True)
    dets = decode.decode_detections(out, geometry(), config, use_centers=False)
    assert int(dets["num_detections"][0]) == 2
    np.testing.assert_allclose(dets["boxes"][0, :2], [BOX_PX, BOX_PX])
    np.testing.assert_allclose(dets["scores"][0, :2], [S, S])
    np.testing.assert_array_equal(dets["classes"][0, :2], [1, 1])
    # With soft-NMS the mirrored duplicate (IoU 1) decays by exp(-1 / 0.5).
    config = small_config(flip_test=True)
    dets = decode.decode_detections(out, geometry(), config, use_centers=False)
    np.testing.assert_allclose(dets["scores"][0, :2], [S, S * math.exp(-2.0)], rtol=1e-6)
    np.testing.assert_allclose(dets["boxes"][0, 1], BOX_PX)


def test_decode_detections_centernet_in_a_tf_function():
    out = flipped_pair_outputs(with_centers=True)
    config = small_config(flip_test=True)

    @tf.function
    def run(outputs):
        return decode.decode_detections(outputs, geometry(), config, use_centers=True)

    dets = run(out)
    assert dets["boxes"].shape == (1, 10, 4)
    assert dets["classes"].dtype == tf.int32
    np.testing.assert_allclose(dets["boxes"][0, 0], BOX_PX)
    # (2 * S + S) / 3 = S for the box and its mirrored copy.
    np.testing.assert_allclose(dets["scores"][0, :2], [S, S * math.exp(-2.0)], rtol=1e-5)
    # Without a center inside its central region the box disappears.
    moved = dict(out)
    moved["ct_heatmap"] = tf.roll(out["ct_heatmap"], shift=5, axis=2)
    assert int(run(moved)["num_detections"][0]) == 0


def test_decode_detections_errors():
    out = flipped_pair_outputs()
    with pytest.raises(KeyError, match="ct_heatmap"):
        decode.decode_detections(out, geometry(), small_config(flip_test=True), use_centers=True)
    with pytest.raises(ValueError, match="scale 1"):
        decode.decode_detections(
            out, geometry(scale=0.5), small_config(flip_test=True), use_centers=True
        )
    with pytest.raises(ValueError, match="nms"):
        decode.decode_detections(out, geometry(), small_config(nms="bogus"), use_centers=False)


@pytest.mark.parametrize("use_centers", [True, False])
def test_decode_detections_matches_numpy_release_transcription(use_centers):
    """Random maps, two scales, flip: the vectorised decoder agrees with a
    loop-by-loop numpy transcription of the releases' behaviour."""
    from tf_centernet.inference import preprocess_images

    rng = np.random.default_rng(3)
    config = DecodeConfig(top_k=40, num_dets=300, max_detections=60)
    image = np.zeros((1, 90, 130, 3), np.uint8)
    outputs, geometries = [], []
    for scale in (1.0, 0.8):
        canvas, geo = preprocess_images(image, [[90, 130]], scale, [0, 0, 0], [1, 1, 1])
        h, w = (canvas.shape[1] + 1) // 4, (canvas.shape[2] + 1) // 4
        out = {
            "tl_heatmap": rng.normal(0, 2, (2, h, w, 2)),
            "br_heatmap": rng.normal(0, 2, (2, h, w, 2)),
            "ct_heatmap": rng.normal(0, 2, (2, h, w, 2)),
            "tl_embedding": rng.uniform(0, 1, (2, h, w, 1)),
            "br_embedding": rng.uniform(0, 1, (2, h, w, 1)),
            "tl_offset": rng.uniform(0, 1, (2, h, w, 2)),
            "br_offset": rng.uniform(0, 1, (2, h, w, 2)),
            "ct_offset": rng.uniform(0, 1, (2, h, w, 2)),
        }
        outputs.append({k: v.astype(np.float32) for k, v in out.items()})
        geometries.append(geo)
    expected = release_reference_decode(outputs, geometries, config, use_centers)
    got = decode.decode_detections(
        [{k: tf.constant(v) for k, v in o.items()} for o in outputs],
        geometries, config, use_centers=use_centers,
    )
    n = int(got["num_detections"][0])
    assert n == len(expected) and n > 5
    np.testing.assert_allclose(got["scores"][0, :n], expected[:, 4], rtol=1e-5)
    np.testing.assert_allclose(got["boxes"][0, :n], expected[:, :4], rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(got["classes"][0, :n], expected[:, 5])
