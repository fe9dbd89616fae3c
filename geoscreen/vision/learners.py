"""Candidate learners on tile features, compared on the same blocked folds.

A learner is a feature set and an estimator:

- ``pixel``: the channel values at the labelled place (the centre pixel of the chip);
  with a logistic regression this is the **per-pixel baseline** every model must beat.
- ``spectral``: spectral-context statistics (:mod:`geoscreen.vision.tilefeatures`).
- ``deep``: the backbone's pooled features (ImageNet-pretrained), fitted on all 8
  flips/rotations of each chip and scoring a tile by the mean of its features over the
  same 8 (:data:`DEEP_VIEWS`; tested and screened alike).
- ``combined``: deep (one view; all 8 in training on a GPU) and spectral side by side.

Estimators: ``lr`` (class-balanced, L2-regularised logistic regression on
standardised features) and ``gbm`` (scikit-learn's histogram gradient boosting).
Both take per-chip weights (hard negatives, analysts' rejections, weigh more than
random background): the ``lr`` as sample weights, normalised so each class keeps half of
the total weight; the ``gbm`` by repeating a chip's row round(weight) times, scikit-learn's
own frequency meaning of a weight (its weighted binning is 5.7x slower, see
:data:`GBM_PARAMS`).
:func:`cross_validate` scores each candidate out of fold; :func:`summarise` gives AP
with a block-bootstrap interval and ROC AUC.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from geoscreen.ranking import average_precision, average_precision_interval, roc_auc
from geoscreen.vision.folds import BlockedFolds
from geoscreen.vision.scorer import KIND, DeepFeatures, FeatureScorer
from geoscreen.vision.tabular import LinearHead, PlattCalibrator, TreeEnsembleHead
from geoscreen.vision.tilefeatures import SpectralContext

FeatureSet = Literal["pixel", "spectral", "deep", "combined"]
Estimator = Literal["lr", "gbm"]

# Inverse L2 strength per feature set (scikit-learn's C, on standardised features):
# strong for the 1,000+ deep features, mild for the few dozen spectral ones.
LR_C: dict[str, float] = {"pixel": 1.0, "spectral": 0.5, "deep": 0.01, "combined": 0.01}
# 100 rounds at 0.1 over 63 bins: as good as 200 at 0.05 over 255 on the real cases and
# 3x faster (2,200 chips x 494 features: 26 s against 75 s on a busy core).
GBM_PARAMS: dict[str, Any] = {
    "max_iter": 100,
    "learning_rate": 0.1,
    "max_bins": 63,
    "max_leaf_nodes": 15,
    "min_samples_leaf": 10,
    "l2_regularization": 1.0,
    # No class weights: with them scikit-learn 1.9 bins every feature by weighted
    # percentiles, 5.7x slower (2,700 x 500: 77 s against 13 s) and most of training's
    # time; AP ranks, and the Platt calibration on out-of-fold scores sets the rates.
    "early_stopping": False,
    # Each split draws from a fifth of the features. Free to pick any feature at every
    # node, the trees found one band that set the training ponds apart from the forest, and
    # a held-out lake fell on the forest's side: every chip of that fold got one score
    # (Sentinel-2 west points: out-of-fold ROC AUC 0.456 -> 1.000; the NEON cases moved
    # within their intervals; docs/tile-classifier.md, session 22).
    "max_features": 0.2,
}
BOOTSTRAP_ROUNDS = 300
# Flips/rotations ``deep_lr`` fits on and averages a tile's features over. Measured with
# ``benchmarks/quality_ablation.py`` on the four NEON cases: held-out AP 0.611/0.920/
# 0.866/0.590 with one view, 0.679/0.892/0.864/0.639 with all 8, and out-of-fold AP up
# in every case (selection then prefers it where it transfers: three scenes -> YELL and
# -> YELL2). Four rotations gave 0.561/0.880/0.846/0.655: use the whole group.
DEEP_VIEWS = 8


@dataclass(frozen=True)
class Candidate:
    """One learner: which features, which estimator, and whether it is a baseline."""

    features: FeatureSet
    estimator: Estimator
    baseline: bool = False

    @property
    def name(self) -> str:
        return f"{self.features}_{self.estimator}"


PIXEL_BASELINE = Candidate("pixel", "lr", baseline=True)
CANDIDATES: dict[str, Candidate] = {
    c.name: c
    for c in (
        PIXEL_BASELINE,
        Candidate("spectral", "lr"),
        Candidate("spectral", "gbm"),
        Candidate("deep", "lr"),
        Candidate("combined", "lr"),
    )
}


@dataclass
class Features:
    """Feature matrices of every chip; ``deep_views`` (V, N, F) under flips/rotations.

    ``deep_views[k]`` are the backbone features of ``dihedral(chip, k)``. ``deep`` fits
    on all V views and tests on their mean (what its scorer computes); ``combined``
    fits on the first ``combined_views`` (None: all) and tests on view 0, the chip as it
    is. ``spectral_views`` holds the spectral features of colour-jittered copies of every
    chip (view 0 is the chip itself): the spectral learners fit on all of them, so that
    they learn what does not change with illumination and exposure. Tests always read
    view 0.
    """

    spectral: np.ndarray
    pixel: np.ndarray
    deep_views: np.ndarray | None = None
    spectral_views: np.ndarray | None = None
    combined_views: int | None = None

    def matrix(self, which: FeatureSet, view: int | None = None) -> np.ndarray:
        """What a learner on ``which`` scores: ``deep`` the mean over views, ``combined``
        view 0 (``view``: one view of either instead)."""
        if which == "pixel":
            return self.pixel
        if which == "spectral":
            return self.spectral
        if self.deep_views is None:
            raise ValueError(f"feature set {which!r} needs deep features")
        if which == "deep":
            return self.deep_views.mean(axis=0) if view is None else self.deep_views[view]
        return np.concatenate([self.deep_views[view or 0], self.spectral], axis=1)

    def _deep_fit_views(self, candidate: Candidate) -> int:
        """How many deep views ``candidate`` fits on (0: not a deep-view learner)."""
        if candidate.features not in ("deep", "combined") or candidate.estimator != "lr":
            return 0
        assert self.deep_views is not None
        n = self.deep_views.shape[0]
        return n if candidate.features == "deep" else min(n, self.combined_views or n)

    def training_rows(
        self, candidate: Candidate, rows: np.ndarray, y: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Features and labels to fit on: every view of each chip for deep sets."""
        views = self._deep_fit_views(candidate)
        if views:
            x = np.concatenate([self.matrix(candidate.features, v)[rows] for v in range(views)])
            return x, np.tile(y[rows], views)
        if candidate.features == "spectral" and self.spectral_views is not None:
            n = self.spectral_views.shape[0]
            return np.concatenate([v[rows] for v in self.spectral_views]), np.tile(y[rows], n)
        return self.matrix(candidate.features)[rows], y[rows]

    def training_weights(
        self, candidate: Candidate, rows: np.ndarray, weight: np.ndarray | None
    ) -> np.ndarray | None:
        """The chip weights of ``rows``, repeated as :meth:`training_rows` repeats views."""
        if weight is None:
            return None
        views = self._deep_fit_views(candidate)
        if views:
            return np.tile(weight[rows], views)
        if candidate.features == "spectral" and self.spectral_views is not None:
            return np.tile(weight[rows], self.spectral_views.shape[0])
        return weight[rows]


