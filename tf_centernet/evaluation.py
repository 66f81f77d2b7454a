"""COCO evaluation of a predictor (docs/reference.md §8).

`evaluate_coco` runs a predictor over a COCO-format image set and
`evaluate_dataset` over any reader's data, and score it with
`tf_centernet.coco_metrics`: the 12 standard AP/AR numbers, optionally the
false discovery rates of the CenterNet paper (`false_discovery_rates`).

Metrics are fractions in [0, 1] (pycocotools' convention; the papers print
percentages). pycocotools reports -1 for a number without ground truth (for
example APs on images without small objects).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Dict, List, Optional, Sequence

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

from tf_centernet.coco_metrics import (  # noqa: E402,F401 (the metrics, re-exported)
    COCO_METRIC_NAMES,
    FD_METRIC_NAMES,
    _quiet,
    _run_cocoeval,
    coco_metrics,
    detections_to_coco,
    false_discovery_rates,
    format_metrics_table,
    load_coco,
)


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
