"""Training chips: fixed-size square windows around labelled points and random background.

Positions are pixel coordinates on the scene's working grid: a centre ``(col, row)``
is continuous (the centre of pixel (0, 0) is (0.5, 0.5)). Turning label geometries
into centres is the labels module's job.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

from geoscreen.errors import ConfigError, InputError
from geoscreen.imagery.masks import read_valid_mask
from geoscreen.imagery.scene import Scene

POSITIVE, NEGATIVE, BACKGROUND = "positive", "negative", "background"
SHIFTED = "shifted"  # a positive chip moved off its label's centre (training's choice)

# Candidate background chips drawn per wanted chip before giving up.
_MAX_DRAWS_PER_CHIP = 50
# Bound on the candidates x positives distance block computed at once.
_DISTANCE_BLOCK = 4_000_000


@dataclass(frozen=True)
class Chip:
    """A ``size`` x ``size`` window with top-left (``row_off``, ``col_off``) and a label.

    ``source`` says how it was made: ``positive``, ``negative`` or ``background``.
    """

    row_off: int
    col_off: int
    size: int
    label: int
    source: str


def chip_window(chip: Chip) -> Window:
    """The chip's window on the scene grid."""
    return Window(chip.col_off, chip.row_off, chip.size, chip.size)


def sample_chips(
    scene: Scene,
    positives: Sequence[tuple[float, float]],
    negatives: Sequence[tuple[float, float]],
    *,
    chip_size: int,
    n_background: int,
    min_distance_px: float,
    seed: int,
    valid_only: bool = True,
    allow_fewer: bool = False,
) -> list[Chip]:
    """Chips centred on positives (label 1) and negatives (label 0), then background.

    Centred chips are shifted to lie inside the scene where it is large enough.
    Background chips (label 0) are drawn uniformly at random with ``seed``; each
    chip's centre is at least ``min_distance_px`` from every positive centre, and
    with ``valid_only`` a chip must hold at least one valid pixel. The result is
    the same for the same inputs and seed. Where too little background lies far
    enough from the positives, ``allow_fewer`` returns what was found instead of
    raising.
    """
    if chip_size < 1:
        raise ConfigError(
            f"chip size must be at least 1 pixel, got {chip_size}",
            fix="Use the profile's tiling.tile_size.",
        )
    if n_background < 0:
        raise ConfigError(
            f"number of background chips must be >= 0, got {n_background}",
            fix="Use 0 for none, or a few per positive.",
        )
    if not min_distance_px >= 0:
        raise ConfigError(
            f"minimum distance must be >= 0 pixels, got {min_distance_px}",
            fix="Use 0, or about a tile, to keep background chips off the labels.",
        )
    pos = _centres(scene, positives, POSITIVE)
    neg = _centres(scene, negatives, NEGATIVE)
    chips = [_centred(scene, c, r, chip_size, 1, POSITIVE) for c, r in pos]
    chips += [_centred(scene, c, r, chip_size, 0, NEGATIVE) for c, r in neg]
    if n_background:
        chips += _background(
            scene, pos, chip_size, n_background, min_distance_px, seed, valid_only, allow_fewer
        )
    return chips


def _centres(scene: Scene, points: Sequence[tuple[float, float]], kind: str) -> np.ndarray:
    array = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    inside = (
        np.isfinite(array).all(axis=1)
        & (array[:, 0] >= 0)
        & (array[:, 0] <= scene.width)
        & (array[:, 1] >= 0)
        & (array[:, 1] <= scene.height)
    )
    if not inside.all():
        first = array[~inside][0]
        raise InputError(
            f"{int((~inside).sum())} {kind} centre(s) lie outside the scene's "
            f"{scene.width} x {scene.height} pixel grid (first: col {first[0]}, row {first[1]})",
            where=scene.uri,
            fix="Keep only labels inside the scene footprint, in the scene's pixel coordinates.",
        )
    return array


