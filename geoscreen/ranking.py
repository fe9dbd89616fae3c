"""Ranking metrics for scored items (tiles, chips, objects): AP, ROC, precision/recall.

A neutral module (it imports no stage): training selects and calibrates models with
these, :mod:`geoscreen.evaluate` reports them. They work on any list of
(score, is_positive) pairs; object-level matching to ground truth is
:mod:`geoscreen.matching`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class ThresholdMetrics:
    """Counts and rates at one decision threshold."""

    threshold: float
    tp: int
    fp: int
    fn: int
    tn: int
    precision: float
    recall: float
    f1: float

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """Area under the precision-recall step curve (the scikit-learn definition).

    Ties in score are ranked together. NaN when there are no positives.
    """
    scores = np.asarray(scores, dtype=np.float64)
    truth = np.asarray(positives, dtype=bool)
    n_pos = int(truth.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    s, t = scores[order], truth[order]
    # One precision/recall point per distinct score (ties enter together).
    last_of_tie = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tp = np.cumsum(t)[last_of_tie]
    fp = (last_of_tie + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / n_pos
    recall_steps = np.diff(np.r_[0.0, recall])
    return float(np.sum(recall_steps * precision))


def average_precision_interval(
    scores: np.ndarray,
    truth: np.ndarray,
    seed: int,
    rounds: int = 1000,
    level: float = 0.95,
    groups: np.ndarray | None = None,
) -> tuple[float, float]:
    """Bootstrap interval of AP, resampling whole ``groups`` (e.g. spatial blocks: items
    in a block are not independent), or items when none are given (then optimistic for
    items near each other). Resamples without a positive are skipped; NaN if all are."""
    scores, truth = np.asarray(scores, dtype=np.float64), np.asarray(truth, dtype=bool)
    keys = np.arange(truth.size) if groups is None else np.asarray(groups)
    ids, inverse = np.unique(keys, return_inverse=True)
    members = [np.flatnonzero(inverse == i) for i in range(ids.size)]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(rounds):
        rows = np.concatenate([members[i] for i in rng.integers(0, ids.size, ids.size)])
        if truth[rows].any():
            values.append(average_precision(scores[rows], truth[rows]))
    if not values:
        return float("nan"), float("nan")
    tail = round((1 - level) / 2, 12)  # 0.025 exactly for 95%
    low, high = np.quantile(values, [tail, 1 - tail])
    return float(low), float(high)


def at_threshold(scores: np.ndarray, positives: np.ndarray, threshold: float) -> ThresholdMetrics:
    """Confusion counts, precision, recall and F1 for ``score >= threshold``."""
    predicted = np.asarray(scores) >= threshold
    truth = np.asarray(positives, dtype=bool)
    tp = int(np.sum(predicted & truth))
    fp = int(np.sum(predicted & ~truth))
    fn = int(np.sum(~predicted & truth))
    tn = int(np.sum(~predicted & ~truth))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return ThresholdMetrics(threshold, tp, fp, fn, tn, precision, recall, f1)


def roc_curve(scores: np.ndarray, truth: np.ndarray) -> dict[str, np.ndarray]:
    """False and true positive rates at each distinct score, from (0, 0); with the AUC."""
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(truth, dtype=bool)
    order = np.argsort(-s, kind="stable")
    s, t = s[order], t[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1] if s.size else np.zeros(0, dtype=int)
    tp, fp = np.cumsum(t)[last], np.cumsum(~t)[last]
    tpr = np.r_[0.0, tp / max(int(t.sum()), 1)]
    fpr = np.r_[0.0, fp / max(int((~t).sum()), 1)]
    auc = float(np.trapezoid(tpr, fpr)) if t.any() and (~t).any() else float("nan")
    return {"fpr": fpr, "tpr": tpr, "threshold": np.r_[np.inf, s[last]], "auc": np.asarray(auc)}


def roc_auc(scores: np.ndarray, truth: np.ndarray) -> float:
    """Area under the ROC curve (ties count half); NaN without both classes."""
    return float(roc_curve(scores, truth)["auc"])


def object_average_precision(scores: np.ndarray, is_tp: np.ndarray, n_truth: int) -> float:
    """AP with recall over ``n_truth`` objects (NaN without truth, 0 without any TP)."""
    is_tp = np.asarray(is_tp, dtype=bool)
    if n_truth == 0:
        return float("nan")
    if not is_tp.any():
        return 0.0
    # ranking.average_precision normalises recall by the TP count; rescale to n_truth.
    return average_precision(scores, is_tp) * float(is_tp.sum()) / n_truth
