"""Scale-space blobs: the classical tree-top finder, as a baseline for trained detectors.

Round objects of a known size range (crowns, kilns, ovens) stand out as blobs in *some*
map of the scene: a band, the mean brightness, or the normalised difference of two
bands (greener than blue, brighter than red), light or dark. :class:`ScaleSpaceBlobs`
tries each such *cue* and keeps the one whose blobs best match labelled objects (AP at
IoU 0.4). Blobs are the local maxima, in space and scale, of the
scale-normalised Laplacian of Gaussian at scales spanning the labels' 10th-90th
percentile sizes; each becomes a square box ``2 k sqrt(2) sigma`` wide (``k``, the
width factor, is chosen with the cue) and its score a probability of being an object,
calibrated on the training blobs (Platt).

Three choices are fitted (cue, size range, width factor), so this is what an analyst
gets in an afternoon with scipy. The cue and width are chosen by their AP on *held-out
objects* (:func:`held_out_ap`: the labels split in two folds, each scored with the
other's objects set aside), not on the labels they are scored on: with a few labels
(an analyst's first confirmed outlines at a new site) the cue that matched those few best
was often one that did not mark the rest (docs/new-site.md).
A detector that does not beat the blobs has learnt no more than "round things of this
colour and size". On NEON crowns they also show why one site's labels do not teach
another's: the cue that marks the crowns differs by site (``benchmarks/detect_cues.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import shapely
from sklearn.linear_model import LogisticRegression

from geoscreen.matching import MatchRule, candidate_pairs, match_in_score_order
from geoscreen.vision.blob_detector import FittedBlobs, Found, blobs_of
from geoscreen.vision.detect_data import SceneView, box_sides
from geoscreen.vision.detect_metrics import detection_metrics

WIDTHS = (1.0, 1.25, 1.5)  # k = 1: a disc's diameter; crowns' boxes run a little wider
FLAT_SLOPE = 1e-6  # a calibration slope never falls below this: the order is kept
# A blob overlapping an object of the other fold this much is set aside when a fold is
# scored: neither a find nor a false alarm (below the match's IoU, so that the near
# misses around a set-aside object do not count against the cue either).
SET_ASIDE_IOU = 0.3


def size_range(views: Sequence[SceneView]) -> tuple[float, float]:
    """LoG scales (sigma, px) spanning the 10th-90th percentile box sides of ``views``."""
    lo, hi = np.percentile(box_sides(views, "the blobs"), [10, 90])
    return max(float(lo), 1.0) / (2 * np.sqrt(2)), max(float(hi), 1.0) / (2 * np.sqrt(2))


def _average_precision(found: Sequence[Found], views: Sequence[SceneView], iou: float) -> float:
    truths = [v.boxes for v in views]
    ap = detection_metrics(found, truths, iou, np.inf)["average_precision"]
    return float(np.nan_to_num(ap))


def object_folds(views: Sequence[SceneView]) -> list[np.ndarray]:
    """Fold (0 or 1) of each view's objects: alternating in the order of their centres
    from west to east, so that each fold samples the whole view, and carried on from one
    view to the next, so that views of one object each are split too."""
    folds, seen = [], 0
    for view in views:
        boxes = np.asarray(view.boxes, np.float64).reshape(-1, 4)
        fold = np.zeros(len(boxes), dtype=int)
        fold[np.argsort(boxes[:, 0] + boxes[:, 2], kind="stable")] = (
            np.arange(seen, seen + len(boxes)) % 2
        )
        folds.append(fold)
        seen += len(boxes)
    return folds


def _set_aside(found: Found, objects: np.ndarray) -> Found:
    """``found`` without the blobs that overlap one of ``objects`` (IoU >= SET_ASIDE_IOU)."""
    boxes, scores = found
    rule = MatchRule("iou", min_iou=SET_ASIDE_IOU)
    pairs = candidate_pairs(shapely.box(*boxes.T), shapely.box(*objects.T), rule)
    drop = np.zeros(len(boxes), dtype=bool)
    drop[pairs.left] = True
    return boxes[~drop], scores[~drop]


def held_out_ap(found: Sequence[Found], views: Sequence[SceneView], folds: Sequence[np.ndarray],
                iou: float) -> float:  # fmt: skip
    """Mean over the two folds of the blobs' AP on that fold's objects, the blobs on the
    other fold's objects set aside. Nothing is fitted per fold (a cue and a width are
    only chosen), so this scores the choice on objects it did not see."""
    boxes = [np.asarray(v.boxes, np.float64).reshape(-1, 4) for v in views]
    aps = []
    for k in (0, 1):
        kept = [_set_aside(f, b[fold != k]) for f, b, fold in zip(found, boxes, folds, strict=True)]
        truths = [b[fold == k] for b, fold in zip(boxes, folds, strict=True)]
        aps.append(float(np.nan_to_num(detection_metrics(kept, truths, iou, np.inf)[
            "average_precision"])))  # fmt: skip
    return float(np.mean(aps))


@dataclass
class ScaleSpaceBlobs:
    """Blobs of the cue that best matches the training labels: fit on views, predict boxes.

    ``bands``: the profile's band names, for readable cue names (``nd(green,blue)``).
    After :meth:`fit`, ``cue`` and ``width`` say what was chosen (by :func:`held_out_ap`)
    and ``fit_ap`` how well it matched the training labels; ``cue_ap`` holds every cue's
    AP there, at the chosen width.
    """

    bands: Sequence[str] | None = None
    iou: float = 0.4
    cue: str = ""
    width: float = 0.0
    fit_ap: float = 0.0
    sigmas: tuple[float, float] = (0.0, 0.0)
    cue_ap: dict[str, float] = field(default_factory=dict)
    calibration: tuple[float, float] | None = None  # Platt: slope, intercept

    def _all(
        self, view: SceneView, widths: Sequence[float], only: str = ""
    ) -> dict[tuple[str, float], Found]:
        valid = view.valid.numpy().astype(bool)
        return blobs_of(view.image.numpy(), valid, self.bands, self.sigmas, widths, only)

    def fit(self, views: Sequence[SceneView]) -> ScaleSpaceBlobs:
        self.sigmas = size_range(views)
        per_view = [self._all(v, WIDTHS) for v in views]
        folds = object_folds(views)
        # One object makes no second fold: its own AP is all there is to go on.
        hold_out = all(any((f == k).any() for f in folds) for k in (0, 1))

        def choice_score(key: tuple[str, float]) -> float:
            found = [p[key] for p in per_view]
            if hold_out:
                return held_out_ap(found, views, folds, self.iou)
            return _average_precision(found, views, self.iou)

        choice = {key: choice_score(key) for key in per_view[0]}
        self.cue, self.width = max(choice, key=lambda key: choice[key])
        scores = {name: _average_precision([p[(name, k)] for p in per_view], views, self.iou)
                  for name, k in per_view[0] if k == self.width}  # fmt: skip
        self.cue_ap, self.fit_ap = scores, scores[self.cue]
        self.calibration = self._calibrate([p[(self.cue, self.width)] for p in per_view], views)
        return self

    def _calibrate(self, found: Sequence[Found], views: Sequence[SceneView]) -> tuple[float, float]:
        """Platt scaling of the log blob strength on whether each blob matches a label:
        (slope, intercept), the slope kept positive so the blobs' order is never reversed
        (a slope of ~0 says the strength does not predict a match: a flat probability)."""
        rule = MatchRule("iou", min_iou=self.iou)
        xs, ys = [], []
        for (boxes, scores), view in zip(found, views, strict=True):
            truth = shapely.box(*np.asarray(view.boxes, np.float64).reshape(-1, 4).T)
            ys.append(match_in_score_order(shapely.box(*boxes.T), scores, truth, rule) >= 0)
            xs.append(np.log(scores))
        x, y = np.concatenate(xs).reshape(-1, 1), np.concatenate(ys)
        if len(np.unique(y)) < 2:
            rate = float(np.clip(y.mean() if len(y) else 0.0, 1e-3, 1 - 1e-3))
            return FLAT_SLOPE, float(np.log(rate / (1 - rate)))
        platt = LogisticRegression().fit(x, y)
        return max(float(platt.coef_[0, 0]), FLAT_SLOPE), float(platt.intercept_[0])

    @property
    def fitted(self) -> FittedBlobs:
        """What :meth:`fit` chose, for finding blobs elsewhere (a screening model)."""
        if self.calibration is None:
            raise RuntimeError("fit the blobs first")
        bands = tuple(self.bands) if self.bands is not None else None
        return FittedBlobs(bands, self.cue, self.width, self.sigmas, self.calibration)

    def found(self, view: SceneView, cue: str = "") -> Found:
        """Boxes of ``cue``'s blobs (the chosen cue unless named) at the fitted size range
        and width, with their raw strengths (uncalibrated: only the chosen cue's are)."""
        return self.fitted.found(view.image.numpy(), view.valid.numpy().astype(bool), cue)

    def predict(self, view: SceneView) -> Found:
        """Boxes of the chosen cue's blobs and their calibrated scores."""
        return self.fitted.predict(view.image.numpy(), view.valid.numpy().astype(bool))
