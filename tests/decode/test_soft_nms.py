"""Soft-NMS over the valid candidates only, under XLA, and the ``nms="tf"`` option.

Expectations: the greedy NumPy soft-NMS of `_decode_helpers` (per class,
pixel-inclusive IoU, the releases' procedure) and the full-array loop
(``static_shapes=True``); docs/reference.md §7.6-7.7.
"""

import dataclasses
import warnings

import numpy as np
import pytest
import tensorflow as tf

from support.decode_helpers import _np_soft_nms
from support.saved_ops import saved_op_types
from tf_centernet import decode
from tf_centernet.config import DecodeConfig

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


def assert_matches_numpy(out, boxes, scores, classes, max_detections):
    """Every image of `out` holds `max_detections` selections equal to the
    releases' greedy procedure (`numpy_soft_nms`): same boxes and classes,
    scores within float32 rounding of its float64."""
    for b in range(boxes.shape[0]):
        expected = numpy_soft_nms(boxes[b], scores[b], classes[b], max_detections)
        n = int(out["num_detections"][b])
        assert n == len(expected) == max_detections
        np.testing.assert_allclose(out["scores"][b, :n], expected[:, 4], rtol=1e-5)
        np.testing.assert_array_equal(out["boxes"][b, :n], expected[:, :4])
        np.testing.assert_array_equal(out["classes"][b, :n], expected[:, 5])


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
    fast = decode.soft_nms(*args, max_detections=60, method=method, loop=loop, impl="loop", **extra)
    full = decode.soft_nms(*args, max_detections=60, method=method, static_shapes=True, **extra)
    np.testing.assert_array_equal(fast["num_detections"], full["num_detections"])
    np.testing.assert_array_equal(fast["classes"], full["classes"])
    np.testing.assert_array_equal(fast["scores"], full["scores"])  # bit-identical
    np.testing.assert_allclose(fast["boxes"], full["boxes"], rtol=1e-6)
    if method == "merge":
        return
    assert_matches_numpy(fast, boxes, scores, classes, 60)


def test_class_parallel_loop_keeps_the_tie_order():
    """Scores on a coarse grid and duplicated boxes: many exact ties within
    and across classes; both loops must pick the same boxes in the same order."""
    boxes, scores, classes = random_candidates(8, n=120, num_classes=3)
    scores = np.where(scores > 0, np.round(scores, 1) + 0.05, scores).astype(np.float32)
    boxes[:, 60:] = boxes[:, :60]  # every box twice, same class half the time
    classes[:, 60:90] = classes[:, :30]
    scores[:, 60:] = np.where(scores[:, :60] > 0, scores[:, :60], scores[:, 60:])
    args = as_tensors(boxes, scores, classes)
    seq = decode.soft_nms(*args, max_detections=80, loop="sequential", impl="loop")
    par = decode.soft_nms(*args, max_detections=80, loop="classes", impl="loop")
    for key in ("boxes", "scores", "classes", "num_detections"):
        np.testing.assert_array_equal(par[key], seq[key])
    expected = numpy_soft_nms(boxes[0], scores[0], classes[0], 80)
    n = int(par["num_detections"][0])
    np.testing.assert_allclose(par["scores"][0, :n], expected[:, 4], rtol=1e-5)
    with pytest.raises(ValueError, match="loop"):
        decode.soft_nms(*args, loop="bogus")


def test_fewer_valid_candidates_than_detections_and_none_at_all(soft_nms_impl):
    boxes, scores, classes = random_candidates(2, n=40, invalid=(0.9, 1.0))
    out = decode.soft_nms(*as_tensors(boxes, scores, classes), max_detections=30, impl=soft_nms_impl)
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


# ---------------------------------------------------------------------------
# The compiled op (custom_ops/cc/kernels/soft_nms_kernels.cc).
# ---------------------------------------------------------------------------


def corner_scores(shape, seed=1):
    rng = np.random.default_rng(seed)
    return {
        "tl_scores": tf.constant(rng.uniform(0.1, 1, shape).astype(np.float32)),
        "br_scores": tf.constant(rng.uniform(0.1, 1, shape).astype(np.float32)),
    }


