"""Spatially blocked k-fold cross-validation for training chips.

Neighbouring pixels look alike, so a random split leaks: a test chip that overlaps a
training chip measures memory, not skill. Chips are grouped into square ground
blocks (per scene); whole blocks go to one fold, folds are balanced by positives,
and for each fold the training chips that overlap one of its test chips are left
out of that fold's training (a buffer). Every chip is tested exactly once, by a
model that never saw its block, and the final model is refitted on all chips.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from geoscreen.errors import InputError
from geoscreen.imagery.chips import Chip

MIN_POSITIVES = 6


@dataclass(frozen=True)
class BlockedFolds:
    """Fold of each chip, its block, and per fold the (train, test) chip indexes."""

    fold: np.ndarray
    block: np.ndarray
    splits: tuple[tuple[np.ndarray, np.ndarray], ...]
    block_px: int

    @property
    def k(self) -> int:
        return len(self.splits)

    @property
    def buffered(self) -> list[int]:
        """Per fold, training chips left out because they overlap a test chip."""
        n = self.fold.size
        return [int(n - test.size - train.size) for train, test in self.splits]

    def describe(self) -> str:
        blocks = np.unique(self.block).size
        if self.block_px == 0:
            return f"{self.k} folds of whole scenes ({blocks} scenes): each tested on unseen scenes"
        return (
            f"{self.k} spatially blocked folds over {blocks} blocks of {self.block_px} px; "
            f"per fold {min(self.buffered)}-{max(self.buffered)} training chips left out "
            "for overlapping test chips"
        )

    def record(self) -> dict[str, object]:
        """The card's description of the folds."""
        return {
            "method": "whole-scene k-fold" if self.block_px == 0 else "spatially blocked k-fold",
            "folds": self.k,
            "block_px": self.block_px,
            "blocks": int(np.unique(self.block).size),
            "test_chips_per_fold": [int(t.size) for _, t in self.splits],
            "buffered_per_fold": self.buffered,
            "description": self.describe(),
        }


def blocked_folds(
    chips: Sequence[Chip],
    groups: Sequence[str],
    *,
    block_px: int,
    k: int = 5,
    seed: int = 0,
    where: str = "",
    by_scene: bool = False,
) -> BlockedFolds:
    """Assign whole blocks to ``k`` folds (fewer when fewer blocks hold positives).

    With ``by_scene`` the blocks are whole scenes: every model is tested on scenes it
    never saw, which is what screening new imagery asks of it (see :func:`scene_folds_fit`).

    Blocks holding positives are dealt first, most positives first (ties in a seeded
    random order), each to the fold with the fewest positives so far; blocks without
    positives then go to the fold with the fewest chips. Raises :class:`InputError`
    when the positives are too few, or all in one block, to test on unseen blocks.
    """
    if len(chips) != len(groups):
        raise ValueError("chips and groups differ in length")
    labels = np.array([c.label for c in chips], dtype=np.int64)
    n_pos = int(labels.sum())
    if n_pos < MIN_POSITIVES or n_pos == labels.size:
        what = "positive" if n_pos < MIN_POSITIVES else "negative (or background)"
        raise InputError(
            f"cross-validation needs at least {MIN_POSITIVES} {what} examples; "
            f"the labels give {n_pos} positive of {labels.size}",
            where=where,
            fix="Label more examples (positives and negatives), or say which classes are "
            "positive with --positive.",
        )
    keys = np.array([str(g) for g in groups]) if by_scene else _block_keys(chips, groups, block_px)
    blocks, block_of = np.unique(keys, return_inverse=True)
    pos_per_block = np.bincount(block_of, weights=labels, minlength=blocks.size)
    chips_per_block = np.bincount(block_of, minlength=blocks.size)
    positive_blocks = int(np.count_nonzero(pos_per_block))
    if positive_blocks < 2:
        raise InputError(
            f"all positive examples lie in one block of {block_px} px, so no model can be "
            "tested on a place it was not trained on",
            where=where,
            fix="Label positives in more places (or scenes) at least one block apart.",
        )
    k = min(k, positive_blocks)
    rng = np.random.default_rng(seed)
    tie = rng.permutation(blocks.size)
    fold_of_block = np.zeros(blocks.size, dtype=np.int64)
    fold_pos = np.zeros(k)
    fold_chips = np.zeros(k)
    for b in np.lexsort((tie, -pos_per_block)):
        if pos_per_block[b] > 0:
            f = int(np.lexsort((fold_chips, fold_pos))[0])
        else:
            f = int(np.argmin(fold_chips))
        fold_of_block[b] = f
        fold_pos[f] += pos_per_block[b]
        fold_chips[f] += chips_per_block[b]
    fold = fold_of_block[block_of]
    splits = []
    for f in range(k):
        test = np.nonzero(fold == f)[0]
        train = np.nonzero(fold != f)[0]
        train = train[~_overlapping(chips, groups, train, test)]
        splits.append((train, test))
    return BlockedFolds(fold, block_of, tuple(splits), 0 if by_scene else block_px)


def scene_folds_fit(chips: Sequence[Chip], groups: Sequence[str]) -> bool:
    """Whether whole scenes can be the folds: at least two scenes each holding positives
    and negatives. Pooled blocks within scenes reward a learner that tells the scenes
    apart (their positive rates differ); held-out scenes measure what transfers."""
    labels = np.array([c.label for c in chips])
    scenes = np.array([str(g) for g in groups])
    fit = [s for s in np.unique(scenes) if 0 < labels[scenes == s].sum() < (scenes == s).sum()]
    return len(fit) >= 2


def _block_keys(chips: Sequence[Chip], groups: Sequence[str], block_px: int) -> np.ndarray:
    rows = [int((c.row_off + c.size / 2) // block_px) for c in chips]
    cols = [int((c.col_off + c.size / 2) // block_px) for c in chips]
    return np.array([f"{g}:{r}:{c}" for g, r, c in zip(groups, rows, cols, strict=True)])


def _overlapping(
    chips: Sequence[Chip], groups: Sequence[str], train: np.ndarray, test: np.ndarray
) -> np.ndarray:
    """For each ``train`` index, whether its chip overlaps a ``test`` chip of its scene."""
    r0 = np.array([c.row_off for c in chips])
    c0 = np.array([c.col_off for c in chips])
    size = np.array([c.size for c in chips])
    group = np.array(groups)
    a, b = train[:, None], test[None, :]
    rows = (r0[b] < r0[a] + size[a]) & (r0[a] < r0[b] + size[b])
    cols = (c0[b] < c0[a] + size[a]) & (c0[a] < c0[b] + size[b])
    return np.any(rows & cols & (group[a] == group[b]), axis=1)
