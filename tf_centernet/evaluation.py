"""COCO evaluation of a predictor (docs/reference.md §8).

`evaluate_coco` runs a predictor over a COCO-format image set and scores it
with pycocotools: the 12 standard AP/AR numbers, optionally the false
discovery rates of the CenterNet paper (`false_discovery_rates`).

Metrics are fractions in [0, 1] (pycocotools' convention; the papers print
percentages). pycocotools reports -1 for a number without ground truth (for
example APs on images without small objects).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
import time
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np

from tf_centernet.data.coco import load_image as load_image_rgb  # the one image reader

logger = logging.getLogger(__name__)

__all__ = [
    "COCO_METRIC_NAMES",
    "FD_METRIC_NAMES",
    "load_coco",
    "load_image_rgb",
    "detections_to_coco",
    "coco_metrics",
    "false_discovery_rates",
    "format_metrics_table",
    "evaluate_coco",
    "evaluate_dataset",
    "check_categories",
]

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


def evaluate_coco(
    predictor,
    coco_gt_file: str,
    image_dir: str,
    category_ids: Optional[Sequence[int]] = None,
    output_json: Optional[str] = None,
    metrics_json: Optional[str] = None,
    max_images: Optional[int] = None,
    batch_size: int = 1,
    compute_fd: bool = False,
    verbose: bool = True,
) -> Dict[str, float]:
    """Runs a predictor over a COCO image set and scores it (docs/reference.md §8).

    Images are taken in ascending image-id order (the first `max_images` of
    them); only they are evaluated.

    Args:
        predictor: object with ``predict_images(list of uint8 RGB arrays,
            batch_size=...) -> list of dicts`` (``boxes`` `(n, 4)` ``[x1, y1,
            x2, y2]`` pixels, ``scores`` `(n,)`, ``classes`` `(n,)` 0-based),
            e.g. `tf_centernet.inference.Predictor`.
        coco_gt_file: str. COCO annotation JSON.
        image_dir: str. Folder of the images (``file_name`` of each image).
        category_ids: sequence of int or None. COCO category id of each class
            index. Defaults to the sorted category ids of the annotations
            (the usual 80-class order).
        output_json: str or None. Where to write the COCO-format detections.
        metrics_json: str or None. Where to write the metrics.
        max_images: int or None. Evaluate only the first images.
        batch_size: int. Images per predictor call. Defaults to `1`.
        compute_fd: bool. Also compute `false_discovery_rates`. Defaults to
            `False`.
        verbose: bool. Progress bar and metrics table. Defaults to `True`.

    Returns:
        dict from `COCO_METRIC_NAMES` (and `FD_METRIC_NAMES` with
        `compute_fd`) to floats in [0, 1] (-1 where undefined).
    """
    coco_gt = load_coco(coco_gt_file)
    if category_ids is None:
        category_ids = sorted(coco_gt.getCatIds())
    image_ids = sorted(coco_gt.getImgIds())
    if max_images is not None:
        image_ids = image_ids[: int(max_images)]

    def load(image_id):
        info = coco_gt.loadImgs([image_id])[0]
        return load_image_rgb(os.path.join(image_dir, info["file_name"]))

    return _evaluate(
        predictor, coco_gt, image_ids, load, category_ids, output_json, metrics_json,
        batch_size, compute_fd, verbose,
    )


def _sample(names, limit=5):
    names = [str(n) for n in names]
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def check_categories(dataset, category_ids: Sequence[int], class_names: Optional[Sequence[str]] = None) -> None:
    """Refuses to score a model against data annotated with other classes.

    Detections are written with the model's category ids (class index i ->
    ``category_ids[i]``) and scored against the data's ids, so the two
    lists must describe the same classes. Equal lists pass. Data whose
    categories are a subset of the model's (same ids, same names) pass with
    a logged warning (only those classes are scored). Anything else is an
    error.

    Args:
        dataset: a dataset of `tf_centernet.data.records` (``category_ids``,
            ``class_names``, ``annotation_file``).
        category_ids: sequence of int. The model's category id per class index.
        class_names: sequence of str or None. The model's class names; default
            the dataset's ``requested_class_names`` (set by `open_dataset`
            from the model's classes.json). Names that are only the ids
            (``"1"``, ``"2"``, ...) count as unknown.

    Raises:
        ValueError: one line naming both class counts, a few names of each and
            the first id they disagree on.
    """
    model_ids = [int(c) for c in category_ids]
    data_ids = [int(c) for c in dataset.category_ids]
    data_names = [str(n) for n in dataset.class_names]
    names = class_names if class_names is not None else getattr(dataset, "requested_class_names", None)
    names = [str(n) for n in names] if names is not None else None
    if names is not None and (len(names) != len(model_ids) or names == [str(i) for i in model_ids]):
        names = None  # placeholders, or not the model's list
    if model_ids == data_ids and (names is None or names == data_names):
        return
    model_name = dict(zip(model_ids, names)) if names is not None else {}
    conflict = None
    for cid, name in zip(data_ids, data_names):
        if cid not in model_ids:
            conflict = f"category id {cid} ({name!r}) is not one of the model's"
        elif model_name and model_name[cid] != name:
            conflict = f"category id {cid} is {model_name[cid]!r} in the model but {name!r} in the data"
        if conflict:
            break
    source = getattr(dataset, "annotation_file", "the validation data")
    if conflict is None:
        logger.warning(
            "%s has %d of the model's %d classes (%s): only those are scored.",
            source, len(data_ids), len(model_ids), _sample(data_names),
        )
        return
    model_text = _sample(names) if names is not None else "ids " + _sample(model_ids)
    raise ValueError(
        f"The model's classes and those of {source} disagree: the model has {len(model_ids)} classes "
        f"({model_text}), the data {len(data_ids)} categories ({_sample(data_names)}); {conflict}. "
        "Evaluate on data annotated with the model's classes (validation_data.annotations), or a model trained on "
        "these categories (--model-dir)."
    )


def record_image(record):
    """The uint8 RGB image of a record: its file, or its encoded bytes (TFRecord, read once).

    Raises:
        ValueError / OSError: an unreadable image (see `load_image_rgb`).
    """
    encoded = record.encoded
    if encoded is None:
        return load_image_rgb(record.file_name)
    from tf_centernet.data.images import decode_image_bytes

    return decode_image_bytes(encoded, record.display_name)


def evaluate_dataset(
    predictor, dataset, category_ids: Optional[Sequence[int]] = None, max_images: Optional[int] = None, **options
) -> Dict[str, float]:
    """`evaluate_coco` on a dataset of any format (COCO, VOC, TFRecord).

    The ground truth is built in memory
    (`tf_centernet.data.records.coco_ground_truth`) and scored by the same
    pycocotools code, so AP numbers are comparable across formats. Only the
    dataset's records (images that could be read) are evaluated, in
    ascending image id order.

    Args:
        dataset: `CocoDataset`, `VocDataset` or `TfRecordDataset`.
        category_ids: COCO category id of each class index; default the
            dataset's ``category_ids``.
        max_images: int or None. Evaluate only the first images.
        **options: ``output_json``, ``metrics_json``, ``batch_size``,
            ``compute_fd``, ``verbose``, as in `evaluate_coco`.

    Returns:
        dict of metrics, as `evaluate_coco`.

    Raises:
        ValueError: the model's classes (`category_ids`, with the names the
            dataset was opened with) disagree with the dataset's
            (`check_categories`); nothing is predicted or written.
    """
    from tf_centernet.data.records import coco_ground_truth

    if category_ids is None:
        category_ids = list(dataset.category_ids)
    else:
        check_categories(dataset, category_ids)
    coco_gt = coco_ground_truth(dataset)
    by_id = {r.image_id: r for r in dataset.records}
    image_ids = sorted(by_id)
    if max_images is not None:
        image_ids = image_ids[: int(max_images)]

    def load(image_id):
        return record_image(by_id[image_id])

    return _evaluate(predictor, coco_gt, image_ids, load, category_ids, **options)


class _PlainProgress:
    """Progress as log lines (at most one per `interval` seconds, and the last): for logs that are not a terminal."""

    def __init__(self, total, interval=30.0):
        self.total, self.done, self.interval = total, 0, interval
        self.start = self.last = time.monotonic()

    def update(self, n):
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.interval or self.done >= self.total:
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            logger.info("evaluating: %d/%d images (%.1f img/s)", self.done, self.total, rate)

    def close(self):
        pass


def _progress(total, verbose):
    """A tqdm bar on a terminal; plain log lines when stderr is a file or pipe (no carriage returns)."""
    from tqdm import tqdm

    if not verbose:
        return tqdm(total=total, disable=True)
    if not getattr(sys.stderr, "isatty", lambda: False)():
        return _PlainProgress(total)
    return tqdm(total=total, desc="evaluating", unit="img")


def _evaluate(predictor, coco_gt, image_ids, load, category_ids, output_json=None, metrics_json=None,
              batch_size=1, compute_fd=False, verbose=True):
    """Predicts `image_ids` (images from `load(id)`) and scores them."""
    results: List[dict] = []
    unreadable: List[int] = []
    progress = _progress(len(image_ids), verbose)
    for start in range(0, len(image_ids), batch_size):
        batch = image_ids[start : start + batch_size]
        ids, images = [], []
        for image_id in batch:
            try:
                images.append(load(image_id))
                ids.append(image_id)
            except (FileNotFoundError, ValueError) as error:  # one bad image of many: skip it
                logger.warning("Skipping image id %s: %s", image_id, error)
                unreadable.append(image_id)
        progress.update(len(batch))
        if not ids:
            continue
        predictions = predictor.predict_images(images, batch_size=len(images))
        for image_id, pred in zip(ids, predictions):
            results.extend(
                detections_to_coco(
                    image_id, pred["boxes"], pred["scores"], pred["classes"], category_ids
                )
            )
    progress.close()
    if unreadable:
        logger.warning("Skipped %d unreadable images (not scored): ids %s", len(unreadable), unreadable[:20])
        skipped = set(unreadable)
        image_ids = [i for i in image_ids if i not in skipped]

    if output_json:
        os.makedirs(os.path.dirname(os.path.abspath(output_json)), exist_ok=True)
        with open(output_json, "w") as f:
            json.dump(results, f)

    metrics = coco_metrics(coco_gt, results, image_ids)
    if compute_fd:
        metrics.update(false_discovery_rates(coco_gt, results, image_ids))
    if verbose:
        print(f"{len(results)} detections on {len(image_ids)} images")
        print(format_metrics_table(metrics))
    if metrics_json:
        os.makedirs(os.path.dirname(os.path.abspath(metrics_json)), exist_ok=True)
        with open(metrics_json, "w") as f:
            json.dump(
                {"metrics": metrics, "num_images": len(image_ids),
                 "num_detections": len(results), "skipped_unreadable_images": len(unreadable)},
                f, indent=2,
            )
    return metrics
