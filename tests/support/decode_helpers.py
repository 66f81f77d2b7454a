"""Hand-built model outputs and fake detectors for the decoding tests."""

from __future__ import annotations

import os
from typing import Dict, Iterable, Optional, Sequence

import numpy as np
import tensorflow as tf

from support import REPO_ROOT

PEAK = 10.0  # logit of a keypoint: sigmoid = 0.9999546
BACKGROUND = -10.0
# Background embeddings far apart, so that no pair with a background corner
# passes the embedding test and only the hand-placed pairs survive.
TL_BACKGROUND_EMBEDDING = 100.0
BR_BACKGROUND_EMBEDDING = -100.0


def sigmoid(x: float) -> np.float32:
    return np.float32(1.0 / (1.0 + np.exp(-np.float32(x))))


def shared_dir() -> str:
    """The project's shared folder (data, spec), next to the checkout."""
    repo_root = REPO_ROOT
    return os.path.join(os.path.dirname(repo_root), "shared")


def keypoint_maps(
    batch: int,
    height: int,
    width: int,
    num_classes: int,
    points: Iterable[dict],
    background_embedding: float = 0.0,
):
    """Heatmap logits, offsets and embeddings with the given keypoints.

    Each point is a dict with ``b`` (image), ``cls``, ``x``, ``y`` (integer
    cell), and optional ``ox``, ``oy`` (offsets), ``e`` (embedding),
    ``logit`` (default `PEAK`).
    """
    heat = np.full((batch, height, width, num_classes), BACKGROUND, np.float32)
    offset = np.zeros((batch, height, width, 2), np.float32)
    embedding = np.full((batch, height, width, 1), background_embedding, np.float32)
    for p in points:
        b, y, x = p.get("b", 0), p["y"], p["x"]
        heat[b, y, x, p["cls"]] = p.get("logit", PEAK)
        offset[b, y, x] = (p.get("ox", 0.0), p.get("oy", 0.0))
        embedding[b, y, x, 0] = p.get("e", 0.0)
    return heat, offset, embedding


def make_outputs(
    batch: int,
    height: int,
    width: int,
    num_classes: int,
    tl: Sequence[dict] = (),
    br: Sequence[dict] = (),
    ct: Optional[Sequence[dict]] = None,
) -> Dict[str, tf.Tensor]:
    """A model output dict (docs/reference.md §3 keys) with hand-placed keypoints."""
    out = {}
    out["tl_heatmap"], out["tl_offset"], out["tl_embedding"] = keypoint_maps(
        batch, height, width, num_classes, tl, TL_BACKGROUND_EMBEDDING
    )
    out["br_heatmap"], out["br_offset"], out["br_embedding"] = keypoint_maps(
        batch, height, width, num_classes, br, BR_BACKGROUND_EMBEDDING
    )
    if ct is not None:
        out["ct_heatmap"], out["ct_offset"], _ = keypoint_maps(
            batch, height, width, num_classes, ct
        )
    return {key: tf.constant(value) for key, value in out.items()}