@dataclass
class Fitted:
    """A fitted estimator and the standardisation applied before it (``lr`` only)."""

    candidate: Candidate
    estimator: Any
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None

    def raw(self, x: np.ndarray) -> np.ndarray:
        """Raw scores (logits): what the calibration maps to probabilities."""
        from threadpoolctl import threadpool_limits

        if self.mean is not None and self.scale is not None:
            x = (x - self.mean) / self.scale
        with threadpool_limits(limits=1):
            return np.asarray(self.estimator.decision_function(x), dtype=np.float64)


def fit(
    candidate: Candidate,
    x: np.ndarray,
    y: np.ndarray,
    seed: int,
    weight: np.ndarray | None = None,
) -> Fitted:
    """Fit ``candidate``'s estimator on ``x``, ``y`` (seeded, deterministic), each row
    weighing ``weight`` (none: all alike; see the module docstring for how).

    One OpenMP/BLAS thread: on a few hundred chips the threads' start-up and spinning
    cost more than they give, and on a busy 2-core machine gradient boosting ran 17x
    slower with its default threads (1.4 s against 23 s for 1,000 x 60).
    """
    from threadpoolctl import threadpool_limits

    if weight is not None:
        weight = np.asarray(weight, dtype=np.float64)
        if weight.shape != (len(y),) or not (np.isfinite(weight).all() and (weight > 0).all()):
            raise ValueError("weights must be one positive number per row")
        if np.all(weight == 1.0):
            weight = None
    with threadpool_limits(limits=1):
        return _fit(candidate, x, y, seed, weight)


def _fit(
    candidate: Candidate, x: np.ndarray, y: np.ndarray, seed: int, weight: np.ndarray | None
) -> Fitted:
    if candidate.estimator == "gbm":
        from sklearn.ensemble import HistGradientBoostingClassifier

        if weight is not None:
            copies = np.maximum(1, np.rint(weight)).astype(np.int64)
            x, y = np.repeat(x, copies, axis=0), np.repeat(y, copies)
        model = HistGradientBoostingClassifier(random_state=seed, **GBM_PARAMS)
        return Fitted(candidate, model.fit(x, y))
    from sklearn.linear_model import LogisticRegression

    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    if weight is None:
        model = LogisticRegression(
            C=LR_C[candidate.features], class_weight="balanced", max_iter=3000
        )
        return Fitted(candidate, model.fit((x - mean) / scale, y), mean, scale)
    model = LogisticRegression(C=LR_C[candidate.features], max_iter=3000)
    balanced = balanced_weights(y, weight)
    return Fitted(candidate, model.fit((x - mean) / scale, y, sample_weight=balanced), mean, scale)


