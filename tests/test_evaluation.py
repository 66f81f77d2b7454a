"""Tests of `tf_centernet.evaluation` (docs/reference.md §8)."""

import contextlib
import hashlib
import io
import json
import logging
import os

import numpy as np
import pytest

from tf_centernet import evaluation
from tf_centernet.evaluation import (
    COCO_METRIC_NAMES,
    FD_METRIC_NAMES,
    coco_metrics,
    detections_to_coco,
    evaluate_coco,
    false_discovery_rates,
    load_coco,
)


def ground_truth_results(coco_gt, image_ids):
    """Every non-crowd ground-truth box as a detection with score 1."""
    results = []
    for ann in coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=image_ids, iscrowd=False)):
        results.append(
            {"image_id": ann["image_id"], "category_id": ann["category_id"],
             "bbox": list(ann["bbox"]), "score": 1.0}
        )
    return results


def test_ground_truth_as_detections_gives_ap_one(coco_tiny):
    annotation_file, _ = coco_tiny["val"]
    coco_gt = load_coco(annotation_file)
    image_ids = sorted(coco_gt.getImgIds())
    metrics = coco_metrics(coco_gt, ground_truth_results(coco_gt, image_ids), image_ids)
    assert list(metrics) == list(COCO_METRIC_NAMES)
    for name in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100"):
        assert metrics[name] == pytest.approx(1.0), name
    fd = false_discovery_rates(coco_gt, ground_truth_results(coco_gt, image_ids), image_ids)
    assert list(fd) == list(FD_METRIC_NAMES)
    for name in FD_METRIC_NAMES:
        # Not exactly 0 by area: at IoU 0.05 pycocotools lets the detection of
        # an out-of-range object take an in-range object it overlaps.
        assert fd[name] == pytest.approx(0.0, abs=1e-3), name
    assert fd["FD"] == pytest.approx(0.0, abs=1e-9)


def test_detections_to_coco_converts_boxes_and_categories():
    out = detections_to_coco(
        7, np.array([[10.0, 20.0, 40.0, 25.5]]), np.array([0.5]), np.array([2]), [1, 5, 9]
    )
    assert out == [{"image_id": 7, "category_id": 9, "bbox": [10.0, 20.0, 30.0, 5.5], "score": 0.5}]
    assert isinstance(out[0]["bbox"][0], float) and isinstance(out[0]["image_id"], int)
    with pytest.raises(ValueError, match="Class index 3"):
        detections_to_coco(7, np.zeros((1, 4)), np.ones(1), np.array([3]), [1, 5, 9])


def synthetic_gt():
    """One 100 x 100 image with one small (20 x 20) box of category 3."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = {
        "images": [{"id": 1, "width": 100, "height": 100, "file_name": "a.jpg"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 10, 20, 20],
                         "area": 400, "iscrowd": 0}],
        "categories": [{"id": 3, "name": "c"}],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def test_false_discovery_rates_by_hand():
    # Shifted by 9 px: IoU = 11 * 20 / (29 * 20) = 0.379, a hit at the IoU
    # thresholds 0.05 ... 0.35 (7 of 10) and a miss at 0.4 ... 0.5.
    det = [{"image_id": 1, "category_id": 3, "bbox": [19, 10, 20, 20], "score": 0.9}]
    fd = false_discovery_rates(synthetic_gt(), det)
    assert fd["FD"] == pytest.approx(0.3)
    assert fd["FD5"] == pytest.approx(0.0)
    assert fd["FD25"] == pytest.approx(0.0)
    assert fd["FD50"] == pytest.approx(1.0)
    assert fd["FDs"] == pytest.approx(0.3)
    assert fd["FDm"] == -1.0 and fd["FDl"] == -1.0  # no medium / large objects


def test_no_detections_give_zeros_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="tf_centernet.evaluation"):
        metrics = coco_metrics(synthetic_gt(), [])
    assert metrics == {name: 0.0 for name in COCO_METRIC_NAMES}
    assert "No detections" in caplog.text


class GroundTruthPredictor:
    """Returns each image's ground truth, found by the image's pixel hash."""

    def __init__(self, coco_gt, image_dir, image_ids, category_ids):
        self.by_hash = {}
        index = {c: i for i, c in enumerate(category_ids)}
        for info in coco_gt.loadImgs(image_ids):
            image = evaluation.load_image_rgb(os.path.join(image_dir, info["file_name"]))
            anns = coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=info["id"], iscrowd=False))
            boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)],
                             np.float32).reshape(-1, 4)
            self.by_hash[hashlib.md5(image.tobytes()).hexdigest()] = {
                "boxes": boxes,
                "scores": np.ones(len(anns), np.float32),
                "classes": np.array([index[a["category_id"]] for a in anns], np.int32),
            }
        self.calls = []

    def predict_images(self, images, batch_size=1):
        self.calls.append(len(images))
        return [self.by_hash[hashlib.md5(im.tobytes()).hexdigest()] for im in images]


def test_evaluate_coco_end_to_end(coco_tiny, tmp_path, capsys):
    annotation_file, image_dir = coco_tiny["val"]
    coco_gt = load_coco(annotation_file)
    category_ids = sorted(coco_gt.getCatIds())
    image_ids = sorted(coco_gt.getImgIds())[:6]
    predictor = GroundTruthPredictor(coco_gt, image_dir, image_ids, category_ids)
    out_json = tmp_path / "dets.json"
    metrics_json = tmp_path / "metrics.json"
    metrics = evaluate_coco(
        predictor, annotation_file, image_dir, output_json=str(out_json),
        metrics_json=str(metrics_json), max_images=6, batch_size=4, compute_fd=True,
    )
    assert predictor.calls == [4, 2]
    assert metrics["AP"] == pytest.approx(1.0) and metrics["FD"] == pytest.approx(0.0)
    assert set(COCO_METRIC_NAMES) | set(FD_METRIC_NAMES) == set(metrics)
    dets = json.loads(out_json.read_text())
    assert len(dets) == len(coco_gt.getAnnIds(imgIds=image_ids, iscrowd=False))
    assert {d["image_id"] for d in dets} <= set(image_ids)
    saved = json.loads(metrics_json.read_text())
    assert saved["metrics"]["AP"] == pytest.approx(1.0) and saved["num_images"] == 6
    printed = capsys.readouterr().out
    assert "AP50" in printed and "100.0" in printed


def test_progress_in_a_log_file_is_plain_lines(monkeypatch, caplog):
    """Not a terminal: progress comes as log lines, never tqdm's carriage returns."""
    import io
    import logging
    import sys

    from tf_centernet import evaluation

    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    caplog.set_level(logging.INFO, logger="tf_centernet")
    progress = evaluation._progress(3, verbose=True)
    for _ in range(3):
        progress.update(1)
    progress.close()
    assert "\r" not in stream.getvalue()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("evaluating:")]
    assert lines and lines[-1].startswith("evaluating: 3/3 images")
