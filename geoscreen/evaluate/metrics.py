"""Object-level evaluation of candidate sites against ground truth.

Matching: predicted sites and truth objects are matched **one-to-one** by the
Hungarian algorithm (:func:`geoscreen.matching.assign_one_to_one`): by IoU of
outlines (polygons or boxes) at a threshold, or by centre distance (needed when
either side is points). Both sides are first brought into one coordinate system:
a local UTM CRS (metres) for georeferenced data in any mix of CRSs, pixel
coordinates for images without georeference.

Metrics:

- precision, recall, F1 of the Hungarian matching of the predictions scoring at
  least ``score_threshold`` (default: all sites, which extraction and a detection
  screen's ``sites.parquet`` already thresholded; ``geoscreen evaluate`` applies the
  threshold that an ``objects.parquet`` records);
- average precision (AP) over the score ranking, PASCAL VOC style: predictions are
  matched greedily in descending score order, each to the most similar unmatched
  truth object; AP is the non-interpolated area under that precision-recall step
  curve (the scikit-learn definition, ties ranked together) with recall over *all*
  truth objects, so objects never matched cap it;
- precision@K: the share of true positives among the first K sites of the review
  queue (by score; K larger than the queue counts the whole queue);
- per-group counts (scene, region) and bootstrap confidence intervals (seeded;
  resampling matched pairs, false positives and misses as independent units,
  which ignores spatial correlation, so intervals are optimistic).

Tile-level PR/ROC for classifiers reuse :mod:`geoscreen.ranking`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from geoscreen.errors import ConfigError, InputError
from geoscreen.matching import MatchRule, match_hungarian, match_in_score_order
from geoscreen.ranking import at_threshold, average_precision, object_average_precision, roc_curve

TP, FP, FN = "TP", "FP", "FN"


@dataclass(frozen=True)
class Criterion:
    """How a prediction matches a truth object: IoU >= ``iou``, or centres within ``distance``
    (metres, or pixels for images without georeference). ``distance`` wins when set."""

    iou: float = 0.4
    distance: float | None = None

    def rule(self) -> MatchRule:
        if self.distance is not None:
            return MatchRule("distance", max_distance=self.distance)
        return MatchRule("iou", min_iou=self.iou)

    def describe(self, units: str) -> str:
        if self.distance is not None:
            return f"centre distance <= {self.distance:g} {units}"
        return f"IoU >= {self.iou:g}"


def align(
    pred: gpd.GeoDataFrame, truth: gpd.GeoDataFrame
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame, str]:
    """Both frames in one coordinate system; returns them and the distance unit (m or px)."""
    if pred.crs is None and truth.crs is None:
        return pred, truth, "px"
    if pred.crs is None or truth.crs is None:
        which = "predictions" if pred.crs is None else "truth"
        raise InputError(
            f"the {which} are in pixel coordinates but the other side is georeferenced",
            fix="Give the image the pixel coordinates refer to (--image), or georeferenced files.",
        )
    both = pd.concat([pred.geometry.to_crs(4326), truth.geometry.to_crs(4326)])
    both = both[~both.is_empty & both.notna()]
    if len(both) == 0:
        return pred, truth, "m"
    utm = gpd.GeoSeries(both.values, crs=4326).estimate_utm_crs()
    return pred.to_crs(utm), truth.to_crs(utm), "m"


def precision_at_k(scores: np.ndarray, is_tp: np.ndarray, ks: tuple[int, ...]) -> dict[int, float]:
    """Share of TPs among the top K by score (stable order), for each K."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    hits = np.asarray(is_tp, dtype=bool)[order]
    out = {}
    for k in ks:
        shown = hits[: int(k)]
        out[int(k)] = float(shown.mean()) if shown.size else float("nan")
    return out