def _clamp_offset(start: int, size: int, length: int) -> int:
    return min(max(start, 0), max(length - size, 0))


def _centred(scene: Scene, col: float, row: float, size: int, label: int, source: str) -> Chip:
    col_off = _clamp_offset(math.floor(col - size / 2 + 0.5), size, scene.width)
    row_off = _clamp_offset(math.floor(row - size / 2 + 0.5), size, scene.height)
    return Chip(row_off=row_off, col_off=col_off, size=size, label=label, source=source)


def _far_from(points: np.ndarray, anchors: np.ndarray, min_distance: float) -> np.ndarray:
    """For each point (N x 2), whether every anchor (P x 2) is at least ``min_distance`` away."""
    keep = np.ones(len(points), dtype=bool)
    if len(anchors) == 0 or min_distance <= 0 or len(points) == 0:
        return keep
    step = max(1, _DISTANCE_BLOCK // len(points))
    limit = min_distance * min_distance
    for start in range(0, len(anchors), step):
        block = anchors[start : start + step]
        d2 = ((points[:, None, :] - block[None, :, :]) ** 2).sum(axis=2)
        keep &= (d2 >= limit).all(axis=1)
    return keep


def _background(
    scene: Scene,
    positives: np.ndarray,
    size: int,
    wanted: int,
    min_distance: float,
    seed: int,
    valid_only: bool,
    allow_fewer: bool,
) -> list[Chip]:
    rng = np.random.default_rng(seed)
    max_col, max_row = max(scene.width - size, 0), max(scene.height - size, 0)
    check_valid = valid_only and not (
        scene.mask_kind == "all_valid" and not any(d.startswith("float") for d in scene.dtypes)
    )
    indexes = list(range(1, scene.count + 1))
    chips: list[Chip] = []
    budget = _MAX_DRAWS_PER_CHIP * wanted
    with ExitStack() as stack:
        src = stack.enter_context(scene.open()) if check_valid else None
        while len(chips) < wanted and budget > 0:
            n = min(budget, 2 * (wanted - len(chips)) + 16)
            budget -= n
            offsets = np.stack(
                [rng.integers(0, max_col + 1, n), rng.integers(0, max_row + 1, n)], axis=1
            )
            keep = _far_from(offsets + size / 2, positives, min_distance)
            for col_off, row_off in offsets[keep]:
                chip = Chip(int(row_off), int(col_off), size, 0, BACKGROUND)
                if src is not None:
                    window = chip_window(chip).intersection(Window(0, 0, scene.width, scene.height))
                    if not read_valid_mask(src, scene, window, indexes).any():
                        continue
                chips.append(chip)
                if len(chips) == wanted:
                    break
    if len(chips) < wanted and not allow_fewer:
        raise ConfigError(
            f"found only {len(chips)} of {wanted} background chips of {size} px at least "
            f"{min_distance:g} px from every positive"
            + (" and holding valid pixels" if check_valid else ""),
            where=scene.uri,
            fix="Ask for fewer background chips, or use a smaller chip size or minimum distance.",
        )
    return chips


def shifted_copies(
    chips: Sequence[Chip], scene: Scene, copies: int, reach: float, rng: np.random.Generator
) -> list[Chip]:
    """``copies`` of every positive chip, each moved by up to ``reach`` px on both axes.

    A chip centred on its label is what training sees; screening sees the label
    wherever the tile grid puts it, up to half a stride from the nearest tile's
    centre. Shifted copies teach the learner that tile, not only the centred one.
    """
    out: list[Chip] = []
    for chip in chips:
        if chip.label != 1:
            continue
        for dx, dy in np.rint(rng.uniform(-reach, reach, (copies, 2))).astype(int):
            col = _clamp_offset(chip.col_off + int(dx), chip.size, scene.width)
            row = _clamp_offset(chip.row_off + int(dy), chip.size, scene.height)
            out.append(Chip(row, col, chip.size, 1, SHIFTED))
    return out
