"""Helpers for site tests: profiles with chosen site rules, score maps with chosen flags."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from geoscreen.imagery.scene import Scene, open_scene
from geoscreen.imagery.tiling import TileGrid
from geoscreen.profiles import Profile
from geoscreen.samples import make_synthetic_scene
from geoscreen.vision.scoremap import ScoreMap


def profile_with(
    tile_size: int = 32,
    overlap: int = 0,
    min_area_m2: float = 0.0,
    merge_distance_m: float = 0.0,
    threshold: float = 0.5,
    name: str = "test_sites",
) -> Profile:
    """A minimal profile with the given tiling and site rules."""
    return Profile.model_validate(
        {
            "name": name,
            "version": "1.2.3",
            "description": "square bright structures for tests",
            "model": {"backbone": "resnet18"},
            "tiling": {"tile_size": tile_size, "overlap": overlap},
            "threshold": threshold,
            "sites": {"min_area_m2": min_area_m2, "merge_distance_m": merge_distance_m},
        }
    )


def flagged_scores(
    scene: Scene,
    tile_size: int,
    overlap: int,
    flags: Iterable[tuple[int, int]] | dict[tuple[int, int], float],
    meta: dict[str, Any] | None = None,
) -> ScoreMap:
    """A score map over every tile: 0.1 everywhere, 0.9 (or the given score) at ``flags``."""
    grid = TileGrid(scene, tile_size, overlap)
    scores = np.full(len(grid), 0.1, dtype=np.float32)
    chosen = flags if isinstance(flags, dict) else dict.fromkeys(flags, 0.9)
    for (row, col), score in chosen.items():
        scores[row * grid.n_cols + col] = score
    return ScoreMap(grid, scores, np.ones(len(grid), dtype=np.float32), None, dict(meta or {}))


@pytest.fixture(scope="session")
def utm_scene(tmp_path_factory: pytest.TempPathFactory) -> Scene:
    """128 x 128 px, 3-band uint8, EPSG:32633, 10 m pixels, origin (500000, 4500000)."""
    path = tmp_path_factory.mktemp("sites") / "utm.tif"
    return open_scene(make_synthetic_scene(path, 128, 128, resolution=10.0, structures=3))


@pytest.fixture
def scene_factory(tmp_path: Path) -> Callable[..., Scene]:
    """``scene_factory(width, height, **make_synthetic_scene options)`` -> an opened Scene."""
    counter = iter(range(1000))

    def make(width: int = 128, height: int = 128, **options: Any) -> Scene:
        path = tmp_path / f"scene_{next(counter)}.tif"
        return open_scene(make_synthetic_scene(path, width, height, **options))

    return make


@pytest.fixture
def make_profile() -> Callable[..., Profile]:
    """:func:`profile_with` as a fixture."""
    return profile_with


@pytest.fixture
def make_scores() -> Callable[..., ScoreMap]:
    """:func:`flagged_scores` as a fixture."""
    return flagged_scores
