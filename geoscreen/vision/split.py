"""Spatially blocked train/validation split.

Neighbouring pixels look alike, so a random chip split leaks: a validation chip
overlapping a training chip measures memory, not skill. Chips are grouped into
square ground blocks; whole blocks go to validation, and training chips that
still overlap a validation chip are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from geoscreen.imagery.chips import Chip


@dataclass(frozen=True)
class SplitResult:
    """Indexes into the chip list, and what was done, for the model card."""

    train: np.ndarray
    val: np.ndarray
    dropped_overlap: int
    block_px: int
    val_blocks: int
    total_blocks: int

    def describe(self) -> str:
        return (
            f"{self.val_blocks} of {self.total_blocks} blocks of {self.block_px} px held out; "
            f"{self.dropped_overlap} training chips dropped for overlapping validation chips"
        )


def blocked_split(
    chips: Sequence[Chip],
    groups: Sequence[str],
    *,
    block_px: int,
    val_fraction: float = 0.25,
    seed: int = 0,
) -> SplitResult:
    """Assign whole blocks (per ``groups`` entry, e.g. scene id) to validation.

    Blocks are visited in a seeded random order, the first one holding a positive
    chip first, until about ``val_fraction`` of the chips are in validation.
    """
    if len(chips) != len(groups):
        raise ValueError("chips and groups differ in length")
    n = len(chips)
    centre_r = np.array([c.row_off + c.size / 2 for c in chips])
    centre_c = np.array([c.col_off + c.size / 2 for c in chips])
    keys = [
        f"{g}:{int(r // block_px)}:{int(c // block_px)}"
        for g, r, c in zip(groups, centre_r, centre_c, strict=True)
    ]
    blocks = sorted(set(keys))
    rng = np.random.default_rng(seed)
    order = [blocks[i] for i in rng.permutation(len(blocks))]
    labels = np.array([c.label for c in chips])
    key_arr = np.array(keys)
    positive_blocks = [b for b in order if labels[key_arr == b].any()]
    if positive_blocks:
        order.remove(positive_blocks[0])
        order.insert(0, positive_blocks[0])
    chosen: set[str] = set()
    in_val = np.zeros(n, dtype=bool)
    for block in order:
        if in_val.sum() >= val_fraction * n or len(chosen) >= len(blocks) - 1:
            break
        chosen.add(block)
        in_val |= key_arr == block
    train_mask = ~in_val
    val_idx = np.nonzero(in_val)[0]
    val_by_group: dict[str, list[Chip]] = {}
    for j in val_idx:
        val_by_group.setdefault(groups[int(j)], []).append(chips[int(j)])
    dropped = 0
    for i in np.nonzero(train_mask)[0]:
        others = val_by_group.get(groups[int(i)])
        if others and _overlaps_any(chips[int(i)], others):
            train_mask[i] = False
            dropped += 1
    return SplitResult(
        np.nonzero(train_mask)[0], val_idx, dropped, block_px, len(chosen), len(blocks)
    )


def _overlaps_any(chip: Chip, others: Sequence[Chip]) -> bool:
    r0 = np.array([o.row_off for o in others])
    c0 = np.array([o.col_off for o in others])
    size = np.array([o.size for o in others])
    rows = (r0 < chip.row_off + chip.size) & (chip.row_off < r0 + size)
    cols = (c0 < chip.col_off + chip.size) & (chip.col_off < c0 + size)
    return bool(np.any(rows & cols))