class RectangleOracle:
    """A fake detector that "sees" solid rectangles of known colours.

    It un-does nothing of the predictor's geometry: it finds, in the
    normalised network input it receives, the pixels of each object's colour,
    takes their bounding box ``[first column, last column + 1)`` etc. in input
    pixels, and writes perfect output maps (logit +10 at the corner and center
    cells, -10 elsewhere, exact offsets, one embedding per object) on the
    ``(input + 1) / 4`` grid with the ratio ``out / in``. Flipped inputs thus
    get mirrored maps without the oracle knowing about flips.

    Args:
        colors: (n, 3) uint8 RGB colours, one per object.
        classes: n class indices.
        num_classes: int.
        mean, std: the predictor's normalisation (RGB).
        with_centers: emit ``ct_heatmap``/``ct_offset`` (CenterNet).
    """

    def __init__(self, colors, classes, num_classes, mean, std, with_centers=True):
        colors = np.asarray(colors, np.float64)
        mean = np.asarray(mean, np.float64)
        std = np.asarray(std, np.float64)
        self.targets = ((colors / 255.0 - mean) / std).astype(np.float32)
        self.tolerance = (0.4 / 255.0 / std).astype(np.float32)
        self.classes = [int(c) for c in classes]
        self.num_classes = int(num_classes)
        self.with_centers = with_centers
        self.calls = 0

    def __call__(self, x, training=False):
        self.calls += 1
        shape = tf.shape(x)
        batch, height, width = shape[0], shape[1], shape[2]
        out_h, out_w = (height + 1) // 4, (width + 1) // 4
        rh = tf.cast(tf.cast(out_h, tf.float64) / tf.cast(height, tf.float64), tf.float32)
        rw = tf.cast(tf.cast(out_w, tf.float64) / tf.cast(width, tf.float64), tf.float32)
        iy = tf.range(out_h)[None, :, None]
        ix = tf.range(out_w)[None, None, :]

        def blank(channels, value):
            return tf.fill([batch, out_h, out_w, channels], tf.constant(value, tf.float32))

        maps = {
            "tl_heatmap": blank(self.num_classes, BACKGROUND),
            "br_heatmap": blank(self.num_classes, BACKGROUND),
            "tl_offset": blank(2, 0.0),
            "br_offset": blank(2, 0.0),
            "tl_embedding": blank(1, TL_BACKGROUND_EMBEDDING),
            "br_embedding": blank(1, BR_BACKGROUND_EMBEDDING),
        }
        if self.with_centers:
            maps["ct_heatmap"] = blank(self.num_classes, BACKGROUND)
            maps["ct_offset"] = blank(2, 0.0)

        def first_true(flags, length):
            index = tf.range(length)[None, :]
            return tf.reduce_min(tf.where(flags, index, length), axis=1)

        for k, (target, cls) in enumerate(zip(self.targets, self.classes)):
            mask = tf.reduce_all(tf.abs(x - target) < self.tolerance, axis=-1)
            present = tf.reduce_any(mask, axis=[1, 2])  # (batch,)
            cols = tf.reduce_any(mask, axis=1)  # (batch, width)
            rows = tf.reduce_any(mask, axis=2)  # (batch, height)
            x1 = first_true(cols, width)
            x2 = width - first_true(tf.reverse(cols, [1]), width)
            y1 = first_true(rows, height)
            y2 = height - first_true(tf.reverse(rows, [1]), height)
            x1, x2 = tf.cast(x1, tf.float32) * rw, tf.cast(x2, tf.float32) * rw
            y1, y2 = tf.cast(y1, tf.float32) * rh, tf.cast(y2, tf.float32) * rh
            points = {"tl": (x1, y1), "br": (x2, y2)}
            if self.with_centers:
                points["ct"] = ((x1 + x2) / 2.0, (y1 + y2) / 2.0)
            onehot = tf.one_hot(cls, self.num_classes, on_value=True, off_value=False)
            for name, (fx, fy) in points.items():
                cx, cy = tf.floor(fx), tf.floor(fy)
                cell = (
                    tf.equal(iy, tf.cast(cy, tf.int32)[:, None, None])
                    & tf.equal(ix, tf.cast(cx, tf.int32)[:, None, None])
                    & present[:, None, None]
                )[..., None]  # (batch, out_h, out_w, 1)
                key = f"{name}_heatmap"
                maps[key] = tf.where(cell & onehot, PEAK, maps[key])
                off = tf.stack([fx - cx, fy - cy], axis=-1)[:, None, None, :]
                maps[f"{name}_offset"] = tf.where(cell, off, maps[f"{name}_offset"])
                if name != "ct":
                    key = f"{name}_embedding"
                    maps[key] = tf.where(cell, 2.0 * k, maps[key])
        return maps