@pytest.mark.parametrize("seed", [0, 3])
@pytest.mark.parametrize("method", ["gaussian", "merge"])
def test_compiled_equals_the_loop_and_numpy(compiled_ops, method, seed):
    """Same selections as the sequential loop; scores within float rounding
    of `exp` (TF vectorises it), boxes bit-identical (merged: float rounding
    of the sums); and the releases' greedy procedure in NumPy."""
    boxes, scores, classes = random_candidates(seed, n=400, num_classes=5)
    extra = corner_scores(scores.shape) if method == "merge" else {}
    args = as_tensors(boxes, scores, classes)
    ours = decode.soft_nms(*args, max_detections=80, method=method, impl="custom", **extra)
    loop = decode.soft_nms(*args, max_detections=80, method=method, impl="loop",
                           loop="sequential", **extra)
    np.testing.assert_array_equal(ours["num_detections"], loop["num_detections"])
    np.testing.assert_array_equal(ours["classes"], loop["classes"])
    np.testing.assert_allclose(ours["scores"], loop["scores"], rtol=1e-6)
    if method == "merge":
        np.testing.assert_allclose(ours["boxes"], loop["boxes"], rtol=1e-5)
        # Merging moved boxes: the check compares something.
        assert not np.allclose(ours["boxes"], decode.soft_nms(*args, max_detections=80, impl="custom")["boxes"])
        return
    np.testing.assert_array_equal(ours["boxes"], loop["boxes"])
    assert_matches_numpy(ours, boxes, scores, classes, 80)


def test_compiled_keeps_the_tie_order(compiled_ops):
    """Exact ties within and across classes (coarse scores, duplicated
    boxes): the loop's rule, equal scores to the lowest candidate index."""
    boxes, scores, classes = random_candidates(8, n=120, num_classes=3)
    scores = np.where(scores > 0, np.round(scores, 1) + 0.05, scores).astype(np.float32)
    boxes[:, 60:] = boxes[:, :60]
    classes[:, 60:90] = classes[:, :30]
    scores[:, 60:] = np.where(scores[:, :60] > 0, scores[:, :60], scores[:, 60:])
    args = as_tensors(boxes, scores, classes)
    ours = decode.soft_nms(*args, max_detections=80, impl="custom")
    loop = decode.soft_nms(*args, max_detections=80, impl="loop", loop="sequential")
    for key in ("boxes", "classes", "num_detections"):
        np.testing.assert_array_equal(ours[key], loop[key])
    np.testing.assert_allclose(ours["scores"], loop["scores"], rtol=1e-6)
    # Hand-made: three equal scores, two classes, no overlap: index order.
    same = decode.soft_nms(
        tf.constant([[[0, 0, 9, 9], [20, 0, 29, 9], [40, 0, 49, 9]]], tf.float32),
        tf.constant([[0.5, 0.5, 0.5]]), tf.constant([[1, 0, 1]]), max_detections=3, impl="custom",
    )
    np.testing.assert_array_equal(same["classes"][0], [1, 0, 1])
    np.testing.assert_array_equal(same["boxes"][0, :, 0], [0, 20, 40])


