"""Scale-space blobs as a screening model: the detector card's blob baseline, kept.

Every detector card compares the trained detector with scale-space blobs
(:mod:`geoscreen.vision.blobs`): one cue (a band, the brightness or a band ratio), a size
range and a box width, fitted on the labels. Where the labels are few and all from the
kind of place to be screened, the blobs can be the better model: on OSBS's west half,
blobs fitted on the 14 crowns an analyst confirmed among the first 40 candidates ranked
the east half's crowns at AP@0.4 0.72, a detector retrained on the same reviews (beside
YELL's 279 crowns) at 0.34-0.54 (docs/new-site.md). As a tile
classifier keeps the per-pixel logistic regression when it wins, a detect profile may
ask for the blobs (``detection.architecture: blobs``): fitted, not trained, in seconds.

:class:`BlobDetector` takes tiles like any :class:`~geoscreen.vision.detector.Detector`
(``(B, C, H, W)`` in [0, 1]), so ``screen`` and ``scan`` use it unchanged; ``--tta``
adds nothing (blobs are found the same way under every flip and rotation) and is
refused. What was fitted is kept twice: as buffers in ``model.pt`` (so the model's hash
pins it) and in the card (``detector.blobs``, for people); loading refuses a card that
differs from its weights. Screening passes the tile reader's valid mask
(``reads_valid``): pixels outside the scene make no blobs, as when fitting (the
stretched imagery's darkest pixels are 0 in every band too, so zeros cannot tell
nodata). Blob finding itself (the cue maps, the scale-space maxima) lives here, on the
screening side; choosing what to find from labels is :mod:`geoscreen.vision.blobs`.

What blobs cannot do: tell two kinds of round thing of the same colour and size apart,
or carry a cue from one kind of place to another (``benchmarks/detect_cues.py``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torchvision
from scipy import ndimage

from geoscreen.errors import ConfigError
from geoscreen.vision.detector import BLOBS, Detector, DetectorConfig
from geoscreen.vision.modelcard import DetectCard

SCALES = 8
NMS_IOU = 0.3
MAX_BLOBS = 5_000  # per view: far more than any scene holds objects
RATIO_FLOOR = 0.05  # keeps near-black pixels (stretched values ~0) from dominating a ratio
MIN_SIGMA_PX = 2.0  # the scene is block-averaged so the smallest scale keeps this many px

Found = tuple[np.ndarray, np.ndarray]  # boxes (N, 4) in pixels, scores (N,)


def band_names(count: int, bands: Sequence[str] | None = None) -> list[str]:
    """The profile's band names when they fit, else ``b1``... ``bN``."""
    return (
        list(bands)
        if bands is not None and len(bands) == count
        else [f"b{i + 1}" for i in range(count)]
    )


def cue_names(names: Sequence[str]) -> list[str]:
    """Every cue of an image with bands ``names``: each band, their mean, each pairwise
    normalised difference, each with both signs (``-red``: blobs darker than their
    surroundings). The order breaks ties when fitting."""
    light = [*names, *(["mean"] if len(names) > 1 else [])]
    light += [f"nd({a},{b})" for a, b in itertools.combinations(names, 2)]
    return light + [f"-{name}" for name in light]


def cue_map(image: np.ndarray, names: Sequence[str], cue: str) -> np.ndarray:
    """One cue of a (C, H, W) image (a name from :func:`cue_names`): screening computes
    only the cue it was fitted on."""
    if cue.startswith("-"):
        return -cue_map(image, names, cue[1:])
    image = np.asarray(image, np.float64)
    if cue == "mean":
        return image.mean(axis=0)
    if cue.startswith("nd("):
        i, j = (list(names).index(n) for n in cue[3:-1].split(","))
        return (image[i] - image[j]) / (np.abs(image[i]) + np.abs(image[j]) + RATIO_FLOOR)
    return image[list(names).index(cue)]


def cue_maps(image: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Every cue of a (C, H, W) image (:func:`cue_names`), by name."""
    return {cue: cue_map(image, names, cue) for cue in cue_names(names)}


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


def blobs_of(image: np.ndarray, valid: np.ndarray, bands: Sequence[str] | None,
             sigmas: tuple[float, float], widths: Sequence[float],
             only: str = "") -> dict[tuple[str, float], Found]:  # fmt: skip
    """Every cue's blobs (or ``only`` one's) in a (C, H, W) image, per width factor."""
    names = band_names(image.shape[0], bands)
    out: dict[tuple[str, float], Found] = {}
    for name in [only] if only else cue_names(names):
        for k, found in find_blobs(cue_map(image, names, name), valid, sigmas, widths).items():
            out[(name, k)] = found
    return out


@dataclass(frozen=True)
class FittedBlobs:
    """What fitting chose (:class:`~geoscreen.vision.blobs.ScaleSpaceBlobs`): the cue, the
    LoG scales (sigma, px), the box width factor and the Platt calibration of the log
    blob strength (slope, intercept); ``bands`` name the cue's bands."""

    bands: tuple[str, ...] | None
    cue: str
    width: float
    sigmas: tuple[float, float]
    calibration: tuple[float, float]

    def found(self, image: np.ndarray, valid: np.ndarray, cue: str = "") -> Found:
        """Boxes of ``cue``'s blobs (the chosen cue unless named) at the fitted size range
        and width, with their raw strengths (uncalibrated: only the chosen cue's are)."""
        cue = cue or self.cue
        return blobs_of(image, valid, self.bands, self.sigmas, (self.width,), cue)[
            (cue, self.width)
        ]

    def predict(self, image: np.ndarray, valid: np.ndarray) -> Found:
        """Boxes of the chosen cue's blobs and their calibrated scores."""
        boxes, strength = self.found(image, valid)
        if len(strength) == 0:
            return boxes, strength
        slope, intercept = self.calibration
        return boxes, 1.0 / (1.0 + np.exp(-(slope * np.log(strength) + intercept)))


