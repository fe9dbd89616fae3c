"""Scale-space blobs: the classical tree-top finder, as a baseline for trained detectors.

Round objects of a known size range (crowns, kilns, ovens) stand out as blobs in *some*
map of the scene: a band, the mean brightness, or the normalised difference of two
bands (greener than blue, brighter than red), light or dark. :class:`ScaleSpaceBlobs`
tries each such *cue* and keeps the one whose blobs best match the training labels
(AP at IoU 0.4). Blobs are the local maxima, in space and scale, of the
scale-normalised Laplacian of Gaussian at scales spanning the labels' 10th-90th
percentile sizes; each becomes a square box ``2 k sqrt(2) sigma`` wide (``k``, the
width factor, is chosen with the cue) and its score a probability of being an object,
calibrated on the training blobs (Platt).

Three choices are fitted (cue, size range, width factor), so this is what an analyst
gets in an afternoon with scipy. A detector that does not beat it has learnt no more
than "round things of this colour and size". On NEON crowns it also shows why one
site's labels do not teach another's: the cue that marks the crowns differs by site
(``benchmarks/detect_cues.py``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import shapely
import torch
import torchvision
from scipy import ndimage
from sklearn.linear_model import LogisticRegression

from geoscreen.matching import MatchRule, match_in_score_order
from geoscreen.vision.detect_data import SceneView, box_sides
from geoscreen.vision.detect_metrics import detection_metrics

SCALES = 8
WIDTHS = (1.0, 1.25, 1.5)  # k = 1: a disc's diameter; crowns' boxes run a little wider
NMS_IOU = 0.3
MAX_BLOBS = 5_000  # per view: far more than any scene holds objects
RATIO_FLOOR = 0.05  # keeps near-black pixels (stretched values ~0) from dominating a ratio
FLAT_SLOPE = 1e-6  # a calibration slope never falls below this: the order is kept
MIN_SIGMA_PX = 2.0  # the scene is block-averaged so the smallest scale keeps this many px

Found = tuple[np.ndarray, np.ndarray]  # boxes (N, 4) in pixels, scores (N,)


def band_names(count: int, bands: Sequence[str] | None = None) -> list[str]:
    """The profile's band names when they fit, else ``b1``... ``bN``."""
    return (
        list(bands)
        if bands is not None and len(bands) == count
        else [f"b{i + 1}" for i in range(count)]
    )


