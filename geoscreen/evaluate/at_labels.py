"""A tile classifier measured where the labels are: its score raster read at each label.

A classify screen writes ``scores.tif`` (each tile's score at its centre). Labelled
places (points, boxes or polygons, with classes: positives and negatives) are the
truth that screening is for: does a place that matches the profile score higher than
one that does not? So the evaluation is a ranking of labels, not a matching of
objects: AP and ROC AUC of the scores at the labels' centres against the positive
rate (the AP of ranking at random), with a bootstrap interval that resamples spatial
blocks of 3 x 3 tiles (labels a few tiles apart share their context, so they are not
independent), and precision, recall and F1 at the threshold in force when screened.
The raster records both the threshold and the tile size.

Labels in a CRS are placed on the score raster itself; labels in pixel coordinates
(CSV boxes, Pascal VOC) on the image they were drawn on (``image``), whose grid the
raster shares. Labels outside the raster, or where it holds no score, are counted and
left out.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.warp import transform as transform_points
from rasterio.windows import Window

from geoscreen.errors import InputError
from geoscreen.evaluate.metrics import tile_metrics
from geoscreen.imagery.scene import Scene, open_scene
from geoscreen.labels import LabelSet, LabelsForOtherImage, check_classes, load_labels
from geoscreen.ranking import average_precision_interval
from geoscreen.vision.scoremap import THRESHOLD_TAG, TILE_EXTENT_TAG

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".jp2")
BLOCK_TILES = 3  # the bootstrap's blocks, in tiles a side (as training's blocked folds)


@dataclass(frozen=True)
class LabelScores:
    """The score raster's value at each usable label, with its class and role."""

    scores: np.ndarray  # float, one per label kept
    positive: np.ndarray  # bool
    classes: np.ndarray  # the labels' class names
    threshold: float | None  # recorded by the screen that wrote the raster
    report: str  # how the label file was read (kept, positives, negatives, dropped)
    left_out: dict[str, int] = field(default_factory=dict)  # why labels had no score
    blocks: np.ndarray | None = None  # each label's spatial block (None: not recorded)
    block_side: float | None = None  # the blocks' side, in the raster's CRS units