def balanced_weights(y: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``weight`` rescaled so each class holds half of the total (``len(y)``), as
    ``class_weight="balanced"`` does for unit weights: a heavier hard negative takes
    weight from the other negatives, not from the positives, and the regularisation
    (which the total weight scales against) stays as strong."""
    out = np.asarray(weight, dtype=np.float64).copy()
    labels = np.unique(y)
    for label in labels:
        member = y == label
        out[member] *= len(y) / (labels.size * out[member].sum())
    return out


@dataclass
class CVResult:
    """Out-of-fold raw scores of one candidate and how long its folds took."""

    candidate: Candidate
    oof: np.ndarray
    seconds: float


def cross_validate(
    candidates: Sequence[Candidate],
    features: Features,
    y: np.ndarray,
    folds: BlockedFolds,
    seed: int,
    weight: np.ndarray | None = None,
) -> dict[str, CVResult]:
    """Out-of-fold raw scores of every candidate on the same folds; each fold's model
    fits with the chips' ``weight`` (the scores themselves are not weighted)."""
    results: dict[str, CVResult] = {}
    for candidate in candidates:
        started = time.perf_counter()
        oof = np.full(y.size, np.nan)
        for train, test in folds.splits:
            x_fit, y_fit = features.training_rows(candidate, train, y)
            w_fit = features.training_weights(candidate, train, weight)
            fitted = fit(candidate, x_fit, y_fit, seed, w_fit)
            oof[test] = fitted.raw(features.matrix(candidate.features)[test])
        results[candidate.name] = CVResult(candidate, oof, time.perf_counter() - started)
    return results


def block_bootstrap_ap(
    scores: np.ndarray, truth: np.ndarray, blocks: np.ndarray, seed: int
) -> tuple[float, float]:
    """95% interval of AP, resampling whole blocks (chips in a block are not independent)."""
    truth = np.asarray(truth, dtype=bool)
    return average_precision_interval(scores, truth, seed, BOOTSTRAP_ROUNDS, groups=blocks)


def summarise(
    scores: np.ndarray, truth: np.ndarray, blocks: np.ndarray, seed: int
) -> dict[str, float]:
    """AP, its block-bootstrap 95% interval, ROC AUC and the positive rate."""
    truth = np.asarray(truth, dtype=bool)
    low, high = block_bootstrap_ap(scores, truth, blocks, seed)
    return {
        "ap": average_precision(scores, truth),
        "ap_low": low,
        "ap_high": high,
        "roc_auc": roc_auc(scores, truth),
        "positive_rate": float(truth.mean()),
    }


def build_scorer(
    fitted: Fitted,
    calibrator: PlattCalibrator,
    spectral: SpectralContext | None,
    deep: DeepFeatures | None,
    deep_views: int = DEEP_VIEWS,
) -> FeatureScorer:
    """The module of a learner fitted on all chips (only the feature parts it uses);
    ``deep`` learners average their features over the ``deep_views`` flips/rotations
    their out-of-fold scores were tested on (:meth:`Features.matrix`)."""
    uses = fitted.candidate.features
    if deep is not None and uses == "deep":
        deep = deep.with_views(deep_views)
    head: LinearHead | TreeEnsembleHead
    if fitted.candidate.estimator == "gbm":
        head = TreeEnsembleHead.from_sklearn(fitted.estimator)
    else:
        assert fitted.mean is not None and fitted.scale is not None
        head = LinearHead.from_sklearn(fitted.mean, fitted.scale, fitted.estimator)
    return FeatureScorer(
        head,
        calibrator,
        spectral=spectral if uses in ("spectral", "combined", "pixel") else None,
        deep=deep if uses in ("deep", "combined") else None,
        head_columns=spectral.channels if uses == "pixel" and spectral is not None else None,
    )


def learner_record(
    scorer: FeatureScorer, fitted: Fitted, channels: int, tile: int
) -> dict[str, Any]:
    """The card's ``learner`` section: enough to rebuild the module around the weights."""
    head = scorer.head
    return {
        "kind": KIND,
        "name": fitted.candidate.name,
        "features": fitted.candidate.features,
        "estimator": fitted.candidate.estimator,
        "channels": channels,
        "tile_size": tile,
        "tree_depth": head.depth if isinstance(head, TreeEnsembleHead) else None,
        "deep_min_size": scorer.deep.min_size if scorer.deep is not None else None,
        "deep_views": scorer.deep.views if scorer.deep is not None else None,
        "deep_stages": bool(scorer.deep is not None and scorer.deep.stages),
        "relative_channels": bool(scorer.spectral is not None and scorer.spectral.relative),
        "head_columns": scorer.head_columns,
        "calibration": "platt",
    }