def test_compiled_edge_cases(compiled_ops):
    from tf_centernet.ops import custom

    # NaN scores never enter; an image without candidates gives zero rows;
    # no candidates at all (n = 0) and max_detections = 0 are fine.
    boxes = tf.constant([[[0, 0, 9, 9], [1, 1, 9, 9]], [[0, 0, 9, 9], [1, 1, 9, 9]]], tf.float32)
    scores = tf.constant([[np.nan, 0.5], [-1.0, 0.0005]])
    out = custom.soft_nms(boxes, scores, tf.zeros([2, 2], tf.int32), 3, 0.5, 0.001)
    np.testing.assert_array_equal(out["num_detections"], [1, 0])
    np.testing.assert_array_equal(out["scores"], [[0.5, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(out["boxes"][0, 0], [1, 1, 9, 9])
    empty = custom.soft_nms(tf.zeros([1, 0, 4]), tf.zeros([1, 0]), tf.zeros([1, 0], tf.int32), 4, 0.5, 0.001)
    assert empty["boxes"].shape == (1, 4, 4) and int(empty["num_detections"][0]) == 0
    none = custom.soft_nms(boxes, scores, tf.zeros([2, 2], tf.int32), 0, 0.5, 0.001)
    assert none["scores"].shape == (2, 0)
    # Unknown shapes in a graph: the outputs' shapes are still known.
    fn = tf.function(
        lambda b, s, c: custom.soft_nms(b, s, c, 7, 0.5, 0.001),
        input_signature=[tf.TensorSpec([None, None, 4]), tf.TensorSpec([None, None]),
                         tf.TensorSpec([None, None], tf.int32)],
    )
    assert fn.get_concrete_function().structured_outputs["boxes"].shape.as_list() == [None, 7, 4]
    # Mismatched shapes name the input.
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match="scores|Dimension|shape"):
        custom.soft_nms(boxes, tf.zeros([2, 3]), tf.zeros([2, 2], tf.int32), 3, 0.5, 0.001)
    with pytest.raises(ValueError, match="both"):
        custom.soft_nms(boxes, scores, tf.zeros([2, 2], tf.int32), 3, 0.5, 0.001, tl_scores=scores)
    with pytest.raises(tf.errors.InvalidArgumentError, match="sigma"):
        custom.soft_nms(boxes, scores, tf.zeros([2, 2], tf.int32), 3, 0.0, 0.001)


def test_auto_uses_compiled_except_under_xla_export_and_scan_only(compiled_ops, tmp_path):
    from tf_centernet.ops import custom, pooling

    boxes, scores, classes = as_tensors(*random_candidates(4, n=50))

    def op_types(impl="auto", **kwargs):
        fn = tf.function(lambda b, s, c: decode.soft_nms(b, s, c, max_detections=10, impl=impl), **kwargs)
        return {op.type for op in fn.get_concrete_function(boxes, scores, classes).graph.get_operations()}

    assert decode.resolve_soft_nms_impl("auto") == "custom"
    assert custom.SOFT_NMS_OP_TYPE in op_types()
    assert custom.SOFT_NMS_OP_TYPE not in op_types("loop")
    assert decode.resolve_soft_nms_impl("auto", static_shapes=True) == "loop"
    with pooling.scan_only():
        assert decode.resolve_soft_nms_impl("auto") == "loop"
        assert custom.SOFT_NMS_OP_TYPE not in op_types()
    with pytest.raises(ValueError, match="XLA"):
        tf.function(lambda b, s, c: decode.soft_nms(b, s, c, impl="custom"), jit_compile=True)(
            boxes, scores, classes)
    with pytest.raises(ValueError, match="impl"):
        decode.resolve_soft_nms_impl("fast")
    with pytest.raises(ValueError, match="decode.soft_nms_impl"):
        decode.decode_detections(
            _pair_outputs(7), decode.input_geometry(tf.zeros([1, 63, 63, 3]), [16, 16]),
            DecodeConfig(soft_nms_impl="fast"),
        )
    # A SavedModel traced with "auto" holds the loop, and loads without our library.
    module = tf.Module()
    module.f = tf.function(
        lambda b, s, c: decode.soft_nms(b, s, c, max_detections=10),
        input_signature=[tf.TensorSpec([None, None, 4]), tf.TensorSpec([None, None]),
                         tf.TensorSpec([None, None], tf.int32)],
    )
    tf.saved_model.save(module, str(tmp_path / "saved"))
    saved = tf.saved_model.load(str(tmp_path / "saved"))
    ops = saved_op_types(saved.f)
    assert custom.SOFT_NMS_OP_TYPE not in ops and ops & {"While", "StatelessWhile"}
    expected = decode.soft_nms(boxes, scores, classes, max_detections=10, impl="custom")
    got = saved.f(boxes, scores, classes)
    np.testing.assert_array_equal(got["classes"], expected["classes"])
    np.testing.assert_allclose(got["scores"], expected["scores"], rtol=1e-6)


def test_compiled_fallback_warns_once_and_custom_raises(monkeypatch):
    from tf_centernet.ops import custom

    monkeypatch.setitem(custom._state, "library", None)
    monkeypatch.setitem(custom._state, "error", "simulated: the library failed to load.")
    monkeypatch.setitem(custom._state, "warned", set())
    args = as_tensors(*random_candidates(5, n=60))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = decode.soft_nms(*args, max_detections=20)
        decode.soft_nms(*args, max_detections=20)
    fallback = [w for w in caught if issubclass(w.category, custom.CustomOpsFallbackWarning)]
    assert len(fallback) == 1
    assert "soft-NMS" in str(fallback[0].message) and "simulated" in str(fallback[0].message)
    loop = decode.soft_nms(*args, max_detections=20, impl="loop")
    for key in first:
        np.testing.assert_array_equal(first[key], loop[key])
    with pytest.raises(custom.CustomOpsUnavailable, match="simulated"):
        decode.soft_nms(*args, impl="custom")