def is_score_raster(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a raster (by its extension), not a vector file."""
    return os.fspath(path).lower().endswith(RASTER_SUFFIXES)


def scores_at_labels(
    raster: str | os.PathLike[str],
    labels: str | os.PathLike[str],
    *,
    image: Scene | None = None,
    positive_classes: Sequence[str] | None = None,
    negative_classes: Sequence[str] | None = None,
) -> LabelScores:
    """Read ``raster`` (band 1) at the centre of every label in ``labels`` (module doc)."""
    where = os.fspath(labels)
    grid = image if image is not None else open_scene(raster)
    pixels = InputError(
        "the labels are in pixel coordinates, which refer to the image they were drawn on",
        where=where,
        fix="Give that image with --image (the scene that was screened).",
    )
    try:
        placed = load_labels(labels, grid, positive_classes=positive_classes)
    except LabelsForOtherImage:  # they name their image: not the raster
        if image is None:
            raise pixels from None
        raise
    if image is None and placed.report.pixel_coordinates:
        raise pixels
    check_classes(placed.frame["label"].astype(str), positive_classes, negative_classes, where)
    used = placed.narrowed(negative_classes)
    scores, left_out, (xs, ys), tags = _sample(raster, used, grid)
    present = np.isfinite(scores)
    frame = used.frame
    positive = frame["positive"].to_numpy(bool)[present]
    if not positive.any() or positive.all():
        kind = "positive" if not positive.any() else "negative"
        raise InputError(
            f"no {kind} label has a score: {placed.report.summary()}",
            where=where,
            fix="Ranking needs labels of both kinds on the screened area (--positive / "
            "--negative say which classes are which); with positives alone, evaluate the "
            "scene's sites (geoscreen sites extract) against the labelled objects.",
        )
    threshold, extent = (_number(tags.get(key)) for key in (THRESHOLD_TAG, TILE_EXTENT_TAG))
    side = BLOCK_TILES * extent if extent else None
    blocks = None
    if side:  # as training's folds: labels within a few tiles of each other go together
        cells = np.floor(np.column_stack([xs, ys])[present] / side).astype(np.int64)
        blocks = np.unique(cells, axis=0, return_inverse=True)[1].reshape(-1)
    return LabelScores(
        scores=scores[present],
        positive=positive,
        classes=frame["label"].astype(str).to_numpy()[present],
        threshold=threshold,
        report=placed.report.summary(),
        left_out={**left_out, "unused class": len(placed) - len(used)},
        blocks=blocks,
        block_side=side,
    )


def _number(tag: str | None) -> float | None:
    return float(tag) if tag not in (None, "", "None") else None


def _sample(
    raster: str | os.PathLike[str], labels: LabelSet, grid: Scene
) -> tuple[np.ndarray, dict[str, int], tuple[np.ndarray, np.ndarray], dict[str, str]]:
    """Scores at the labels' centres (NaN where none), the counts of those without, the
    centres in the raster's coordinates, and the raster's tags."""
    centres = labels.centres()
    xs, ys = _apply(grid.transform, centres[:, 0], centres[:, 1])
    out = np.full(len(centres), np.nan)
    with rasterio.open(raster) as src:
        tags = src.tags()
        if grid.crs is not None and src.crs is not None and grid.crs != src.crs:
            xs, ys = transform_points(grid.crs, src.crs, list(xs), list(ys))
        cols, rows = _apply(~src.transform, np.asarray(xs), np.asarray(ys))
        col, row = np.floor(cols).astype(np.int64), np.floor(rows).astype(np.int64)
        inside = (col >= 0) & (row >= 0) & (col < src.width) & (row < src.height)
        for i in np.flatnonzero(inside):  # one cell each: memory stays flat on any raster
            cell = src.read(1, window=Window(int(col[i]), int(row[i]), 1, 1), masked=True)
            out[i] = float(np.ma.filled(cell.astype(np.float64), np.nan)[0, 0])
    left = {"outside the score raster": int((~inside).sum()),
            "no score there": int((inside & ~np.isfinite(out)).sum())}  # fmt: skip
    xy = (np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64))
    return out, left, xy, tags


def _apply(affine: Affine, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``affine`` on arrays of coordinates (the Affine type's ``*`` is typed for scalars)."""
    a, b, c, d, e, f = affine[:6]
    return a * x + b * y + c, d * x + e * y + f


def label_metrics(
    result: LabelScores, threshold: float | None, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """AP (with a bootstrap interval over labels), ROC AUC, the positive rate, and
    P/R/F1 at ``threshold`` (none: ranking only); per class, the labels and mean score."""
    scores, truth = result.scores, result.positive
    metrics = tile_metrics(scores, truth, 0.5 if threshold is None else threshold)
    ranking = {key: metrics[key] for key in ("average_precision", "roc_auc")}
    out: dict[str, Any] = {
        "labels": int(truth.size),
        "positives": int(truth.sum()),
        "negatives": int((~truth).sum()),
        "positive_rate": float(truth.mean()),
        **ranking,
        "average_precision_interval": (
            list(average_precision_interval(scores, truth, seed, n_boot, groups=result.blocks))
            if n_boot > 0
            else []
        ),
        "interval_resamples": (
            f"blocks of {BLOCK_TILES} x {BLOCK_TILES} tiles ({result.block_side:g} units a side)"
            if result.blocks is not None
            else "labels (the raster records no tile size: optimistic for labels near each other)"
        ),
        "threshold": threshold,
        "per_class": {str(name): _class_row(result, name) for name in np.unique(result.classes)},
        "left_out": result.left_out,
    }
    if threshold is not None:
        out.update({k: metrics[k] for k in ("tp", "fp", "fn", "tn", "precision", "recall", "f1")})
    return out


def _class_row(result: LabelScores, name: str) -> dict[str, Any]:
    member = result.classes == name
    return {"labels": int(member.sum()), "positive": bool(result.positive[member][0]),
            "mean_score": float(result.scores[member].mean())}  # fmt: skip