def pr_curve(scores: np.ndarray, hits: np.ndarray, n_truth: int) -> dict[str, np.ndarray]:
    """Precision and recall at each distinct score (descending), recall over ``n_truth``."""
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="stable")
    s, h = s[order], np.asarray(hits, dtype=bool)[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1] if s.size else np.zeros(0, dtype=int)
    tp = np.cumsum(h)[last]
    precision = tp / (last + 1)
    recall = tp / n_truth if n_truth else np.full(tp.size, np.nan)
    return {"precision": precision, "recall": recall, "threshold": s[last]}


def tile_metrics(scores: np.ndarray, truth: np.ndarray, threshold: float) -> dict[str, Any]:
    """Tile-level metrics of a classifier: AP, ROC AUC, counts and P/R/F1 at ``threshold``."""
    truth = np.asarray(truth, dtype=bool)
    roc = roc_curve(scores, truth)
    return {
        "tiles": int(truth.size),
        "positive_tiles": int(truth.sum()),
        "average_precision": average_precision(scores, truth),
        "roc_auc": float(roc["auc"]),
        **at_threshold(scores, truth, threshold).as_dict(),
    }


def _prf(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, ...]:
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1e-12), 0.0)
        r = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1e-12), np.nan)
        f = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0.0)
    return p, r, f


def bootstrap_intervals(
    outcome: np.ndarray,
    scores: np.ndarray,
    ranked_hits: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, list[float]]:
    """Percentile intervals of precision, recall, F1 (from ``outcome``) and AP.

    ``outcome`` holds one unit per matched pair, false positive and miss (TP/FP/FN);
    ``scores``/``ranked_hits`` are the predictions and their greedy-matching hits,
    resampled with the same draws (AP units: each prediction, plus each missed
    truth object as an FN unit).
    """
    rng = np.random.default_rng(seed)
    units = np.asarray(outcome)
    n = units.size
    if n == 0 or n_boot <= 0:
        return {}
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    # Resampling n units only changes how many of each kind are drawn: a multinomial.
    shares = [float((units == kind).sum()) / n for kind in (TP, FP, FN)]
    tp, fp, fn = rng.multinomial(n, shares, size=n_boot).T
    p, r, f = _prf(tp, fp, fn)
    out = {
        name: [float(np.nanpercentile(v, lo)), float(np.nanpercentile(v, hi))]
        for name, v in (("precision", p), ("recall", r), ("f1", f))
    }
    hits = np.asarray(ranked_hits, dtype=bool)
    misses = max(int((units != FP).sum()) - int(hits.sum()), 0)  # truth the ranking never found
    m = hits.size + misses
    if m == 0:
        return out
    aps = np.empty(n_boot)
    uniform = np.full(m, 1.0 / m)
    for b in range(n_boot):
        w = rng.multinomial(m, uniform)
        wp = w[: hits.size]
        n_truth = int((wp * hits).sum() + w[hits.size :].sum())
        aps[b] = object_average_precision(np.repeat(scores, wp), np.repeat(hits, wp), n_truth)
    out["average_precision"] = [float(np.nanpercentile(aps, lo)), float(np.nanpercentile(aps, hi))]
    return out


