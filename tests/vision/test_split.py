"""Spatially blocked split: no leakage between training and validation chips."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geoscreen.imagery.chips import Chip, sample_chips
from geoscreen.imagery.scene import open_scene
from geoscreen.labels import load_labels
from geoscreen.vision.split import SplitResult, blocked_split


def overlaps(a: Chip, b: Chip) -> bool:
    return (
        a.row_off < b.row_off + b.size
        and b.row_off < a.row_off + a.size
        and a.col_off < b.col_off + b.size
        and b.col_off < a.col_off + a.size
    )


def block_keys(chips: list[Chip], groups: list[str], block_px: int) -> list[tuple[str, int, int]]:
    """Block of each chip by its centre, as the split documents."""
    return [
        (g, int((c.row_off + c.size / 2) // block_px), int((c.col_off + c.size / 2) // block_px))
        for c, g in zip(chips, groups, strict=True)
    ]


def check_split(
    split: SplitResult, chips: list[Chip], groups: list[str], block_px: int, fraction: float
) -> None:
    n = len(chips)
    train, val = set(split.train.tolist()), set(split.val.tolist())
    assert not train & val
    assert len(train) + len(val) + split.dropped_overlap == n
    assert np.all(np.diff(split.train) > 0) and np.all(np.diff(split.val) > 0)
    # No leakage: no validation chip overlaps a training chip of the same group.
    for i in train:
        for j in val:
            if groups[i] == groups[j]:
                assert not overlaps(chips[i], chips[j]), (chips[i], chips[j])
    # Whole blocks are held out.
    keys = block_keys(chips, groups, block_px)
    assert split.total_blocks == len(set(keys))
    val_keys = {keys[j] for j in val}
    assert len(val_keys) == split.val_blocks
    assert all(keys[i] not in val_keys for i in train)
    assert all(j in val for j, k in enumerate(keys) if k in val_keys)
    if split.total_blocks < 2:
        assert not val  # nothing can be held out without leaving training empty
        return
    # At least one block held out, at least one left for training.
    assert 1 <= split.val_blocks <= split.total_blocks - 1
    # Roughly the asked fraction: reached (unless only one block was left), and
    # overshot by less than one block.
    biggest = max(Counter(keys).values())
    assert len(val) >= fraction * n or split.val_blocks == split.total_blocks - 1
    assert len(val) < fraction * n + biggest
    if any(c.label for c in chips):
        assert any(chips[j].label for j in val)


@st.composite
def chip_sets(draw: st.DrawFn) -> tuple[list[Chip], list[str], int, float, int]:
    n = draw(st.integers(1, 60))
    size = draw(st.sampled_from([8, 16, 32]))
    extent = draw(st.integers(size, 400))
    chips, groups = [], []
    for _ in range(n):
        chips.append(
            Chip(
                row_off=draw(st.integers(0, extent - size)),
                col_off=draw(st.integers(0, extent - size)),
                size=size,
                label=int(draw(st.booleans())),
                source="test",
            )
        )
        groups.append(draw(st.sampled_from(["scene_a", "scene_b"])))
    block_px = size * draw(st.integers(1, 5))
    fraction = draw(st.sampled_from([0.1, 0.25, 0.5]))
    return chips, groups, block_px, fraction, draw(st.integers(0, 3))


@settings(deadline=None, max_examples=150)
@given(chip_sets())
def test_blocked_split_properties(case: tuple[list[Chip], list[str], int, float, int]) -> None:
    chips, groups, block_px, fraction, seed = case
    split = blocked_split(chips, groups, block_px=block_px, val_fraction=fraction, seed=seed)
    check_split(split, chips, groups, block_px, fraction)
    again = blocked_split(chips, groups, block_px=block_px, val_fraction=fraction, seed=seed)
    assert np.array_equal(split.train, again.train) and np.array_equal(split.val, again.val)


def test_same_place_in_two_scenes_is_not_leakage() -> None:
    """Overlap only counts within a group: the same window of another scene stays in training."""
    chips = [Chip(0, 0, 16, 1, "positive"), Chip(0, 0, 16, 0, "background")]
    split = blocked_split(chips, ["a", "b"], block_px=64, val_fraction=0.5, seed=0)
    assert split.val.tolist() == [0] and split.train.tolist() == [1]
    assert split.dropped_overlap == 0


def test_mismatched_groups_rejected() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        blocked_split([Chip(0, 0, 8, 1, "positive")], [], block_px=8)


def test_real_osbs_chips(osbs_path: Path, osbs_labels_path: Path) -> None:
    """The tree-crown chips of the real training run: 64 px chips, 192 px blocks."""
    scene = open_scene(osbs_path, sensor="rgb")
    labels = load_labels(osbs_labels_path, scene)
    chips = sample_chips(
        scene,
        [tuple(p) for p in labels.centres()],
        [],
        chip_size=64,
        n_background=4 * len(labels),
        min_distance_px=0.3 * 64,
        seed=0,
        allow_fewer=True,
    )
    groups = [scene.id] * len(chips)
    split = blocked_split(chips, groups, block_px=192, val_fraction=0.25, seed=0)
    check_split(split, chips, groups, 192, 0.25)
    assert split.train.size > 100 and split.val.size > 30
    assert "blocks of 192 px held out" in split.describe()
    assert f"{split.dropped_overlap} training chips dropped" in split.describe()