def draw_rectangles(height, width, rects, colors):
    """A black uint8 RGB image with solid rectangles ``(x1, y1, x2, y2)``
    (exclusive ends, pixels)."""
    image = np.zeros((height, width, 3), np.uint8)
    for (x1, y1, x2, y2), color in zip(rects, colors):
        image[y1:y2, x1:x2] = color
    return image


def iou(a, b) -> float:
    """IoU of two ``[x1, y1, x2, y2]`` boxes (continuous coordinates)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


# ---------------------------------------------------------------------------
# A plain-numpy transcription of the releases' test-time behaviour (docs/reference.md §7),
# written loop by loop from its description, to check the vectorised TF
# decoder against. One image at a time; float32 like the releases.
# ---------------------------------------------------------------------------


def _np_topk(logits, offsets, k):
    """(H, W, C) logits -> scores, classes, flat cells, xs, ys (offsets added)."""
    height, width, _ = logits.shape
    heat = (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)
    padded = np.pad(heat, ((1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    hmax = np.max(
        [padded[dy : dy + height, dx : dx + width] for dy in range(3) for dx in range(3)],
        axis=0,
    )
    heat = heat * (hmax == heat)
    flat = heat.transpose(2, 0, 1).reshape(-1)  # (class, y, x) order
    inds = np.argsort(-flat, kind="stable")[:k]
    cells = inds % (height * width)
    ys = (cells // width).astype(np.float32)
    xs = (cells % width).astype(np.float32)
    off = offsets.reshape(-1, 2)[cells]
    return flat[inds], inds // (height * width), cells, xs + off[:, 0], ys + off[:, 1]


def _np_pairs(out, b, k, ae_threshold, num_dets):
    tl_s, tl_c, tl_cell, tl_x, tl_y = _np_topk(out["tl_heatmap"][b], out["tl_offset"][b], k)
    br_s, br_c, br_cell, br_x, br_y = _np_topk(out["br_heatmap"][b], out["br_offset"][b], k)
    tl_e = out["tl_embedding"][b].reshape(-1)[tl_cell]
    br_e = out["br_embedding"][b].reshape(-1)[br_cell]
    rows = []
    for i in range(k):
        for j in range(k):
            score = (tl_s[i] + br_s[j]) / np.float32(2)
            if (tl_c[i] != br_c[j] or abs(tl_e[i] - br_e[j]) > ae_threshold
                    or br_x[j] < tl_x[i] or br_y[j] < tl_y[i]):
                score = np.float32(-1)
            rows.append([tl_x[i], tl_y[i], br_x[j], br_y[j], score, tl_s[i], br_s[j], tl_c[i]])
    rows = np.array(rows, np.float32)
    order = np.argsort(-rows[:, 4], kind="stable")[:num_dets]
    return rows[order]


def _np_centers(out, b, k):
    s, c, _, x, y = _np_topk(out["ct_heatmap"][b], out["ct_offset"][b], k)
    return np.stack([x, y, c.astype(np.float32), s], axis=1)


def _np_soft_nms(dets, sigma, threshold):
    """Greedy Gaussian soft-NMS of one class, pixel-inclusive IoU; rows
    [x1, y1, x2, y2, score]; returns the kept rows in selection order."""
    boxes = [list(row) for row in dets]
    kept = []
    while boxes:
        best = max(range(len(boxes)), key=lambda i: boxes[i][4])
        sel = boxes.pop(best)
        kept.append(sel)
        remaining = []
        for box in boxes:
            iw = min(sel[2], box[2]) - max(sel[0], box[0]) + 1
            ih = min(sel[3], box[3]) - max(sel[1], box[1]) + 1
            if iw > 0 and ih > 0:
                union = ((sel[2] - sel[0] + 1) * (sel[3] - sel[1] + 1)
                         + (box[2] - box[0] + 1) * (box[3] - box[1] + 1) - iw * ih)
                ov = iw * ih / union
                box[4] = box[4] * np.exp(-(ov * ov) / sigma)
                if box[4] < threshold:
                    continue
            remaining.append(box)
        boxes = remaining
    return kept


def release_reference_decode(outputs_per_scale, geometry_per_scale, config, use_centers):
    """Detections of image 0 of a flip-test batch, the releases' way.

    Args:
        outputs_per_scale: list of dicts of numpy arrays `(2, H, W, C)`.
        geometry_per_scale: list of `ScaleGeometry` (numpy-convertible).
        config: `DecodeConfig`.

    Returns:
        float32 array `(n, 6)`: x1, y1, x2, y2, score, class; best first.
    """
    detections, centers = [], None
    for out, geo in zip(outputs_per_scale, geometry_per_scale):
        out_width = np.float32(out["tl_heatmap"].shape[2])
        dets = [_np_pairs(out, b, config.top_k, config.ae_threshold, config.num_dets)
                for b in range(2)]
        flipped = dets[1].copy()
        flipped[:, 0] = out_width - dets[1][:, 2]
        flipped[:, 2] = out_width - dets[1][:, 0]
        dets = np.concatenate([dets[0], flipped])
        ratios = np.asarray(geo.ratios)[0]
        borders = np.asarray(geo.borders)[0]
        sizes = np.asarray(geo.sizes)[0]
        dets[:, [0, 2]] = dets[:, [0, 2]] / ratios[1] - borders[2]
        dets[:, [1, 3]] = dets[:, [1, 3]] / ratios[0] - borders[0]
        tol = config.border_tolerance
        outside = ((dets[:, 0] <= -tol) | (dets[:, 2] >= sizes[1] + tol)
                   | (dets[:, 1] <= -tol) | (dets[:, 3] >= sizes[0] + tol))
        dets[:, [0, 2]] = np.clip(dets[:, [0, 2]], 0, sizes[1])
        dets[:, [1, 3]] = np.clip(dets[:, [1, 3]], 0, sizes[0])
        dets[outside, 4] = -1
        dets[:, 0:4] /= np.float32(geo.scale)
        detections.append(dets)
        if use_centers and geo.scale == 1:
            ct = [_np_centers(out, b, config.top_k) for b in range(2)]
            ct[1][:, 0] = out_width - ct[1][:, 0]
            ct = np.concatenate(ct)
            ct[:, 0] = np.clip(ct[:, 0] / ratios[1] - borders[2], 0, sizes[1])
            ct[:, 1] = np.clip(ct[:, 1] / ratios[0] - borders[0], 0, sizes[0])
            ct[:, 0:2] /= np.float32(geo.scale)
            centers = ct
    dets = np.concatenate(detections)
    dets = dets[dets[:, 4] > -1]
    if use_centers:
        for row in dets:
            area = (row[2] - row[0]) * (row[3] - row[1])
            if area <= config.region_area_threshold:
                lx, rx = (2 * row[0] + row[2]) / 3, (row[0] + 2 * row[2]) / 3
                ty, by = (2 * row[1] + row[3]) / 3, (row[1] + 2 * row[3]) / 3
            else:
                lx, rx = (3 * row[0] + 2 * row[2]) / 5, (2 * row[0] + 3 * row[2]) / 5
                ty, by = (3 * row[1] + 2 * row[3]) / 5, (2 * row[1] + 3 * row[3]) / 5
            pair_score, row[4] = row[4], -1
            for cx, cy, cc, cs in centers:
                if cc == row[7] and lx < cx < rx and ty < cy < by:
                    row[4] = (pair_score * 2 + cs) / 3
                    break
        dets = dets[dets[:, 4] > -1]
    kept = []
    for cls in np.unique(dets[:, 7]):
        rows = dets[dets[:, 7] == cls][:, 0:5]
        kept += [list(r) + [cls] for r in _np_soft_nms(rows, config.soft_nms_sigma,
                                                       config.score_threshold)]
    kept = np.array(kept, np.float32).reshape(-1, 6)
    kept = kept[np.argsort(-kept[:, 4], kind="stable")]
    return kept[: config.max_detections]