@dataclass
class Evaluation:
    """Outcome of :func:`evaluate_sites`: metrics, per-group counts and the labelled objects."""

    criterion: str
    units: str
    metrics: dict[str, Any]
    groups: dict[str, dict[str, Any]]
    curve: dict[str, list[float]]
    predicted: gpd.GeoDataFrame
    truth: gpd.GeoDataFrame
    intervals: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (metrics.json)."""
        return {
            "criterion": self.criterion,
            "units": self.units,
            **self.metrics,
            "confidence_intervals": self.intervals,
            "groups": self.groups,
            "pr_curve": self.curve,
        }


def evaluate_sites(
    predicted: gpd.GeoDataFrame,
    truth: gpd.GeoDataFrame,
    criterion: Criterion | None = None,
    *,
    score_column: str = "score_max",
    score_threshold: float | None = None,
    group_column: str | None = None,
    regions: gpd.GeoDataFrame | None = None,
    region_column: str = "name",
    ks: tuple[int, ...] = (10, 25, 50, 100),
    n_boot: int = 1000,
    seed: int = 0,
) -> Evaluation:
    """Match ``predicted`` sites to ``truth`` objects and compute the metrics (module doc).

    Groups: ``regions`` polygons (named by ``region_column``) take the objects whose
    representative point falls inside; else ``group_column`` (default ``scene_id``
    when both frames have it); else one group ``all``.
    """
    criterion = criterion or Criterion()
    if score_column not in predicted.columns:
        raise InputError(f"the predictions have no {score_column!r} column",
                         fix="Give a site file (score_max) or name the score column.")  # fmt: skip
    pred_in, truth_in, units = align(_clean(predicted), _clean(truth))
    rule = criterion.rule()
    pg, tg = pred_in.geometry.values, truth_in.geometry.values
    scores = pred_in[score_column].to_numpy(np.float64)
    shown = scores >= score_threshold if score_threshold is not None else np.ones(len(pg), bool)
    pairs = match_hungarian(pg[shown], tg, rule)
    shown_idx = np.flatnonzero(shown)
    pred_match = np.full(len(pg), -1, dtype=np.int64)
    pred_match[shown_idx[pairs.left]] = pairs.right
    similarity = np.full(len(pg), np.nan)
    similarity[shown_idx[pairs.left]] = pairs.similarity
    truth_match = np.full(len(tg), -1, dtype=np.int64)
    truth_match[pairs.right] = shown_idx[pairs.left]
    ranked = match_in_score_order(pg, scores, tg, rule) >= 0

    pred_out = np.where(pred_match >= 0, TP, np.where(shown, FP, "below threshold"))
    truth_out = np.where(truth_match >= 0, TP, FN)
    tp, fp, fn = (
        int(pairs.left.size),
        int(shown.sum() - pairs.left.size),
        int((truth_match < 0).sum()),
    )
    p, r, f = (float(v) for v in _prf(np.array(tp), np.array(fp), np.array(fn)))
    metrics: dict[str, Any] = {
        "predicted": len(pg),
        "truth": len(tg),
        "score_threshold": score_threshold,
        "tp": tp, "fp": fp, "fn": fn,
        "precision": p, "recall": r, "f1": f,
        "average_precision": object_average_precision(scores, ranked, len(tg)),
        "average_precision_method": "VOC-style greedy matching in score order; "
        "non-interpolated (scikit-learn step) AP, recall over all truth objects",
        "precision_at_k": {str(k): v for k, v in precision_at_k(scores, ranked, ks).items()},
        "matching": "one-to-one Hungarian assignment (most matches, then most similar)",
        "mean_similarity_of_matches": float(np.mean(pairs.similarity)) if tp else float("nan"),
    }  # fmt: skip
    units_outcome = np.r_[np.full(tp, TP), np.full(fp, FP), np.full(fn, FN)]
    intervals = bootstrap_intervals(units_outcome, scores, ranked, n_boot, seed)
    curve = pr_curve(scores, ranked, len(tg))
    pred_groups, truth_groups = _groups(pred_in, truth_in, group_column, regions, region_column)
    groups = _group_counts(pred_groups, truth_groups, pred_out, truth_out, pred_match)
    pred_frame = _to_output(predicted, pred_in, {
        "score": scores, "outcome": pred_out, "matched_truth": pred_match,
        "similarity": similarity, "ranked_hit": ranked, "group": pred_groups,
    })  # fmt: skip
    truth_frame = _to_output(truth, truth_in, {
        "outcome": truth_out, "matched_prediction": truth_match, "group": truth_groups,
    })  # fmt: skip
    return Evaluation(
        criterion=criterion.describe(units),
        units=units,
        metrics=metrics,
        groups=groups,
        curve={k: [float(x) for x in v] for k, v in curve.items()},
        predicted=pred_frame,
        truth=truth_frame,
        intervals=intervals,
    )


def _clean(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    bad = frame.geometry.isna() | frame.geometry.is_empty
    if bad.any():
        raise InputError(f"{int(bad.sum())} rows have no geometry",
                         fix="Remove rows without geometry.")  # fmt: skip
    return frame.reset_index(drop=True)


def _groups(
    pred: gpd.GeoDataFrame,
    truth: gpd.GeoDataFrame,
    column: str | None,
    regions: gpd.GeoDataFrame | None,
    region_column: str,
) -> tuple[np.ndarray, np.ndarray]:
    if regions is not None:
        if region_column not in regions.columns:
            raise ConfigError(f"the regions have no {region_column!r} column",
                              fix="Name the column that holds region names.")  # fmt: skip
        return _in_regions(pred, regions, region_column), _in_regions(truth, regions, region_column)
    if column is None and "scene_id" in pred.columns and "scene_id" in truth.columns:
        column = "scene_id"
    if column is None:
        return np.full(len(pred), "all", dtype=object), np.full(len(truth), "all", dtype=object)
    for name, frame in (("predictions", pred), ("truth", truth)):
        if column not in frame.columns:
            raise ConfigError(
                f"the {name} have no {column!r} column",
                fix="Group by a column both files have, or give regions.",
            )
    return _group_names(pred[column]), _group_names(truth[column])


def _group_names(values: pd.Series) -> np.ndarray:
    """Group names as text; a missing value is the group ``unknown`` (pandas' ``astype(str)``
    keeps it missing, and missing and text names cannot be sorted together)."""
    names = [str(v) for v in values.astype(object).where(values.notna(), "unknown")]
    return np.asarray(names, dtype=object)


def _in_regions(frame: gpd.GeoDataFrame, regions: gpd.GeoDataFrame, column: str) -> np.ndarray:
    out = np.full(len(frame), "outside regions", dtype=object)
    if len(frame) == 0:
        return out
    areas = regions.to_crs(frame.crs) if regions.crs is not None and frame.crs else regions
    points = shapely.point_on_surface(frame.geometry.values)
    i, j = shapely.STRtree(areas.geometry.values).query(points, predicate="within")
    first = pd.Series(j).groupby(i).min()
    out[first.index.to_numpy()] = areas[column].astype(str).to_numpy(object)[first.to_numpy()]
    return out


def _group_counts(
    pred_groups: np.ndarray,
    truth_groups: np.ndarray,
    pred_out: np.ndarray,
    truth_out: np.ndarray,
    pred_match: np.ndarray,
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for g in sorted(set(pred_groups.tolist()) | set(truth_groups.tolist())):
        mine_p, mine_t = pred_groups == g, truth_groups == g
        tp_p = int((mine_p & (pred_out == TP)).sum())
        fp = int((mine_p & (pred_out == FP)).sum())
        tp_t = int((mine_t & (truth_out == TP)).sum())
        fn = int((mine_t & (truth_out == FN)).sum())
        p = tp_p / (tp_p + fp) if tp_p + fp else float("nan")
        r = tp_t / (tp_t + fn) if tp_t + fn else float("nan")
        out[str(g)] = {"predicted": int(mine_p.sum()), "truth": int(mine_t.sum()),
                       "tp": tp_p, "fp": fp, "fn": fn, "precision": p, "recall": r}  # fmt: skip
    return out


def _to_output(
    original: gpd.GeoDataFrame, aligned: gpd.GeoDataFrame, columns: dict[str, np.ndarray]
) -> gpd.GeoDataFrame:
    """Result columns on the input geometry, in EPSG:4326 (or pixel space)."""
    frame = gpd.GeoDataFrame(columns, geometry=aligned.geometry.values, crs=aligned.crs)
    if "site_id" in original.columns:
        frame.insert(0, "site_id", original["site_id"].to_numpy())
    return frame.to_crs(4326) if frame.crs is not None else frame
