"""COCO metrics (docs/reference.md §8): pycocotools' 12 AP/AR numbers and the CenterNet paper's false discovery rates.

Metrics are fractions in [0, 1] (pycocotools' convention; the papers print
percentages). pycocotools reports -1 for a number without ground truth (for
example APs on images without small objects). `tf_centernet.evaluation`
runs a predictor over a data set and scores it with these.
"""

from __future__ import annotations

import contextlib
import io
import logging
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np

logger = logging.getLogger(__name__)


# Order of COCOeval.stats.
COCO_METRIC_NAMES = (
    "AP", "AP50", "AP75", "APs", "APm", "APl",
    "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)
FD_METRIC_NAMES = ("FD", "FD5", "FD25", "FD50", "FDs", "FDm", "FDl")


@contextlib.contextmanager
def _quiet(enabled: bool = True):
    """Silences pycocotools' prints when `enabled`."""
    if not enabled:
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def load_coco(annotation_file: str, verbose: bool = False):
    """Loads a COCO annotation file (`pycocotools.coco.COCO`)."""
    from pycocotools.coco import COCO

    with _quiet(not verbose):
        return COCO(annotation_file)


def detections_to_coco(
    image_id: int,
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    category_ids: Sequence[int],
) -> List[dict]:
    """One image's detections as COCO result entries.

    Args:
        image_id: int. COCO image id.
        boxes: float array `(n, 4)` ``[x1, y1, x2, y2]``, image pixels.
        scores: float array `(n,)`.
        classes: int array `(n,)`, 0-based class index.
        category_ids: sequence of int. COCO category id of each class index.

    Returns:
        list of dicts ``{"image_id", "category_id", "bbox": [x, y, w, h],
        "score"}`` with plain Python floats.

    Raises:
        ValueError: a class index outside `category_ids`.
    """
    results = []
    for box, score, cls in zip(np.asarray(boxes), np.asarray(scores), np.asarray(classes)):
        cls = int(cls)
        if not 0 <= cls < len(category_ids):
            raise ValueError(
                f"Class index {cls} outside the {len(category_ids)} category ids."
            )
        x1, y1, x2, y2 = (float(v) for v in box)
        results.append(
            {
                "image_id": int(image_id),
                "category_id": int(category_ids[cls]),
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "score": float(score),
            }
        )
    return results


def _run_cocoeval(coco_gt, results_or_coco_dt, image_ids, iou_thresholds=None, verbose=False):
    """COCOeval (bbox) evaluated and accumulated."""
    from pycocotools.cocoeval import COCOeval

    with _quiet(not verbose):
        if isinstance(results_or_coco_dt, (list, tuple)):
            # loadRes adds keys to the dicts it gets: give it copies.
            coco_dt = coco_gt.loadRes([dict(r) for r in results_or_coco_dt])
        else:
            coco_dt = results_or_coco_dt
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        if image_ids is not None:
            evaluator.params.imgIds = sorted(int(i) for i in image_ids)
        if iou_thresholds is not None:
            evaluator.params.iouThrs = np.asarray(iou_thresholds, dtype=np.float64)
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator


def coco_metrics(
    coco_gt,
    results: Sequence[dict],
    image_ids: Optional[Iterable[int]] = None,
    verbose: bool = False,
) -> Dict[str, float]:
    """The 12 standard COCO box metrics (docs/reference.md §8).

    Args:
        coco_gt: `pycocotools.coco.COCO`. Ground truth.
        results: sequence of COCO result dicts (see `detections_to_coco`).
        image_ids: iterable of int or None. Images evaluated (all of
            `coco_gt` when None). Images without results count as misses.
        verbose: bool. Let pycocotools print its summary. Defaults to
            `False`.

    Returns:
        dict from `COCO_METRIC_NAMES` to floats. With no results at all
        every number is 0.0 (pycocotools cannot load an empty result list)
        and a warning is logged.
    """
    if len(results) == 0:
        logger.warning("No detections to evaluate: every COCO metric is 0.")
        return {name: 0.0 for name in COCO_METRIC_NAMES}
    evaluator = _run_cocoeval(coco_gt, results, image_ids, verbose=verbose)
    with _quiet(not verbose):
        evaluator.summarize()
    return {name: float(v) for name, v in zip(COCO_METRIC_NAMES, evaluator.stats)}


def _mean_precision(precision: np.ndarray) -> float:
    valid = precision[precision > -1]
    return float(np.mean(valid)) if valid.size else -1.0


def false_discovery_rates(
    coco_gt,
    coco_dt_or_results,
    image_ids: Optional[Iterable[int]] = None,
) -> Dict[str, float]:
    """False discovery rates of the CenterNet paper (docs/reference.md §8; paper Tables 1, 3).

    FD = 1 - AP, with AP averaged over the IoU thresholds 0.05:0.05:0.5
    (10 thresholds) instead of 0.5:0.05:0.95; FD5, FD25, FD50 = 1 - AP at IoU
    0.05, 0.25, 0.5; FDs, FDm, FDl = 1 - AP of small / medium / large objects
    over the same 10 thresholds. AP is pycocotools' 101-point precision at
    100 detections per image, averaged over the categories with ground truth.

    Args:
        coco_gt: `pycocotools.coco.COCO`. Ground truth.
        coco_dt_or_results: a `COCO` of detections (``coco_gt.loadRes``) or a
            sequence of COCO result dicts.
        image_ids: iterable of int or None. Images evaluated (default all).

    Returns:
        dict from `FD_METRIC_NAMES` to floats in [0, 1]; -1 where
        undefined (no ground truth of that size); 1.0 everywhere without
        detections.
    """
    if isinstance(coco_dt_or_results, (list, tuple)) and len(coco_dt_or_results) == 0:
        logger.warning("No detections: every false discovery rate is 1.")
        return {name: 1.0 for name in FD_METRIC_NAMES}
    thresholds = np.round(np.linspace(0.05, 0.5, 10), 2)
    evaluator = _run_cocoeval(coco_gt, coco_dt_or_results, image_ids, thresholds)
    # precision: (iou thresholds, recall points, categories, areas, max dets);
    # areas are (all, small, medium, large), max dets (1, 10, 100).
    precision = evaluator.eval["precision"][..., -1]

    def fd(p):
        ap = _mean_precision(p)
        return 1.0 - ap if ap >= 0 else -1.0

    index = {round(float(t), 2): i for i, t in enumerate(thresholds)}
    return {
        "FD": fd(precision[:, :, :, 0]),
        "FD5": fd(precision[index[0.05], :, :, 0]),
        "FD25": fd(precision[index[0.25], :, :, 0]),
        "FD50": fd(precision[index[0.5], :, :, 0]),
        "FDs": fd(precision[:, :, :, 1]),
        "FDm": fd(precision[:, :, :, 2]),
        "FDl": fd(precision[:, :, :, 3]),
    }


def format_metrics_table(metrics: Mapping[str, float]) -> str:
    """A two-column text table of metrics (percentages, one decimal)."""
    width = max(len(name) for name in metrics) if metrics else 6
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  -----"]
    for name, value in metrics.items():
        shown = "  n/a" if value < 0 else f"{100.0 * value:5.1f}"
        lines.append(f"{name:<{width}}  {shown}")
    return "\n".join(lines)