class BlobDetector(Detector):
    """Fitted scale-space blobs behind the detector interface (eval only)."""

    reads_valid = True
    fp32_only = True
    sigmas: torch.Tensor  # buffers: model.pt holds what was fitted
    width: torch.Tensor
    calibration: torch.Tensor
    cue_code: torch.Tensor

    def __init__(self, config: DetectorConfig, blobs: FittedBlobs) -> None:
        if config.architecture != BLOBS:
            raise ValueError("a blob detector needs architecture 'blobs'")
        super().__init__(config, torch.nn.Identity())
        self.bands = blobs.bands
        self.register_buffer("sigmas", torch.tensor(blobs.sigmas, dtype=torch.float64))
        self.register_buffer("width", torch.tensor(blobs.width, dtype=torch.float64))
        self.register_buffer("calibration", torch.tensor(blobs.calibration, dtype=torch.float64))
        self.register_buffer("cue_code", torch.tensor(list(blobs.cue.encode()), dtype=torch.uint8))

    @property
    def blobs(self) -> FittedBlobs:
        """The fitted blobs, as the weights hold them."""
        slope, intercept = (float(v) for v in self.calibration.tolist())
        lo, hi = (float(v) for v in self.sigmas.tolist())
        cue = bytes(self.cue_code.tolist()).decode()
        return FittedBlobs(self.bands, cue, float(self.width), (lo, hi), (slope, intercept))

    def forward(
        self,
        images: torch.Tensor | Sequence[torch.Tensor],
        boxes: Sequence[torch.Tensor] | None = None,
        valid: torch.Tensor | None = None,
    ) -> Any:
        """Boxes and scores per tile; ``valid``: (B, H, W) bool, the pixels inside the
        scene (the tile reader's mask; without it every pixel counts)."""
        if boxes is not None or self.training:
            raise ValueError("scale-space blobs are fitted on labels (train), not trained")
        blobs = self.blobs
        out = []
        for k, tile in enumerate(images):
            image = tile.detach().float().cpu()
            _, h, w = image.shape
            inside = (np.ones((h, w), dtype=bool) if valid is None
                      else valid[k].detach().cpu().numpy().astype(bool))  # fmt: skip
            found, scores = self.kept(*blobs.predict(image.numpy(), inside))
            out.append({"boxes": torch.as_tensor(found, dtype=torch.float32, device=tile.device),
                        "scores": torch.as_tensor(scores, dtype=torch.float32,
                                                  device=tile.device)})  # fmt: skip
        return out

    def kept(self, found: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The boxes a tile keeps, best first: scores of at least the profile's
        ``score_threshold``, at most ``max_detections`` (as a trained detector's)."""
        order = np.argsort(-scores, kind="stable")
        order = order[scores[order] >= self.config.score_threshold][: self.config.max_detections]
        return found[order].reshape(-1, 4), scores[order]


def blob_record(model: BlobDetector) -> dict[str, Any]:
    """The card's ``detector.blobs`` section."""
    blobs = model.blobs
    return {
        "cue": blobs.cue,
        "bands": list(blobs.bands or []),
        "sigmas": [round(s, 6) for s in blobs.sigmas],
        "width": blobs.width,
        "calibration": list(blobs.calibration),
    }


def blob_detector_from_card(card: DetectCard) -> BlobDetector:
    """The detector a blob card describes, to load its weights into (:func:`~geoscreen.
    vision.detector.load_detector` checks them against the card after loading)."""
    record = card.detector.blobs
    assert record is not None  # the card's validation requires it
    lo, hi = record.sigmas
    slope, intercept = record.calibration
    blobs = FittedBlobs(tuple(record.bands), record.cue, record.width, (lo, hi),
                        (slope, intercept))  # fmt: skip
    return BlobDetector(DetectorConfig.from_card(card), blobs)


def check_blob_weights(model: BlobDetector, card: DetectCard, where: str) -> None:
    """Refuse weights whose blobs differ from the card's (a hand-edited card)."""
    record, held = card.detector.blobs, model.blobs
    same = record is not None and record.cue == held.cue
    if record is not None:
        pairs: list[tuple[Any, Any]] = [(held.sigmas, record.sigmas), (held.width, record.width),
                 (held.calibration, record.calibration)]  # fmt: skip
        same = same and all(np.allclose(a, b, rtol=1e-5) for a, b in pairs)
    if not same:
        raise ConfigError(
            "model.pt holds other blobs than model.yaml describes",
            where=where,
            fix="Restore the model.yaml written by 'geoscreen train', or retrain the model.",
        )
