"""Soft-NMS over the valid candidates only, under XLA, and the ``nms="tf"`` option.

Expectations: the greedy NumPy soft-NMS of `_decode_helpers` (per class,
pixel-inclusive IoU, the releases' procedure) and the full-array loop
(``static_shapes=True``); docs/reference.md §7.6-7.7.
"""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from tf_centernet import decode
from tf_centernet.config import DecodeConfig

try:
    from tests._decode_helpers import _np_soft_nms
except ImportError:  # tests/ not a package
    from _decode_helpers import _np_soft_nms

SIGMA, THRESHOLD = 0.5, 0.001


def random_candidates(seed, batch=2, n=300, num_classes=4, invalid=(0.5, 0.8)):
    """Candidates as `decode_detections` hands them to soft-NMS: a share of
    rejected ones (score -1, as the pairing step marks them) per image,
    different per image, and some below the threshold."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 100, (batch, n, 2))
    wh = rng.uniform(5, 50, (batch, n, 2))
    boxes = np.round(np.concatenate([xy, xy + wh], axis=-1), 2).astype(np.float32)
    scores = rng.uniform(0.0, 1.0, (batch, n)).astype(np.float32)
    for b in range(batch):
        scores[b, rng.uniform(size=n) < invalid[b % len(invalid)]] = -1.0
    scores[rng.uniform(size=(batch, n)) < 0.05] = 0.0005  # below the threshold
    classes = rng.integers(0, num_classes, (batch, n)).astype(np.int32)
    return boxes, scores, classes


def numpy_soft_nms(boxes, scores, classes, max_detections):
    """Per class `_np_soft_nms` (the releases' loop), then the best overall."""
    kept = []
    for cls in np.unique(classes):
        rows = np.concatenate([boxes, scores[:, None]], axis=1)[
            (classes == cls) & (scores >= THRESHOLD)
        ].astype(np.float64)
        kept += [list(r) + [cls] for r in _np_soft_nms(rows, SIGMA, THRESHOLD)]
    kept.sort(key=lambda r: -r[4])
    return np.array(kept[:max_detections]).reshape(-1, 6)


def as_tensors(boxes, scores, classes):
    return tf.constant(boxes), tf.constant(scores), tf.constant(classes)


@pytest.mark.parametrize("loop", ["auto", "classes", "sequential"])
@pytest.mark.parametrize("method", ["gaussian", "merge"])
def test_valid_only_loop_equals_full_loop_and_numpy(method, loop):
    boxes, scores, classes = random_candidates(0)
    extra = {}
    if method == "merge":
        rng = np.random.default_rng(1)
        extra = dict(
            tl_scores=tf.constant(rng.uniform(0.1, 1, scores.shape).astype(np.float32)),
            br_scores=tf.constant(rng.uniform(0.1, 1, scores.shape).astype(np.float32)),
        )
    args = as_tensors(boxes, scores, classes)
    fast = decode.soft_nms(*args, max_detections=60, method=method, loop=loop, **extra)
    full = decode.soft_nms(*args, max_detections=60, method=method, static_shapes=True, **extra)
    np.testing.assert_array_equal(fast["num_detections"], full["num_detections"])
    np.testing.assert_array_equal(fast["classes"], full["classes"])
    np.testing.assert_array_equal(fast["scores"], full["scores"])  # bit-identical
    np.testing.assert_allclose(fast["boxes"], full["boxes"], rtol=1e-6)
    if method == "merge":
        return
    for b in range(boxes.shape[0]):
        expected = numpy_soft_nms(boxes[b], scores[b], classes[b], 60)
        n = int(fast["num_detections"][b])
        assert n == len(expected) == 60
        np.testing.assert_allclose(fast["scores"][b, :n], expected[:, 4], rtol=1e-5)
        np.testing.assert_array_equal(fast["boxes"][b, :n], expected[:, :4])
        np.testing.assert_array_equal(fast["classes"][b, :n], expected[:, 5])


def test_class_parallel_loop_keeps_the_tie_order():
    """Scores on a coarse grid and duplicated boxes: many exact ties within
    and across classes; both loops must pick the same boxes in the same order."""
    boxes, scores, classes = random_candidates(8, n=120, num_classes=3)
    scores = np.where(scores > 0, np.round(scores, 1) + 0.05, scores).astype(np.float32)
    boxes[:, 60:] = boxes[:, :60]  # every box twice, same class half the time
    classes[:, 60:90] = classes[:, :30]
    scores[:, 60:] = np.where(scores[:, :60] > 0, scores[:, :60], scores[:, 60:])
    args = as_tensors(boxes, scores, classes)
    seq = decode.soft_nms(*args, max_detections=80, loop="sequential")
    par = decode.soft_nms(*args, max_detections=80, loop="classes")
    for key in ("boxes", "scores", "classes", "num_detections"):
        np.testing.assert_array_equal(par[key], seq[key])
    expected = numpy_soft_nms(boxes[0], scores[0], classes[0], 80)
    n = int(par["num_detections"][0])
    np.testing.assert_allclose(par["scores"][0, :n], expected[:, 4], rtol=1e-5)
    with pytest.raises(ValueError, match="loop"):
        decode.soft_nms(*args, loop="bogus")


def test_fewer_valid_candidates_than_detections_and_none_at_all():
    boxes, scores, classes = random_candidates(2, n=40, invalid=(0.9, 1.0))
    out = decode.soft_nms(*as_tensors(boxes, scores, classes), max_detections=30)
    expected = numpy_soft_nms(boxes[0], scores[0], classes[0], 30)
    n = int(out["num_detections"][0])
    assert 0 < n == len(expected) < 30
    np.testing.assert_allclose(out["scores"][0, :n], expected[:, 4], rtol=1e-5)
    np.testing.assert_array_equal(out["scores"][0, n:], 0.0)
    np.testing.assert_array_equal(out["boxes"][0, n:], 0.0)
    # Image 1 has no valid candidate at all: zero rows, count 0.
    assert int(out["num_detections"][1]) == 0
    np.testing.assert_array_equal(out["scores"][1], 0.0)
    np.testing.assert_array_equal(out["classes"][1], 0)
    assert out["boxes"].shape == (2, 30, 4)


def test_soft_nms_under_xla_equals_graph_mode():
    boxes, scores, classes = random_candidates(4, n=200)
    args = as_tensors(boxes, scores, classes)

    def run(b, s, c):
        return decode.soft_nms(b, s, c, max_detections=50, static_shapes=True)

    graph = tf.function(lambda b, s, c: decode.soft_nms(b, s, c, max_detections=50))(*args)
    compiled = tf.function(run, jit_compile=True)
    xla = compiled(*args)
    # It really went through XLA: the compiled function has an HLO module.
    assert "HloModule" in compiled.experimental_get_compiler_ir(*args)(stage="hlo")
    np.testing.assert_array_equal(xla["num_detections"], graph["num_detections"])
    np.testing.assert_array_equal(xla["classes"], graph["classes"])
    np.testing.assert_allclose(xla["scores"], graph["scores"], rtol=1e-5)
    np.testing.assert_allclose(xla["boxes"], graph["boxes"])


def _pair_outputs(seed):
    """Random corner/center maps of a batch of 2 (image + flipped copy)."""
    rng = np.random.default_rng(seed)
    h = w = 16
    out = {
        "tl_heatmap": rng.normal(-1, 2, (2, h, w, 3)),
        "br_heatmap": rng.normal(-1, 2, (2, h, w, 3)),
        "ct_heatmap": rng.normal(-1, 2, (2, h, w, 3)),
        "tl_embedding": rng.uniform(0, 1, (2, h, w, 1)),
        "br_embedding": rng.uniform(0, 1, (2, h, w, 1)),
        "tl_offset": rng.uniform(0, 1, (2, h, w, 2)),
        "br_offset": rng.uniform(0, 1, (2, h, w, 2)),
        "ct_offset": rng.uniform(0, 1, (2, h, w, 2)),
    }
    return {k: tf.constant(v.astype(np.float32)) for k, v in out.items()}


def test_decoder_jit_compile_gives_the_same_detections():
    config = DecodeConfig(top_k=20, num_dets=100, max_detections=30)
    outputs = _pair_outputs(5)
    images = tf.zeros([1, 63, 63, 3])
    plain = decode.Decoder(config)(outputs, images)
    jit_decoder = decode.Decoder(dataclasses.replace(config, jit_compile=True))
    xla = jit_decoder(outputs, images)
    assert jit_decoder._compiled is not None
    n = int(plain["num_detections"][0])
    assert n > 3
    np.testing.assert_array_equal(xla["num_detections"], plain["num_detections"])
    np.testing.assert_array_equal(xla["classes"], plain["classes"])
    np.testing.assert_allclose(xla["scores"], plain["scores"], rtol=1e-5)
    np.testing.assert_allclose(xla["boxes"], plain["boxes"], rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="jit_compile"):
        decode.Decoder(dataclasses.replace(config, jit_compile=True, nms="tf"))


def box_iou_np(a, b):
    """Pixel-inclusive IoU of two boxes (the releases' convention)."""
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    area_a = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
    area_b = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    return inter / (area_a + area_b - inter)


def test_tf_option_matches_exact_soft_nms_within_iou_099():
    """Matching: every detection of the exact top-k with score >= 0.05 has a
    detection of the ``nms="tf"`` output of the same class, IoU >= 0.99 and
    score within 1e-3 (relative); and the counts agree."""
    boxes, scores, classes = random_candidates(6, n=400, num_classes=3)
    boxes = boxes * 5.0  # image-sized coordinates, up to 750 px
    args = as_tensors(boxes, scores, classes)
    exact = decode.soft_nms(*args, max_detections=100)
    fast = decode.soft_nms_tf(*args, max_detections=100)
    for b in range(boxes.shape[0]):
        n = int(exact["num_detections"][b])
        assert int(fast["num_detections"][b]) == n
        got = list(zip(fast["boxes"][b].numpy()[:n], fast["scores"][b].numpy()[:n],
                       fast["classes"][b].numpy()[:n]))
        checked = 0
        for box, score, cls in zip(exact["boxes"][b].numpy()[:n], exact["scores"][b].numpy()[:n],
                                   exact["classes"][b].numpy()[:n]):
            if score < 0.05:
                continue
            checked += 1
            assert any(
                c == cls and box_iou_np(box, g) >= 0.99 and abs(s - score) <= 1e-3 * score
                for g, s, c in got
            ), (b, box, score, cls)
        assert checked > 20


def test_decode_detections_with_nms_tf():
    config = DecodeConfig(top_k=20, num_dets=100, max_detections=30)
    outputs = _pair_outputs(7)
    images = tf.zeros([1, 63, 63, 3])
    exact = decode.Decoder(config, use_centers=False)(outputs, images)
    fast = decode.Decoder(dataclasses.replace(config, nms="tf"), use_centers=False)(outputs, images)
    n = int(exact["num_detections"][0])
    assert n > 3 and int(fast["num_detections"][0]) == n
    np.testing.assert_allclose(fast["scores"][0, :n], exact["scores"][0, :n], rtol=1e-3)
    np.testing.assert_array_equal(fast["classes"][0, n:], -1)
    with pytest.raises(ValueError, match="'tf'"):
        decode.decode_detections(outputs, decode.input_geometry(images, [16, 16]),
                                 dataclasses.replace(config, nms="bogus"))
