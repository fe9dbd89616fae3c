"""Score rasters: tile scores at their centres, interpolated (the default), or each cell the
mean score of the tiles covering it (footprint); NaN where no tile says anything."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

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
    raster, _, cell = ScoreMap(grid, scores, np.ones(len(grid), np.float32)).raster("footprint")
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


def _screened(tmp_path: Path, tile: int, overlap: int, keep: float, seed: int) -> ScoreMap:
    scene = open_scene(make_synthetic_scene(tmp_path / "s.tif", 101, 77, crs="EPSG:32633"))
    rng = np.random.default_rng(seed)
    full = TileGrid(scene, tile, overlap)
    chosen = full.flat_indexes()[rng.random(len(full)) < keep]
    grid = TileGrid(scene, tile, overlap, selection=chosen)
    return ScoreMap(grid, rng.random(len(grid)).astype(np.float32), np.ones(len(grid), np.float32))


@pytest.mark.parametrize(
    ("tile", "overlap", "keep"),
    [(16, 4, 1.0), (16, 4, 0.6), (16, 15, 1.0), (17, 12, 0.5), (20, 5, 1.0), (12, 0, 1.0)],
)
def test_centre_raster_puts_each_tile_score_at_its_centre_pixel(
    tmp_path: Path, tile: int, overlap: int, keep: float
) -> None:
    scores = _screened(tmp_path, tile, overlap, keep, seed=tile + overlap)
    grid = scores.grid
    raster, transform, cell = scores.raster("centre")
    assert grid.stride % cell == 0
    assert raster.shape == (-(-77 // cell), -(-101 // cell))  # the scene, in cells
    assert transform == grid.scene.transform * Affine.scale(cell)
    centre = (tile - 1) // 2
    rows = (grid.rows * grid.stride + centre) // cell  # the cell holding each tile's centre
    cols = (grid.cols * grid.stride + centre) // cell
    inside = (rows < raster.shape[0]) & (cols < raster.shape[1])
    np.testing.assert_array_equal(raster[rows[inside], cols[inside]], scores.scores[inside])
    # Between centres, scores in the range the tiles gave; unscreened tiles leave NaN
    values = raster[np.isfinite(raster)]
    assert values.min() >= scores.scores.min() and values.max() <= scores.scores.max()
    assert np.isnan(raster).any() == (keep < 1.0)


def test_centre_raster_interpolates_between_centres(tmp_path: Path) -> None:
    """Stride 4 (16 px tiles, overlap 12): 1 px cells; centres at pixel 7 of each tile,
    and halfway between four centres, their mean."""
    scores = _screened(tmp_path, 16, 12, 1.0, seed=11)
    raster, _, cell = scores.raster("centre")
    grid = scores.grid
    assert cell == 1
    by_tile = np.full((grid.n_rows, grid.n_cols), np.nan)
    by_tile[grid.rows, grid.cols] = scores.scores
    for i, j in [(0, 0), (3, 5), (grid.n_rows - 2, grid.n_cols - 2)]:
        expected = by_tile[i : i + 2, j : j + 2].mean()
        assert raster[4 * i + 9, 4 * j + 9] == pytest.approx(expected, abs=1e-6)
        assert raster[4 * i + 7, 4 * j + 7] == pytest.approx(by_tile[i, j])
        quarter = 0.75 * by_tile[i, j] + 0.25 * by_tile[i, j + 1]
        assert raster[4 * i + 7, 4 * j + 8] == pytest.approx(quarter, abs=1e-6)
    # A missing tile's neighbours fill the cells between them and it, not its own
    chosen = np.flatnonzero(~((grid.rows == 3) & (grid.cols == 5)))
    holed = ScoreMap(TileGrid(grid.scene, 16, 12, selection=grid.flat_indexes()[chosen]),
                     scores.scores[chosen], scores.valid_fraction[chosen])  # fmt: skip
    around, _, _ = holed.raster("centre")
    assert np.isnan(around[12 + 7, 20 + 7])
    between = by_tile[3:5, 5:7].copy()
    between[0, 0] = np.nan
    assert around[12 + 9, 20 + 9] == pytest.approx(np.nanmean(between))


def test_centre_raster_at_stride_one_is_each_pixels_own_tile(tmp_path: Path) -> None:
    scores = _screened(tmp_path, 16, 15, 1.0, seed=3)
    raster, _, cell = scores.raster("centre")
    assert cell == 1
    grid, centre = scores.grid, 7  # pixel 7 of a 16 px tile, as chips centre their labels
    by_tile = dict(zip(zip(grid.rows.tolist(), grid.cols.tolist(), strict=True),
                       scores.scores.tolist(), strict=True))  # fmt: skip
    for r, c in [(7, 7), (40, 60), (7 + grid.n_rows - 1, 7 + grid.n_cols - 1)]:
        assert raster[r, c] == by_tile[(r - centre, c - centre)]
    # Pixels nearer the edge than any tile's centre take the nearest tile's score
    assert raster[0, 0] == by_tile[(0, 0)]
    assert raster[76, 100] == by_tile[(grid.n_rows - 1, grid.n_cols - 1)]
    assert raster[3, 50] == by_tile[(0, 50 - centre)]


def test_centre_raster_without_overlap_interpolates_within_tiles(tmp_path: Path) -> None:
    """Without overlap (16 px stride): 4 px cells, a quarter of the stride; each
    tile's centre cell holds its score, as the footprint raster's one cell per tile."""
    scores = _screened(tmp_path, 16, 0, 0.7, seed=5)
    footprint, transform, cell = scores.raster("footprint")
    centre, centre_transform, centre_cell = scores.raster()
    assert (cell, centre_cell) == (16, 4)
    assert centre_transform == transform * Affine.scale(0.25)
    np.testing.assert_array_equal(centre[1::4, 1::4], footprint)  # pixel 7 is in cell 1


def test_written_raster_says_which_it_is(tmp_path: Path) -> None:
    scores = _screened(tmp_path, 16, 15, 1.0, seed=7)
    written = scores.write(tmp_path / "out", raster="footprint")
    with rasterio.open(written["raster"]) as src:
        assert src.tags()["score_raster"] == "footprint"
        np.testing.assert_array_equal(src.read(1), scores.raster("footprint")[0])
    with rasterio.open(scores.write(tmp_path / "default")["raster"]) as src:
        assert src.tags()["score_raster"] == "centre"
        assert (src.height, src.width) == (77, 101)
        np.testing.assert_array_equal(src.read(1), scores.raster("centre")[0])
