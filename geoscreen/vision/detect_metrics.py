"""Object-level scores of detections against labelled boxes, shared by training, the
baselines and the benchmarks: AP in one ranking over several images, and P/R/F1 of
one-to-one matches at a threshold."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import shapely

from geoscreen.matching import MatchRule, match_hungarian, match_in_score_order
from geoscreen.ranking import object_average_precision

THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))
RECALL_TARGETS = (0.5, 0.8, 0.9)  # the card's thresholds for a screening that must find most
RECALL_KEY = "for_recall_{target:g}_{what}@{iou:g}"  # the card's metric names for them


def detection_metrics(
    predictions: Sequence[tuple[np.ndarray, np.ndarray]],
    truths: Sequence[np.ndarray],
    iou: float,
    threshold: float,
) -> dict[str, float]:
    """Object-level metrics over several images: AP at ``iou`` and P/R/F1 at ``threshold``.

    ``predictions``: per image (boxes (N, 4), scores (N,)); ``truths``: boxes (M, 4).
    AP pools every image's detections in one ranking, each matched greedily in score
    order within its image (recall over all objects); P/R/F1 count one-to-one
    (Hungarian) matches of the detections scoring at least ``threshold``.
    """
    rule = MatchRule("iou", min_iou=iou)
    scores, hits = [], []
    tp = fp = n_truth = 0
    for (boxes, score), truth in zip(predictions, truths, strict=True):
        pred_geoms = shapely.box(*np.asarray(boxes, dtype=np.float64).reshape(-1, 4).T)
        truth_geoms = shapely.box(*np.asarray(truth, dtype=np.float64).reshape(-1, 4).T)
        score = np.asarray(score, dtype=np.float64)
        scores.append(score)
        hits.append(match_in_score_order(pred_geoms, score, truth_geoms, rule) >= 0)
        shown = score >= threshold
        matched = match_hungarian(pred_geoms[shown], truth_geoms, rule).left.size
        tp, fp, n_truth = tp + matched, fp + int(shown.sum()) - matched, n_truth + len(truth)
    all_scores = np.concatenate(scores) if scores else np.zeros(0)
    all_hits = np.concatenate(hits) if hits else np.zeros(0, dtype=bool)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / n_truth if n_truth else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {
        "average_precision": object_average_precision(all_scores, all_hits, n_truth),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "tp": float(tp),
        "fp": float(fp),
        "fn": float(n_truth - tp),
        "objects": float(n_truth),
        "detections": float(len(all_scores)),
    }


def threshold_sweep(
    predictions: Sequence[tuple[np.ndarray, np.ndarray]], truths: Sequence[np.ndarray], iou: float
) -> dict[float, dict[str, float]]:
    """:func:`detection_metrics` at each of :data:`THRESHOLDS`: what both the F1-optimal
    threshold and the recall thresholds are read from (compute it once for both)."""
    return {t: detection_metrics(predictions, truths, iou, t) for t in THRESHOLDS}


def best_threshold(
    predictions: Sequence[tuple[np.ndarray, np.ndarray]],
    truths: Sequence[np.ndarray],
    iou: float,
    sweep: dict[float, dict[str, float]] | None = None,
) -> tuple[float, float]:
    """(threshold, F1) with the best F1 over :data:`THRESHOLDS` (ties: the lower threshold);
    ``sweep``: :func:`threshold_sweep` of the same inputs, when already computed."""
    rows = sweep if sweep is not None else threshold_sweep(predictions, truths, iou)
    best = (THRESHOLDS[0], -1.0)
    for t in THRESHOLDS:
        f1 = rows[t]["f1"]
        if f1 > best[1] + 1e-9:
            best = (t, f1)
    return best[0], max(best[1], 0.0)


def recall_thresholds(
    predictions: Sequence[tuple[np.ndarray, np.ndarray]],
    truths: Sequence[np.ndarray],
    iou: float,
    targets: Sequence[float] = RECALL_TARGETS,
    sweep: dict[float, dict[str, float]] | None = None,
) -> dict[float, dict[str, float]]:
    """For each target recall, the highest of :data:`THRESHOLDS` that reaches it on these
    images, with its precision, recall and F1; a target no threshold reaches is left out.
    ``sweep``: :func:`threshold_sweep` of the same inputs, when already computed.

    The F1-optimal threshold weighs a miss and a false alarm alike; a screening whose
    candidates people review may rather find most objects and show more boxes."""
    rows = sweep if sweep is not None else threshold_sweep(predictions, truths, iou)
    out: dict[float, dict[str, float]] = {}
    for target in targets:
        reached = [t for t in THRESHOLDS if rows[t]["recall"] >= target]
        if reached:
            m = rows[max(reached)]
            out[target] = {"threshold": max(reached), "precision": m["precision"],
                           "recall": m["recall"], "f1": m["f1"]}  # fmt: skip
    return out


def held_out_metrics(
    predictions: Sequence[tuple[np.ndarray, np.ndarray]],
    truths: Sequence[np.ndarray],
    iou: float,
    threshold: float,
    sweep: dict[float, dict[str, float]] | None = None,
) -> dict[str, float]:
    """The card's metrics of a detector on its held-out strips: ``val_*`` at IoU 0.5 and
    0.4 at ``threshold``, and the :func:`recall_thresholds` at ``iou``
    (:data:`RECALL_KEY`)."""
    metrics: dict[str, float] = {}
    for at in (0.5, 0.4):
        for key, value in detection_metrics(predictions, truths, at, threshold).items():
            metrics[f"val_{key}@{at:g}"] = value
    for target, row in recall_thresholds(predictions, truths, iou, sweep=sweep).items():
        for what, value in row.items():
            metrics[RECALL_KEY.format(target=target, what=what, iou=iou)] = value
    return metrics
