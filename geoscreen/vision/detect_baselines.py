"""The simple detectors every trained detector is compared with, on the same held-out strips.

A detector's AP says little alone: on dense canopy almost any box lands on a crown. So
training scores three baselines on the strips that chose the epochs, next to the model:

- *random boxes* (the detection analogue of the positive rate): boxes of the labels'
  median size, as many per pixel as the training area holds, placed and scored at
  random (the AP of ranking at random);
- *pixel peaks* (the per-pixel baseline): a logistic regression on each pixel's band
  values (inside a labelled box or not) gives a probability map; smoothed over half an
  object, its local maxima at least most of an object apart become boxes of the median
  size, scored by the smoothed probability. This is what an analyst gets in an
  afternoon with scikit-learn and scipy; its settings derive from the label sizes, and
  nothing is tuned on the held-out strips;
- *scale-space blobs* (:mod:`geoscreen.vision.blobs`): the classical blob finder on
  the one band, brightness or band ratio whose blobs best match the training labels,
  boxes sized by each blob's scale. Usually the stronger of the two simple baselines.

A detector that does not beat both simple baselines by a clear margin is a defect to
fix (the card says so and ``train`` warns), not a number to report.

With several training scenes the blobs are also fitted on each scene's labels alone
(:func:`scene_cues`): the cue that marks its objects there. Scenes marked by different
cues are different kinds of place, and a detector trained on one kind found the objects
of another far less well (README, "why the detector misses"): the card says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from geoscreen.vision.blobs import ScaleSpaceBlobs
from geoscreen.vision.detect_data import SceneView, box_sides
from geoscreen.vision.detect_metrics import best_threshold, detection_metrics
from geoscreen.vision.modelcard import SIMPLE_BASELINES

Predictions = list[tuple[np.ndarray, np.ndarray]]
# A scene's own cue is told from this many objects: fewer tell little (on OSBS's west
# half, in three review queues, 6 and 9 confirmed outlines chose the blue band, which does
# not mark its crowns; 7, 8 and 10-14 a band ratio that does; benchmarks/detect_review.py
# --blobs-only, README: the blobs as the model at a new site).
MIN_CUE_OBJECTS = 10
# The detector should beat the pixel peaks' AP by this much (as tile learners must beat
# the per-pixel logistic regression: geoscreen.vision.select_train.CLEAR_MARGIN).
CLEAR_MARGIN = 0.02
PIXELS_PER_CLASS = 20_000  # sampled for the logistic regression
MAX_PEAKS = 5_000  # per view: far more than any strip holds objects


def _inside_boxes(view: SceneView) -> np.ndarray:
    """(H, W) bool: pixels inside any of the view's boxes."""
    _, h, w = view.image.shape
    inside = np.zeros((h, w), dtype=bool)
    for c0, r0, c1, r1 in np.asarray(view.boxes, np.float64).reshape(-1, 4):
        inside[
            max(int(r0), 0) : max(int(np.ceil(r1)), 0), max(int(c0), 0) : max(int(np.ceil(c1)), 0)
        ] = True
    return inside


def _area_mask(view: SceneView) -> np.ndarray:
    """(H, W) bool: valid pixels within the view's training area."""
    c0, r0, c1, r1 = view.area
    valid = view.valid.numpy().astype(bool)
    mask = np.zeros_like(valid)
    mask[r0:r1, c0:c1] = valid[r0:r1, c0:c1]
    return mask


def median_size_px(views: Sequence[SceneView]) -> float:
    """The median side (square root of the area) of the views' boxes, in pixels."""
    return float(np.median(box_sides(views)))


def _square_boxes(cols: np.ndarray, rows: np.ndarray, side: float) -> np.ndarray:
    half = side / 2.0
    return np.stack([cols - half, rows - half, cols + half, rows + half], axis=1).astype(np.float64)