def cue_maps(image: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Every cue of a (C, H, W) image: each band, their mean, each pairwise normalised
    difference, each with both signs (``-red``: blobs darker than their surroundings)."""
    image = np.asarray(image, np.float64)
    maps = {name: image[i] for i, name in enumerate(names)}
    if len(names) > 1:
        maps["mean"] = image.mean(axis=0)
    for i, j in itertools.combinations(range(len(names)), 2):
        maps[f"nd({names[i]},{names[j]})"] = (image[i] - image[j]) / (
            np.abs(image[i]) + np.abs(image[j]) + RATIO_FLOOR
        )
    return maps | {f"-{name}": -values for name, values in maps.items()}


def size_range(views: Sequence[SceneView]) -> tuple[float, float]:
    """LoG scales (sigma, px) spanning the 10th-90th percentile box sides of ``views``."""
    lo, hi = np.percentile(box_sides(views, "the blobs"), [10, 90])
    return max(float(lo), 1.0) / (2 * np.sqrt(2)), max(float(hi), 1.0) / (2 * np.sqrt(2))


def _block_mean(values: np.ndarray, step: int) -> np.ndarray:
    h, w = (values.shape[0] // step) * step, (values.shape[1] // step) * step
    blocks = values[:h, :w].reshape(h // step, step, w // step, step)
    return blocks.mean(axis=(1, 3))


def find_blobs(
    cue: np.ndarray, valid: np.ndarray, sigmas: tuple[float, float], widths: Sequence[float]
) -> dict[float, Found]:
    """Scale-space maxima of the scale-normalised LoG of ``cue`` as boxes, per width factor.

    The cue is block-averaged first so that the smallest scale spans about
    :data:`MIN_SIGMA_PX` pixels (the same blobs, a fraction of the time); invalid pixels
    take the valid mean, so a scene's edge or a blanked strip makes no blobs of its own.
    """
    step = max(1, int(sigmas[0] // MIN_SIGMA_PX))
    fill = float(cue[valid].mean()) if valid.any() else 0.0
    small = _block_mean(np.where(valid, cue, fill), step)
    inside = _block_mean(valid.astype(np.float64), step) >= 1.0
    grid = np.geomspace(sigmas[0], sigmas[1], SCALES) / step
    stack = np.stack([-(s**2) * ndimage.gaussian_laplace(small, s) for s in grid])
    peak = (stack == ndimage.maximum_filter(stack, size=3)) & (stack > 0) & inside[None]
    scale, rows, cols = np.nonzero(peak)
    scores = stack[scale, rows, cols]
    centre_c, centre_r = (cols + 0.5) * step, (rows + 0.5) * step
    out: dict[float, Found] = {}
    for k in widths:
        half = k * np.sqrt(2) * grid[scale] * step
        boxes = np.stack(
            [centre_c - half, centre_r - half, centre_c + half, centre_r + half], axis=1
        )
        keep = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), NMS_IOU)
        keep = keep.numpy()[:MAX_BLOBS]
        out[k] = (boxes[keep], scores[keep])
    return out


def _average_precision(found: Sequence[Found], views: Sequence[SceneView], iou: float) -> float:
    truths = [v.boxes for v in views]
    ap = detection_metrics(found, truths, iou, np.inf)["average_precision"]
    return float(np.nan_to_num(ap))


@dataclass
class ScaleSpaceBlobs:
    """Blobs of the cue that best matches the training labels: fit on views, predict boxes.

    ``bands``: the profile's band names, for readable cue names (``nd(green,blue)``).
    After :meth:`fit`, ``cue`` and ``width`` say what was chosen and ``fit_ap`` how well
    it matched the training labels; ``cue_ap`` holds every cue's AP there.
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
        names = band_names(view.image.shape[0], self.bands)
        valid = view.valid.numpy().astype(bool)
        maps = cue_maps(view.image.numpy(), names)
        out: dict[tuple[str, float], Found] = {}
        for name, cue in [(only, maps[only])] if only else maps.items():
            for k, found in find_blobs(cue, valid, self.sigmas, widths).items():
                out[(name, k)] = found
        return out

    def fit(self, views: Sequence[SceneView]) -> ScaleSpaceBlobs:
        self.sigmas = size_range(views)
        per_view = [self._all(v, WIDTHS) for v in views]
        scores = {key: _average_precision([p[key] for p in per_view], views, self.iou)
                  for key in per_view[0]}  # fmt: skip
        (self.cue, self.width), self.fit_ap = max(scores.items(), key=lambda kv: kv[1])
        self.cue_ap = {name: ap for (name, k), ap in scores.items() if k == self.width}
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

    def found(self, view: SceneView, cue: str = "") -> Found:
        """Boxes of ``cue``'s blobs (the chosen cue unless named) at the fitted size range
        and width, with their raw strengths (uncalibrated: only the chosen cue's are)."""
        if self.calibration is None:
            raise RuntimeError("fit the blobs first")
        cue = cue or self.cue
        return self._all(view, (self.width,), only=cue)[(cue, self.width)]

    def predict(self, view: SceneView) -> Found:
        """Boxes of the chosen cue's blobs and their calibrated scores."""
        if self.calibration is None:
            raise RuntimeError("fit the blobs first")
        boxes, strength = self.found(view)
        if len(strength) == 0:
            return boxes, strength
        slope, intercept = self.calibration
        return boxes, 1.0 / (1.0 + np.exp(-(slope * np.log(strength) + intercept)))
