"""Tile grids: coverage, geometry and validity, checked against brute force."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasterio.crs import CRS
from shapely.geometry import box

from geoscreen.errors import ConfigError, InputError
from geoscreen.imagery.aoi import load_aoi
from geoscreen.imagery.scene import Scene, open_scene
from geoscreen.imagery.tiling import MIN_TILE_SIZE, TileGrid


def _scene(width: int, height: int, transform: Affine | None = None) -> Scene:
    """A scene description without a file: enough for grid arithmetic."""
    return Scene(
        uri="memory", id="grid-only", width=width, height=height, count=1, dtypes=("uint8",),
        band_names=("band1",), nodata=None, crs=CRS.from_epsg(32633),
        transform=transform or Affine(10, 0, 500_000, 0, -10, 4_500_000), mask_kind="all_valid",
    )  # fmt: skip


def _coverage(grid: TileGrid) -> np.ndarray:
    cover = np.zeros((grid.scene.height, grid.scene.width), dtype=np.int32)
    for tile in grid:
        cover[tile.read_window.toslices()] += 1
    return cover


@pytest.fixture(scope="module")
def raster_dir() -> Iterator[Path]:
    """One folder for the rasters Hypothesis writes (function fixtures do not reset)."""
    with tempfile.TemporaryDirectory(prefix="geoscreen-tiling-") as folder:
        yield Path(folder)


# -- coverage ----------------------------------------------------------------------------
@settings(deadline=None)
@given(
    width=st.integers(1, 150),
    height=st.integers(1, 150),
    tile_size=st.integers(MIN_TILE_SIZE, 64),
)
def test_no_overlap_covers_every_pixel_exactly_once(
    width: int, height: int, tile_size: int
) -> None:
    grid = TileGrid(_scene(width, height), tile_size, 0)
    assert (_coverage(grid) == 1).all()
    assert len(grid) == grid.n_rows * grid.n_cols


@settings(deadline=None)
@given(
    width=st.integers(1, 150),
    height=st.integers(1, 150),
    tile_size=st.integers(MIN_TILE_SIZE, 64),
    overlap_frac=st.floats(0, 0.95),
)
def test_overlap_covers_every_pixel_with_full_size_windows(
    width: int, height: int, tile_size: int, overlap_frac: float
) -> None:
    overlap = min(tile_size - 1, int(tile_size * overlap_frac))
    grid = TileGrid(_scene(width, height), tile_size, overlap)
    assert (_coverage(grid) >= 1).all()
    for tile in grid:
        assert (tile.window.width, tile.window.height) == (tile_size, tile_size)
        assert tile.window.col_off == tile.col * (tile_size - overlap)
        assert tile.window.row_off == tile.row * (tile_size - overlap)
        # Every tile starts inside the scene; its readable part is the window clipped to it.
        assert 0 <= tile.read_window.col_off < width and 0 <= tile.read_window.row_off < height
        assert tile.read_window.col_off + tile.read_window.width == min(
            width, tile.window.col_off + tile_size
        )
    # No superfluous tiles: dropping the last row or column would leave pixels uncovered.
    stride = tile_size - overlap
    assert (grid.n_cols - 2) * stride + tile_size < width or grid.n_cols == 1
    assert (grid.n_rows - 2) * stride + tile_size < height or grid.n_rows == 1


@settings(deadline=None)
@given(
    width=st.integers(1, 120),
    height=st.integers(1, 120),
    tile_size=st.integers(MIN_TILE_SIZE, 48),
    overlap=st.integers(0, MIN_TILE_SIZE // 2),
    res=st.floats(0.05, 500),
    x0=st.floats(-1e6, 1e6),
    y0=st.floats(-1e6, 1e7),
)
def test_tile_geometry_matches_transform(
    width: int, height: int, tile_size: int, overlap: int, res: float, x0: float, y0: float
) -> None:
    transform = Affine(res, 0, x0, 0, -res, y0)
    scene = _scene(width, height, transform)
    grid = TileGrid(scene, tile_size, overlap)
    full, clipped = grid.geometries(clip_to_scene=False), grid.geometries()
    for tile, outline, part in zip(grid, full, clipped, strict=True):
        corner = transform @ (tile.window.col_off, tile.window.row_off)
        assert outline.exterior.coords[0] == pytest.approx(corner)
        assert outline.equals_exact(scene.pixel_polygon(tile.window), tolerance=1e-6 * res)
        assert part.equals_exact(scene.pixel_polygon(tile.read_window), tolerance=1e-6 * res)
        assert part.area == pytest.approx(
            tile.read_window.width * tile.read_window.height * res * res, rel=1e-6
        )


def test_geodataframe_columns(osbs_path: Path) -> None:
    grid = TileGrid(open_scene(osbs_path), 128, 16)
    frame = grid.to_geodataframe()
    assert frame.crs == CRS.from_epsg(32617)
    assert list(frame.columns) == ["tile_id", "scene_id", "row", "col", "col_off", "row_off",
                                   "width", "height", "geometry"]  # fmt: skip
    for tile, rec in zip(grid, frame.itertuples(), strict=True):
        assert rec.tile_id == tile.id
        assert (rec.col_off, rec.row_off) == (tile.read_window.col_off, tile.read_window.row_off)
        assert (rec.width, rec.height) == (tile.read_window.width, tile.read_window.height)
    assert frame.union_all().equals(box(*grid.scene.bounds))


def test_grid_over_a_huge_scene_is_lazy() -> None:
    grid = TileGrid(_scene(50_000, 50_000), 256, 32)
    # Stride 224: 223 tiles reach 223 * 224 + 32 = 49,984 px, one more reaches the edge.
    assert (grid.n_rows, grid.n_cols) == (224, 224)
    assert len(grid) == 224 * 224
    assert grid._flat.nbytes < 500_000  # indexes only, no windows or geometries held
    last = grid[len(grid) - 1]
    assert last.read_window.col_off + last.read_window.width == 50_000
    assert last.read_window.width == 50_000 - 223 * 224


def test_bad_tile_options() -> None:
    with pytest.raises(ConfigError, match=r"tile size must be 8 to 4096 pixels, got 4\. Choose"):
        TileGrid(_scene(64, 64), 4)
    with pytest.raises(ConfigError, match=r"tile size must be 8 to 4096 pixels, got 10{12}"):
        TileGrid(_scene(64, 64), 10**12)
    with pytest.raises(ConfigError, match=r"overlap must be between 0 and tile size - 1"):
        TileGrid(_scene(64, 64), 16, 16)
    with pytest.raises(ConfigError, match=r"overlap"):
        TileGrid(_scene(64, 64), 16, -1)


# -- validity ------------------------------------------------------------------------------
def _write(path: Path, data: np.ndarray, nodata: float | None, blocksize: int | None) -> Path:
    profile = {
        "driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": data.shape[0],
        "dtype": data.dtype.name, "nodata": nodata, "crs": "EPSG:32633",
        "transform": Affine(10, 0, 500_000, 0, -10, 4_500_000),
    }  # fmt: skip
    if blocksize:
        profile.update(tiled=True, blockxsize=blocksize, blockysize=blocksize)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def _brute_force(grid: TileGrid, valid: np.ndarray) -> list[str]:
    return [t.id for t in grid if valid[t.read_window.toslices()].any()]


@st.composite
def _validity_case(draw: st.DrawFn) -> tuple[int, int, np.ndarray]:
    width, height = draw(st.integers(1, 70)), draw(st.integers(1, 70))
    tile_size = draw(st.integers(MIN_TILE_SIZE, 32))
    overlap = draw(st.integers(0, tile_size // 2))
    density = draw(st.sampled_from([0.0, 0.002, 0.02, 0.3, 1.0]))
    seed = draw(st.integers(0, 2**16))
    valid = np.random.default_rng(seed).random((height, width)) < density
    return tile_size, overlap, valid


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    case=_validity_case(),
    blocksize=st.sampled_from([None, 16]),
    max_chunk_px=st.integers(8, 80),
)
def test_drop_empty_keeps_exactly_tiles_with_valid_pixels(
    case: tuple[int, int, np.ndarray],
    blocksize: int | None,
    max_chunk_px: int,
    raster_dir: Path,
) -> None:
    tile_size, overlap, valid = case
    data = np.where(valid, 7, 0).astype(np.uint8)[None].repeat(2, axis=0)
    data[1, valid] = 200
    path = _write(raster_dir / "nodata.tif", data, 0, blocksize)
    grid = TileGrid(open_scene(path), tile_size, overlap)
    kept = grid.drop_empty(max_chunk_px=max_chunk_px)
    assert [t.id for t in kept] == _brute_force(grid, valid)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_validity_case(), declare_nan=st.booleans())
def test_drop_empty_treats_nan_as_invalid(
    case: tuple[int, int, np.ndarray], declare_nan: bool, raster_dir: Path
) -> None:
    tile_size, overlap, valid = case
    data = np.where(valid, 0.5, np.nan).astype(np.float32)[None]
    path = _write(raster_dir / "nan.tif", data, float("nan") if declare_nan else None, None)
    scene = open_scene(path)
    assert scene.mask_kind == ("nodata" if declare_nan else "all_valid")
    grid = TileGrid(scene, tile_size, overlap)
    assert [t.id for t in grid.drop_empty()] == _brute_force(grid, valid)


def test_drop_empty_on_selected_bands(tmp_path: Path) -> None:
    data = np.full((2, 64, 64), 9, dtype=np.uint8)
    data[1, :, :32] = 0  # band 2 is nodata on the left half
    scene = open_scene(_write(tmp_path / "two.tif", data, 0, None))
    grid = TileGrid(scene, 16)
    assert len(grid.drop_empty()) == 16  # nodata only where every band is nodata (GDAL's rule)
    assert len(grid.drop_empty(indexes=[1])) == 16
    assert len(grid.drop_empty(indexes=[2])) == 8


def test_drop_empty_on_real_reprojected_scene(rmnp_path: Path) -> None:
    utm = open_scene(rmnp_path).reproject("EPSG:32613", 250)
    grid = TileGrid(utm, 8)
    kept = grid.drop_empty()
    with utm.open() as src:
        valid = (src.read() != 255).any(axis=0)
    assert [t.id for t in kept] == _brute_force(grid, valid)
    assert 0 < len(kept) < len(grid)  # the rotated corners hold no data


def test_drop_empty_shows_progress(rgb_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    TileGrid(open_scene(rgb_path), 32).drop_empty(progress=True)
    assert "checking tiles for data" in capsys.readouterr().err


# -- AOI -------------------------------------------------------------------------------------
def test_within_real_aoi_matches_brute_force(rmnp_path: Path, rmnp_boundary_path: Path) -> None:
    scene = open_scene(rmnp_path)
    aoi = load_aoi(rmnp_boundary_path, scene.crs)
    grid = TileGrid(scene, 32)
    inside = grid.within(aoi)
    expected = [t.id for t, g in zip(grid, grid.geometries(), strict=True) if g.intersects(aoi)]
    assert [t.id for t in inside] == expected
    assert 0 < len(inside) < len(grid)
    # Chaining keeps working on the subset.
    assert {t.id for t in inside.drop_empty()} <= set(expected)


def test_within_errors(osbs_path: Path, yell_path: Path) -> None:
    grid = TileGrid(open_scene(osbs_path), 64)
    far = box(0, 0, 10, 10)
    with pytest.raises(InputError, match=r"does not overlap"):
        grid.within(far)
    with pytest.raises(InputError, match=r"no CRS"):
        TileGrid(open_scene(yell_path), 64).within(box(0, 0, 100, 100))


# -- export ----------------------------------------------------------------------------------
def test_to_parquet_round_trip(osbs_path: Path, tmp_path: Path) -> None:
    grid = TileGrid(open_scene(osbs_path), 100)
    out = tmp_path / "tiles.parquet"
    grid.to_parquet(out)
    frame = gpd.read_parquet(out)
    assert frame.crs == CRS.from_epsg(32617) and len(frame) == 16
    assert shapely.equals(frame.geometry.to_numpy(), grid.geometries()).all()
    assert [p.name for p in tmp_path.iterdir()] == ["tiles.parquet"]


def test_to_parquet_into_missing_folder_writes_nothing(osbs_path: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"output folder does not exist"):
        TileGrid(open_scene(osbs_path), 100).to_parquet(tmp_path / "nope" / "tiles.parquet")
    assert list(tmp_path.iterdir()) == []


def test_empty_grid_exports(make_scene: Callable[..., Path], tmp_path: Path) -> None:
    path = make_scene(40, 40, nodata=0, nodata_margin=40)
    kept = TileGrid(open_scene(path), 16).drop_empty()
    assert len(kept) == 0
    kept.to_parquet(tmp_path / "none.parquet")
    assert len(gpd.read_parquet(tmp_path / "none.parquet")) == 0
