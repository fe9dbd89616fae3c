"""Score rasters: each cell the mean score of the tiles covering it, NaN where none."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from geoscreen.imagery.scene import open_scene
from geoscreen.imagery.tiling import TileGrid
from geoscreen.samples import make_synthetic_scene
from geoscreen.vision.scoremap import ScoreMap


@pytest.mark.parametrize(
    ("tile", "overlap", "keep"),
    [(16, 4, 0.6), (12, 0, 1.0), (20, 5, 0.3), (33, 2, 1.0)],  # the last: 1 px cells, few tiles
)
def test_raster_cells_are_the_mean_of_covering_tiles(
    tmp_path: Path, tile: int, overlap: int, keep: float
) -> None:
    scene = open_scene(make_synthetic_scene(tmp_path / "s.tif", 101, 77, crs="EPSG:32633"))
    rng = np.random.default_rng(tile)
    full = TileGrid(scene, tile, overlap)
    grid = TileGrid(
        scene, tile, overlap, selection=full.flat_indexes()[rng.random(len(full)) < keep]
    )
    scores = rng.random(len(grid)).astype(np.float32)
    raster, _, cell = ScoreMap(grid, scores, np.ones(len(grid), np.float32)).raster()
    assert cell == np.gcd(tile, tile - overlap)
    r0, c0 = grid.rows * grid.stride, grid.cols * grid.stride
    for i in range(raster.shape[0]):
        for j in range(raster.shape[1]):
            y, x = i * cell, j * cell
            covering = (r0 <= y) & (y < r0 + tile) & (c0 <= x) & (x < c0 + tile)
            if covering.any():
                assert raster[i, j] == pytest.approx(scores[covering].mean(), abs=1e-6)
            else:
                assert np.isnan(raster[i, j])
