"""Training chips for detectors: whole scenes in memory, object-centred crops, augmentation.

A few hundred labelled objects cover only a few megapixels, so every scene is read
once, preprocessed, and kept in memory. Each epoch draws fresh square crops, either

- *grid* (the default, :func:`grid_windows`): a grid shifted at random each epoch, so
  every pixel and every object is seen once per epoch, empty crops included (they
  teach what is not an object); a scene's share of the crops is its share of the area,
  unless scenes are balanced (each as many crops as the largest); or
- *object-centred*: objects are visited in random order and each one not yet seen
  whole this epoch gets a crop placed at random around it, so every labelled object
  appears whole at least once per epoch (none is dropped);
- *random*: ``random_chips`` extra crops per object-centred one, placed anywhere in
  the area, empty or not (empty ones teach what is not an object);
- *hard negatives*: one crop more per rejected outline (an analyst's rejection of a
  detected object, :func:`hard_negative_windows`), placed at random around it, every
  epoch: the detector sees each place it was wrong about as background, whichever
  sampling is used. Its loss is not weighted (a detector's loss sums over anchors, not
  chips); the extra crops are how these places count;
- *scale jitter*: each crop reads a window ``size / zoom`` wide and resizes it to
  ``size`` (``zoom`` log-uniform in ``scale_range``), moving its boxes along.

A held-out validation block is cut out of the training area, not worked around:
training crops may reach into it, but its pixels are blanked and the boxes are clipped
to the training area (:func:`training_view`); the block itself is one validation image
(:func:`validation_view`). Augmentations on a chip (:func:`augment_chip`): the
dihedral flips/rotations, copy-paste of labelled objects (an elliptical cut-out of the
box, pasted where it overlaps no other box), colour jitter and colour rotation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F

from geoscreen.vision.augment import DIHEDRAL, dihedral
from geoscreen.vision.boxes import clip_boxes, dihedral_boxes

Rect = tuple[int, int, int, int]  # col0, row0, col1, row1 (pixel edges)


@dataclass
class SceneView:
    """Part of a labelled scene: pixels (C, H, W) in [0, 1], valid mask, boxes in its pixels.

    ``area`` is where training crops are placed (the whole view unless a validation block
    was cut out of it). ``negatives``: pixel boxes of rejected outlines (hard negatives:
    background that looked like an object), each given its own crop every epoch.
    """

    image: torch.Tensor
    valid: torch.Tensor
    boxes: np.ndarray
    area: Rect
    name: str = ""
    negatives: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))


def holdout_block(height: int, width: int, fraction: float, position: float) -> Rect:
    """A strip across the scene's longer side, ``fraction`` of it wide, its start at
    ``position`` (0..1) of the remaining length."""
    along_x = width >= height
    length = width if along_x else height
    wide = max(1, round(fraction * length))
    start = round(position * (length - wide))
    if along_x:
        return (start, 0, start + wide, height)
    return (0, start, width, start + wide)


def sides_of(boxes: np.ndarray) -> np.ndarray:
    """The side (square root of the area) of each box, in pixels."""
    return np.sqrt(
        np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    )


def box_sides(views: Sequence[SceneView], what: str = "the baselines") -> np.ndarray:
    """The side (square root of the area) of every box of ``views``, in pixels; a
    ValueError naming ``what`` needed them when there are none."""
    boxes = np.concatenate([np.asarray(v.boxes, np.float64).reshape(-1, 4) for v in views])
    if len(boxes) == 0:
        raise ValueError(f"no boxes to size {what} from")
    return sides_of(boxes)


def training_view(image: torch.Tensor, boxes: np.ndarray, block: Rect | None,
                  min_visible: float = 0.4, name: str = "",
                  negatives: np.ndarray | None = None) -> SceneView:  # fmt: skip
    """The scene minus ``block``: its pixels blanked (invalid), boxes clipped to the rest;
    ``negatives`` (hard negatives' boxes) whose centre lies in the block are left out."""
    _, h, w = image.shape
    valid = torch.ones(h, w, dtype=torch.bool)
    hard = np.asarray(negatives if negatives is not None else [], np.float64).reshape(-1, 4)
    if block is None:
        return SceneView(image, valid, np.asarray(boxes, np.float64).reshape(-1, 4), (0, 0, w, h),
                         name, hard)  # fmt: skip
    c0, r0, c1, r1 = block
    cx, cy = (hard[:, 0] + hard[:, 2]) / 2, (hard[:, 1] + hard[:, 3]) / 2
    hard = hard[~((cx >= c0) & (cx < c1) & (cy >= r0) & (cy < r1))]
    image = image.clone()
    image[:, r0:r1, c0:c1] = 0.0
    valid[r0:r1, c0:c1] = False
    pieces = (
        [(0, 0, c0, h), (c1, 0, w, h)] if r0 == 0 and r1 == h else [(0, 0, w, r0), (0, r1, w, h)]
    )
    kept = []
    for pc0, pr0, pc1, pr1 in pieces:
        if pc1 <= pc0 or pr1 <= pr0:
            continue
        inside, _ = clip_boxes(boxes, pc0, pr0, pc1 - pc0, pr1 - pr0, min_visible=min_visible)
        kept.append(inside + np.array([pc0, pr0, pc0, pr0]))
    out = np.concatenate(kept) if kept else np.zeros((0, 4))
    return SceneView(image, valid, out, (0, 0, w, h), name, hard)


def validation_view(image: torch.Tensor, boxes: np.ndarray, block: Rect,
                    min_visible: float = 0.4, name: str = "") -> SceneView:  # fmt: skip
    """The pixels of ``block`` with the boxes clipped to it (in its own pixels)."""
    c0, r0, c1, r1 = block
    inside, _ = clip_boxes(boxes, c0, r0, c1 - c0, r1 - r0, min_visible=min_visible)
    crop = image[:, r0:r1, c0:c1].contiguous()
    return SceneView(crop, torch.ones(crop.shape[1:], dtype=torch.bool), inside,
                     (0, 0, c1 - c0, r1 - r0), name)  # fmt: skip


@dataclass(frozen=True)
class Window:
    """One crop: view index, top-left corner and side of the window read (before resizing)."""

    view: int
    col: int
    row: int
    side: int


def _place(lo: float, hi: float, side: int, start: int, stop: int, rng: np.random.Generator) -> int:
    """A window start along one axis holding [lo, hi] (when it fits), inside [start, stop]."""
    first = max(start, math.ceil(hi) - side)
    last = min(int(lo), stop - side)
    if stop - start <= side:
        return start - (side - (stop - start)) // 2  # window wider than the area: centred
    if first > last:  # object larger than the window: centre on it
        return int(min(max((lo + hi) / 2 - side / 2, start), stop - side))
    return int(rng.integers(first, last + 1))


def grid_windows(views: list[SceneView], size: int, rng: np.random.Generator,
                 scale_range: tuple[float, float] = (1.0, 1.0),
                 balance: bool = False) -> list[Window]:  # fmt: skip
    """One epoch of crops on a grid shifted at random: every pixel of each view's area in
    one crop (half the pixels of :func:`sample_windows`; an object cut by the grid this
    epoch is whole in most others). Each view gets one random zoom per grid.

    With ``balance`` every view gives as many crops as the largest one (smaller views'
    grids repeat, each shifted and zoomed afresh), so a small scene counts as much as a
    large one instead of in proportion to its area."""
    per_view = [_view_grid(v, view, size, rng, scale_range) for v, view in enumerate(views)]
    if balance and per_view:
        most = max(len(w) for w in per_view)
        for v, view in enumerate(views):
            while len(per_view[v]) < most:
                per_view[v] += _view_grid(v, view, size, rng, scale_range)
            per_view[v] = per_view[v][:most]
    windows = [w for found in per_view for w in found]
    order = rng.permutation(len(windows))
    return [windows[i] for i in order]


def _view_grid(v: int, view: SceneView, size: int, rng: np.random.Generator,
               scale_range: tuple[float, float]) -> list[Window]:  # fmt: skip
    lo, hi = math.log(scale_range[0]), math.log(scale_range[1])
    c0, r0, c1, r1 = view.area
    side = max(8, round(size / math.exp(rng.uniform(lo, hi))))
    cols = _grid(c0, c1, side, rng)
    rows = _grid(r0, r1, side, rng)
    return [Window(v, col, row, side) for row in rows for col in cols]


def _grid(start: int, stop: int, side: int, rng: np.random.Generator) -> list[int]:
    """Window starts every ``side`` from a random offset, covering [start, stop)."""
    length = stop - start
    if length <= side:
        return [start - (side - length) // 2]
    n = math.ceil(length / side)
    offset = int(rng.integers(0, n * side - length + 1))
    return [start - offset + i * side for i in range(n)]


def sample_windows(views: list[SceneView], size: int, rng: np.random.Generator,
                   scale_range: tuple[float, float] = (1.0, 1.0),
                   random_chips: float = 0.0) -> list[Window]:  # fmt: skip
    """One epoch of object-centred crops (module docstring): every object whole in at
    least one."""
    lo, hi = math.log(scale_range[0]), math.log(scale_range[1])
    windows: list[Window] = []
    for v, view in enumerate(views):
        c0, r0, c1, r1 = view.area
        b = view.boxes
        seen = np.zeros(len(b), dtype=bool)
        centred = 0
        for i in rng.permutation(len(b)).tolist():
            if seen[i]:
                continue
            side = max(8, round(size / math.exp(rng.uniform(lo, hi))))
            col = _place(b[i, 0], b[i, 2], side, c0, c1, rng)
            row = _place(b[i, 1], b[i, 3], side, r0, r1, rng)
            windows.append(Window(v, col, row, side))
            centred += 1
            seen |= (
                (b[:, 0] >= col)
                & (b[:, 2] <= col + side)
                & (b[:, 1] >= row)
                & (b[:, 3] <= row + side)
            )
            seen[i] = True
        for _ in range(math.ceil(random_chips * max(centred, 1))):
            side = max(8, round(size / math.exp(rng.uniform(lo, hi))))
            col = int(rng.integers(c0, max(c0, c1 - side) + 1))
            row = int(rng.integers(r0, max(r0, r1 - side) + 1))
            windows.append(Window(v, col, row, side))
    order = rng.permutation(len(windows))
    return [windows[i] for i in order]


def hard_negative_windows(
    views: list[SceneView],
    size: int,
    rng: np.random.Generator,
    scale_range: tuple[float, float] = (1.0, 1.0),
) -> list[Window]:
    """One crop per hard negative of every view, placed at random so that the rejected
    outline lies whole inside it (centred on it when larger than the crop)."""
    lo, hi = math.log(scale_range[0]), math.log(scale_range[1])
    windows: list[Window] = []
    for v, view in enumerate(views):
        c0, r0, c1, r1 = view.area
        for x0, y0, x1, y1 in np.asarray(view.negatives, np.float64).reshape(-1, 4).tolist():
            side = max(8, round(size / math.exp(rng.uniform(lo, hi))))
            col = _place(x0, x1, side, c0, c1, rng)
            row = _place(y0, y1, side, r0, r1, rng)
            windows.append(Window(v, col, row, side))
    return windows


def read_window(view: SceneView, window: Window, size: int, min_visible: float = 0.4
                ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:  # fmt: skip
    """Chip pixels (C, size, size), valid mask and boxes (chip pixels) of ``window``."""
    c, h, w = view.image.shape
    s = window.side
    image = torch.zeros(c, s, s)
    valid = torch.zeros(s, s, dtype=torch.bool)
    top, left = max(window.row, 0), max(window.col, 0)
    bottom, right = min(window.row + s, h), min(window.col + s, w)
    if bottom > top and right > left:
        rows = slice(top - window.row, bottom - window.row)
        cols = slice(left - window.col, right - window.col)
        image[:, rows, cols] = view.image[:, top:bottom, left:right]
        valid[rows, cols] = view.valid[top:bottom, left:right]
    boxes, _ = clip_boxes(view.boxes, window.col, window.row, s, s, min_visible=min_visible)
    if s != size:
        image = F.interpolate(image[None], size=(size, size), mode="bilinear",
                              align_corners=False)[0]  # fmt: skip
        valid = (
            F.interpolate(valid[None, None].float(), size=(size, size), mode="nearest")[0, 0] > 0
        )
        boxes = boxes * (size / s)
    return image, valid, boxes.astype(np.float32)


# -- augmentation -------------------------------------------------------------------------
@dataclass
class PastePool:
    """Pixel patches (C, h, w) of whole labelled objects, for copy-paste."""

    patches: list[torch.Tensor]

    @classmethod
    def from_views(cls, views: list[SceneView], min_px: int = 8) -> PastePool:
        patches = []
        for view in views:
            for x0, y0, x1, y1 in np.round(view.boxes).astype(int).tolist():
                if x1 - x0 >= min_px and y1 - y0 >= min_px and bool(view.valid[y0:y1, x0:x1].all()):
                    patches.append(view.image[:, y0:y1, x0:x1].clone())
        return cls(patches)


def ellipse_mask(h: int, w: int) -> torch.Tensor:
    """1 inside the ellipse inscribed in an ``h x w`` box, else 0 (crowns are round)."""
    y = (torch.arange(h, dtype=torch.float32) + 0.5) / h * 2 - 1
    x = (torch.arange(w, dtype=torch.float32) + 0.5) / w * 2 - 1
    return ((y[:, None] ** 2 + x[None, :] ** 2) <= 1.0).float()


def copy_paste(image: torch.Tensor, valid: torch.Tensor, boxes: np.ndarray, pool: PastePool,
               n: int, rng: np.random.Generator, scale: float = 1.0, tries: int = 20
               ) -> tuple[torch.Tensor, np.ndarray]:  # fmt: skip
    """Paste up to ``n`` pool objects (random symmetry, resized by ``scale``) where their
    box overlaps no other box and lies on valid pixels; returns the image and all boxes."""
    if not pool.patches or n <= 0:
        return image, boxes
    image = image.clone()
    _, h, w = image.shape
    out = [np.asarray(boxes, np.float32).reshape(-1, 4)]
    for _ in range(n):
        patch = pool.patches[int(rng.integers(len(pool.patches)))]
        patch = dihedral(patch, int(rng.integers(DIHEDRAL)))
        ph, pw = (max(4, round(d * scale)) for d in patch.shape[1:])
        if (ph, pw) != tuple(patch.shape[1:]):
            patch = F.interpolate(patch[None], size=(ph, pw), mode="bilinear",
                                  align_corners=False)[0]  # fmt: skip
        if ph >= h or pw >= w:
            continue
        taken = np.concatenate(out)
        for _ in range(tries):
            y, x = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
            new = np.array([x, y, x + pw, y + ph], np.float32)
            overlap = (np.minimum(taken[:, 2], new[2]) > np.maximum(taken[:, 0], new[0])) & (
                np.minimum(taken[:, 3], new[3]) > np.maximum(taken[:, 1], new[1])
            )
            if overlap.any() or not bool(valid[y : y + ph, x : x + pw].all()):
                continue
            mask = ellipse_mask(ph, pw)
            region = image[:, y : y + ph, x : x + pw]
            image[:, y : y + ph, x : x + pw] = mask * patch + (1 - mask) * region
            out.append(new[None])
            break
    return image, np.concatenate(out)


def colour_jitter(image: torch.Tensor, valid: torch.Tensor, rng: np.random.Generator,
                  strength: float = 1.0) -> torch.Tensor:  # fmt: skip
    """Brightness, contrast, saturation and per-band gain changes (other sites, other light)."""
    if strength <= 0:
        return image
    c = image.shape[0]
    gain = torch.from_numpy(1 + rng.uniform(-0.08, 0.08, (c, 1, 1)) * strength).float()
    out = image * gain
    grey = out.mean(dim=0, keepdim=True)
    out = grey + (out - grey) * float(1 + rng.uniform(-0.3, 0.3) * strength)
    m = valid.float()
    mean = (out * m).sum() / (m.sum().clamp(min=1) * c)
    out = (out - mean) * float(1 + rng.uniform(-0.25, 0.25) * strength) + mean
    out = out + float(rng.uniform(-0.1, 0.1) * strength)
    return out.clamp(0, 1) * m


def colour_rotation(image: torch.Tensor, valid: torch.Tensor, rng: np.random.Generator
                    ) -> torch.Tensor:  # fmt: skip
    """The chip's colours turned by a random orthogonal matrix about their mean: the
    contrast in any colour direction (brighter, greener than blue) moves to another, so a
    model cannot lean on the one colour cue that marks the objects at its training site."""
    c = image.shape[0]
    q, r = np.linalg.qr(rng.standard_normal((c, c)))
    turn = torch.from_numpy(q * np.sign(np.diag(r))).float()  # uniform over O(c)
    m = valid.float()
    mean = (image * m).sum(dim=(1, 2), keepdim=True) / m.sum().clamp(min=1)
    out = torch.einsum("ij,jhw->ihw", turn, image - mean) + mean
    return out.clamp(0, 1) * m


@dataclass(frozen=True)
class AugmentSettings:
    """Which augmentations a training run uses (each one kept only if it helps)."""

    dihedral: bool = True
    colour: float = 1.0
    paste: int = 0
    scale_range: tuple[float, float] = (1.0, 1.0)
    colour_rotation: float = 0.0  # share of chips whose colours are turned at random


def augment_chip(image: torch.Tensor, valid: torch.Tensor, boxes: np.ndarray, pool: PastePool,
                 settings: AugmentSettings, rng: np.random.Generator, scale: float = 1.0
                 ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Copy-paste, colour jitter, then one random symmetry; returns (image, boxes tensor)."""
    if settings.paste:
        n = int(rng.integers(0, settings.paste + 1))
        image, boxes = copy_paste(image, valid, boxes, pool, n, rng, scale)
    image = colour_jitter(image, valid, rng, settings.colour)
    if settings.colour_rotation and rng.random() < settings.colour_rotation:
        image = colour_rotation(image, valid, rng)
    box_t = torch.from_numpy(np.asarray(boxes, np.float32).reshape(-1, 4))
    if settings.dihedral:
        k = int(rng.integers(DIHEDRAL))
        image = dihedral(image, k)
        box_t = dihedral_boxes(box_t, k, image.shape[-2], image.shape[-1])
    return image, box_t