@dataclass
class PixelPeaks:
    """The per-pixel baseline detector: fit on training views, predict boxes on others."""

    seed: int = 0
    model: Pipeline | None = None
    side: float = 0.0

    def fit(self, views: Sequence[SceneView]) -> PixelPeaks:
        rng = np.random.default_rng(self.seed)
        xs, ys = [], []
        for view in views:
            pixels = view.image.numpy().reshape(view.image.shape[0], -1).T
            area = _area_mask(view).ravel()
            inside = _inside_boxes(view).ravel()
            for label, chosen in ((1, area & inside), (0, area & ~inside)):
                where = np.flatnonzero(chosen)
                take = min(len(where), PIXELS_PER_CLASS // max(len(views), 1))
                pick = rng.choice(where, size=take, replace=False) if take else where[:0]
                xs.append(pixels[pick])
                ys.append(np.full(len(pick), label))
        x, y = np.concatenate(xs), np.concatenate(ys)
        if len(np.unique(y)) < 2:
            raise ValueError("the pixel baseline needs pixels inside and outside boxes")
        self.model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        self.model.fit(x, y)
        self.side = median_size_px(views)
        return self

    def probability(self, view: SceneView) -> np.ndarray:
        """(H, W) probability that each pixel lies inside an object (0 where invalid)."""
        assert self.model is not None, "fit first"
        c, h, w = view.image.shape
        pixels = view.image.numpy().reshape(c, -1).T
        prob = self.model.predict_proba(pixels)[:, 1].reshape(h, w)
        return np.where(view.valid.numpy().astype(bool), prob, 0.0)

    def predict(self, view: SceneView) -> tuple[np.ndarray, np.ndarray]:
        """Boxes of the median object size at the smoothed map's local maxima, and their scores."""
        smooth = ndimage.uniform_filter(self.probability(view), size=max(3, round(self.side / 2)))
        peak = smooth == ndimage.maximum_filter(smooth, size=max(3, round(self.side * 0.8)))
        peak &= smooth > 0.0
        rows, cols = np.nonzero(peak)
        scores = smooth[rows, cols]
        order = np.argsort(-scores, kind="stable")[:MAX_PEAKS]
        boxes = _square_boxes(cols[order] + 0.5, rows[order] + 0.5, self.side)
        return boxes, scores[order].astype(np.float64)


def random_boxes(train: Sequence[SceneView], views: Sequence[SceneView], seed: int) -> Predictions:
    """Boxes of the median size at the training density, placed and scored at random."""
    rng = np.random.default_rng(seed)
    side = median_size_px(train)
    objects = sum(len(v.boxes) for v in train)
    density = objects / max(sum(int(_area_mask(v).sum()) for v in train), 1)
    out: Predictions = []
    for view in views:
        rows, cols = np.nonzero(_area_mask(view))
        n = max(1, round(density * len(rows))) if len(rows) else 0
        pick = rng.integers(0, len(rows), size=n) if n else np.zeros(0, np.int64)
        boxes = _square_boxes(cols[pick] + rng.random(n), rows[pick] + rng.random(n), side)
        out.append((boxes, rng.random(n)))
    return out


def baseline_table(
    train: Sequence[SceneView],
    held_out: Sequence[SceneView],
    model_predictions: Predictions,
    iou: float,
    seed: int = 0,
    blobs: ScaleSpaceBlobs | None = None,
) -> dict[str, dict[str, float]]:
    """AP and best-threshold F1 at ``iou`` of the model and the baselines on ``held_out``.

    ``blobs``: scale-space blobs already fitted on ``train`` (to know the cue chosen);
    fitted here when not given.
    """
    truths = [v.boxes for v in held_out]
    peaks = PixelPeaks(seed=seed).fit(train)
    blobs = blobs if blobs is not None else ScaleSpaceBlobs(iou=iou).fit(train)
    rows: dict[str, Predictions] = {
        "model": model_predictions,
        "pixel_peaks": [peaks.predict(v) for v in held_out],
        "scale_space_blobs": [blobs.predict(v) for v in held_out],
        "random_boxes": random_boxes(train, held_out, seed),
    }
    table: dict[str, dict[str, float]] = {}
    for name, predictions in rows.items():
        ap = detection_metrics(predictions, truths, iou, 1.0)["average_precision"]
        threshold, f1 = best_threshold(predictions, truths, iou)
        table[name] = {"ap": float(np.nan_to_num(ap)), "best_f1": f1, "best_threshold": threshold}
    return table


def beats(table: dict[str, dict[str, float]], baseline: str) -> bool:
    """Whether the model's AP beats ``baseline``'s by :data:`CLEAR_MARGIN`."""
    return table["model"]["ap"] - table[baseline]["ap"] >= CLEAR_MARGIN


def beats_pixel_baseline(table: dict[str, dict[str, float]]) -> bool:
    """Whether the model's AP beats the pixel peaks' by :data:`CLEAR_MARGIN`."""
    return beats(table, "pixel_peaks")


def baseline_verdict(table: dict[str, dict[str, float]]) -> str:
    """Plain words when the model does not clearly beat a simple baseline ("" when it
    beats both)."""
    missed = [name for name in SIMPLE_BASELINES if name in table and not beats(table, name)]
    if not missed:
        return ""
    model = table["model"]["ap"]
    against = " and ".join(f"{table[n]['ap']:.3f} for {SIMPLE_BASELINES[n]}" for n in missed)
    blobs_win = "scale_space_blobs" in missed and table["scale_space_blobs"]["ap"] > model
    return (
        f"the detector does not beat the simple baselines by a clear margin on the "
        f"held-out strips (AP {model:.3f} against {against}; margin {CLEAR_MARGIN}): its "
        "boxes are little better than blobs of the labels' colour and size. Label more "
        "objects (and the background around them) in more places, or check that the "
        "labels match the imagery."
        + (
            " Where the labels come from the kind of place to be screened, the blobs "
            "themselves can be the model (detection.architecture: blobs)."
            if blobs_win
            else ""
        )
    )


def baselines_record(
    table: dict[str, dict[str, float]],
    iou: float,
    blob_cue: str | None = None,
    cues: Sequence[dict[str, object]] = (),
) -> dict[str, object]:
    """The card's ``baselines`` section (plain values); ``blob_cue``: the cue the
    scale-space blobs chose, e.g. ``nd(green,blue), k 1.25``; ``cues``: each training
    scene's own (:func:`scene_cues`; recorded with two scenes or more)."""
    record: dict[str, object] = {
        "iou": iou,
        "scores": {
            name: {k: round(float(v), 4) for k, v in row.items()} for name, row in table.items()
        },
        "margin": CLEAR_MARGIN,
        "beats_pixel_baseline": beats_pixel_baseline(table),
    }
    if "scale_space_blobs" in table:
        record["beats_blob_baseline"] = beats(table, "scale_space_blobs")
        record["blob_cue"] = blob_cue
    if len(cues) > 1:
        record["scene_cues"] = [dict(c) for c in cues]
    return record


def scene_cues(views: Sequence[SceneView], names: Sequence[str], bands: Sequence[str] | None,
               iou: float) -> list[dict[str, object]]:  # fmt: skip
    """Per scene with at least :data:`MIN_CUE_OBJECTS` objects: its name, the cue the
    scale-space blobs choose on that scene's labels alone, and how many objects chose it.
    None with fewer than two scenes: nothing to compare."""
    found: list[dict[str, object]] = []
    if len(views) < 2:
        return found
    for view, name in zip(views, names, strict=True):
        if len(view.boxes) >= MIN_CUE_OBJECTS:
            cue = ScaleSpaceBlobs(bands=bands, iou=iou).fit([view]).cue
            found.append({"scene": name, "cue": cue, "objects": len(view.boxes)})
    return found


def cue_text(scene: object, cue: object, objects: object) -> str:
    """One scene's cue as the card and its limits show it."""
    return f"{scene}: {cue} ({objects} objects)"


def cue_limit(cues: Sequence[dict[str, object]]) -> str:
    """Plain words when the training scenes' objects are marked by different cues ("" when
    one cue marks them all, or one scene has objects)."""
    if len({c["cue"] for c in cues}) < 2:
        return ""
    each = "; ".join(cue_text(c["scene"], c["cue"], c["objects"]) for c in cues)
    return (
        f"Scale-space blobs fitted on each training scene's labels alone choose different "
        f"cues ({each}): what tells the objects from their ground differs from one place "
        "to the next, and at a kind of place none of these scenes shows the detector may "
        "not know it (README: why the detector misses). Score it on a few labelled "
        "objects of each new kind of place before screening there; with 15 or more "
        "confirmed there, scale-space blobs fitted on them alone (detection.architecture: "
        "blobs) found the rest better than a detector retrained with them (README: the "
        "blobs as the model at a new site)."
    )
