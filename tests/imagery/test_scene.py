"""Scenes on real bundled imagery and small generated rasters with real CRSs."""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform as warp_points
from rasterio.windows import Window
from shapely.geometry import Point

from geoscreen.errors import ConfigError, InputError
from geoscreen.imagery.scene import open_scene, parse_crs, parse_datetime
from geoscreen.imagery.tiling import TileGrid
from geoscreen.samples import SENTINEL2_BANDS, make_sentinel2_like

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


def _centre_lonlat(path: Path) -> Point:
    with rasterio.open(path) as ds:
        x, y = ds.transform @ (ds.width / 2, ds.height / 2)
        lon, lat = warp_points(ds.crs, "EPSG:4326", [x], [y])
    return Point(lon[0], lat[0])


# -- real imagery ------------------------------------------------------------------------
def test_osbs_is_a_georeferenced_rgb_scene(osbs_path: Path) -> None:
    scene = open_scene(osbs_path)
    assert scene.crs == CRS.from_epsg(32617)
    assert (scene.width, scene.height, scene.count) == (400, 400, 3)
    assert scene.resolution == pytest.approx((0.1, 0.1))
    assert scene.resolution_m == pytest.approx((0.1, 0.1))
    assert scene.sensor == "rgb"
    assert scene.band_names == ("red", "green", "blue")
    assert scene.dtypes == ("uint8",) * 3
    assert scene.nodata == 255 and scene.mask_kind == "nodata"
    assert scene.georeferenced
    assert not scene.is_tiled  # the sample is a striped GeoTIFF
    left, bottom, right, top = scene.bounds
    assert right - left == pytest.approx(40.0) and top - bottom == pytest.approx(40.0)


@pytest.mark.parametrize("name", ["osbs_path", "rmnp_path"])
def test_footprint_contains_scene_centre(name: str, request: pytest.FixtureRequest) -> None:
    path = request.getfixturevalue(name)
    footprint = open_scene(path).footprint
    assert footprint is not None and footprint.is_valid
    assert footprint.contains(_centre_lonlat(path))
    assert -180 <= footprint.bounds[0] <= footprint.bounds[2] <= 180


def test_rmnp_geographic_scene_has_plausible_metric_resolution(rmnp_path: Path) -> None:
    scene = open_scene(rmnp_path)
    assert scene.crs == CRS.from_epsg(4326)
    assert scene.nodata == 255 and scene.mask_kind == "nodata"
    assert scene.resolution == pytest.approx((0.0015, 0.0015))
    res_m = scene.resolution_m
    assert res_m is not None
    # 0.0015 degree at 40.3 N: ~127 m east-west, ~167 m north-south.
    assert 100 < res_m[0] < 150 and 150 < res_m[1] < 180
    footprint = scene.footprint
    assert footprint is not None
    assert footprint.bounds == pytest.approx((-106.0566, 40.0602, -105.3291, 40.6197), abs=1e-3)


def test_png_without_georeference_is_pixel_space(yell_path: Path) -> None:
    scene = open_scene(yell_path)
    assert not scene.georeferenced and scene.crs is None
    assert (scene.width, scene.height) == (1249, 1035)
    assert scene.resolution == (1.0, 1.0) and scene.resolution_m is None
    assert scene.footprint is None
    assert scene.mask_kind == "all_valid"
    grid = TileGrid(scene, 256, 0)
    assert (grid.n_rows, grid.n_cols) == (5, 5)
    assert len(grid.drop_empty()) == 25
    # Pixel space: x is the column, y the row.
    assert grid.geometries()[0].bounds == (0.0, 0.0, 256.0, 256.0)
    last = grid.geometries()[-1]
    assert last.bounds == (1024.0, 1024.0, 1249.0, 1035.0)
    with scene.open() as src:
        assert src.read(1, window=grid[24].read_window).shape == (11, 225)


# -- identity ------------------------------------------------------------------------------
def test_scene_id_stable_across_rename_and_copy(osbs_path: Path, tmp_path: Path) -> None:
    original = open_scene(osbs_path).id
    copied = shutil.copy(osbs_path, tmp_path / "renamed copy.tif")
    assert open_scene(copied).id == original
    moved = Path(copied).rename(tmp_path / "moved.tif")
    assert open_scene(moved).id == original
    assert open_scene(osbs_path).id == original


def test_scene_id_changes_when_pixels_change(osbs_path: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copy(osbs_path, tmp_path / "edited.tif"))
    with rasterio.open(copy, "r+") as ds:
        block = ds.read(window=Window(190, 190, 20, 20))
        ds.write(255 - block, window=Window(190, 190, 20, 20))
    assert open_scene(copy).id != open_scene(osbs_path).id


def test_scene_id_differs_between_scenes(osbs_path: Path, rmnp_path: Path, yell_path: Path) -> None:
    ids = {open_scene(p).id for p in (osbs_path, rmnp_path, yell_path)}
    assert len(ids) == 3


# -- sensors --------------------------------------------------------------------------------
def test_sentinel2_like_scene_detected(sentinel2_path: Path) -> None:
    scene = open_scene(sentinel2_path)
    assert scene.sensor == "sentinel2_l2a"
    assert scene.band_names == SENTINEL2_BANDS
    assert scene.acquired == datetime(2024, 1, 15, 5, 31, 21, tzinfo=UTC)
    assert scene.nodata == 0 and scene.mask_kind == "nodata"
    assert scene.common_name(4) == "red" and scene.common_name(8) == "nir"
    assert scene.band_index("nir") == 8
    assert scene.band_index("b8a") == 9
    assert scene.band_indexes(["red", "green", "blue"]) == [4, 3, 2]
    assert scene.band_indexes(None) == list(range(1, 14))
    assert scene.is_tiled and scene.block_shape == (32, 32)


def test_sentinel2_detected_from_tags_alone(tmp_path: Path) -> None:
    path = make_sentinel2_like(tmp_path / "s2_tags_only.tif", 32, 32, descriptions=None)
    scene = open_scene(path)
    assert scene.sensor == "sentinel2_l2a"
    assert scene.band_names == SENTINEL2_BANDS


def test_sentinel2_twelve_band_variant(tmp_path: Path) -> None:
    bands = tuple(b for b in SENTINEL2_BANDS if b != "B10")
    path = make_sentinel2_like(tmp_path / "s2_12.tif", 32, 32, count=12, descriptions=bands)
    scene = open_scene(path)
    assert scene.sensor == "sentinel2_l2a" and scene.band_names == bands
    assert scene.band_index("swir16") == bands.index("B11") + 1


def test_no_preset_guessed_from_band_count(make_scene: Callable[..., Path]) -> None:
    scene = open_scene(make_scene(32, 32, count=4, dtype="uint16"))
    assert scene.sensor is None
    assert scene.band_names == ("band1", "band2", "band3", "band4")
    assert scene.band_index("BAND3") == 3
    assert scene.common_name(1) is None


def test_sensor_override_names_bands(make_scene: Callable[..., Path]) -> None:
    scene = open_scene(make_scene(32, 32, count=4), sensor="naip_rgbn")
    assert scene.sensor == "naip_rgbn"
    assert scene.band_names == ("red", "green", "blue", "nir")
    assert scene.band_index("nir") == 4


def test_sensor_override_mismatch_is_a_clear_error(osbs_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"sentinel2_l2a.*expects 13 or 12 bands.*has 3"):
        open_scene(osbs_path, sensor="sentinel2_l2a")
    with pytest.raises(ConfigError, match=r"unknown sensor preset 'worldview'.*sentinel2_l2a"):
        open_scene(osbs_path, sensor="worldview")


def test_unknown_band_lists_the_scene_bands(osbs_path: Path) -> None:
    scene = open_scene(osbs_path)
    with pytest.raises(ConfigError, match=r"band 'nir' is not in this scene.*red, green, blue"):
        scene.band_indexes(["red", "nir"])
    with pytest.raises(ConfigError):
        scene.band_index("band4")


# -- reprojection ---------------------------------------------------------------------------
def test_reproject_to_new_resolution_same_crs(osbs_path: Path) -> None:
    scene = open_scene(osbs_path)
    coarse = scene.reproject(scene.crs, 0.2)
    assert coarse.crs == scene.crs and coarse.warp is not None
    assert coarse.resolution == pytest.approx((0.2, 0.2))
    # Target-aligned: the origin 404211.9 snaps to 404211.8, so one more column/row.
    assert coarse.transform.c == pytest.approx(404211.8)
    assert coarse.transform.f == pytest.approx(3285143.0)
    assert (coarse.width, coarse.height) == (201, 201)
    left, bottom, right, top = coarse.bounds
    s_left, s_bottom, s_right, s_top = scene.bounds
    assert left <= s_left and bottom <= s_bottom and right >= s_right and top >= s_top
    assert coarse.id == scene.id  # same source pixels, same identity
    with coarse.open() as src:
        data = src.read()
    with scene.open() as src:
        full = src.read()
    assert data.shape == (3, 201, 201)
    # Bilinear 2x downsampling keeps the picture: same band means over valid pixels.
    for band in range(3):
        coarse_px, full_px = data[band], full[band]
        coarse_mean = coarse_px[coarse_px != 255].mean()
        assert coarse_mean == pytest.approx(full_px[full_px != 255].mean(), abs=3)


def test_reproject_geographic_to_utm(rmnp_path: Path) -> None:
    scene = open_scene(rmnp_path)
    utm = scene.reproject("EPSG:32613", 100)
    assert utm.crs == CRS.from_epsg(32613)
    assert utm.resolution == (100.0, 100.0) and utm.resolution_m == (100.0, 100.0)
    # The park region is ~62 km x 62 km: about 620 x 630 pixels of 100 m.
    assert 600 < utm.width < 650 and 600 < utm.height < 650
    assert utm.transform.c % 100 == 0 and utm.transform.f % 100 == 0
    footprint, original = utm.footprint, scene.footprint
    assert footprint is not None and original is not None
    assert footprint.contains(original.buffer(-0.01))
    with utm.open() as src:
        data = src.read(1)
    assert data.shape == (utm.height, utm.width)
    # Corners outside the rotated source footprint are nodata; the centre is not.
    assert data[0, 0] == 255 and data[utm.height // 2, utm.width // 2] != 255


def test_reproject_without_resolution_keeps_pixel_count(osbs_path: Path) -> None:
    scene = open_scene(osbs_path)
    merc = scene.reproject(3857)
    assert merc.crs == CRS.from_epsg(3857)
    assert abs(merc.width - 400) < 10 and abs(merc.height - 400) < 10
    assert merc.resolution_m is not None and merc.resolution[0] > 0.1  # Mercator stretches


def test_two_scenes_share_pixel_lattice_after_reprojection(
    make_scene: Callable[..., Path],
) -> None:
    a = open_scene(make_scene(50, 40, origin=(500_003.7, 4_500_011.2), seed=1))
    b = open_scene(make_scene(60, 30, origin=(500_217.1, 4_499_703.9), seed=2))
    ra, rb = a.reproject("EPSG:32634", 20), b.reproject("EPSG:32634", 20)
    for scene in (ra, rb):
        assert scene.resolution == (20.0, 20.0)
        assert scene.transform.c / 20 == pytest.approx(round(scene.transform.c / 20), abs=1e-6)
        assert scene.transform.f / 20 == pytest.approx(round(scene.transform.f / 20), abs=1e-6)
    # Pixel (0, 0) of one scene falls on a whole pixel of the other.
    col, row = ~rb.transform @ (ra.transform.c, ra.transform.f)
    assert col == pytest.approx(round(col), abs=1e-6) and row == pytest.approx(round(row), abs=1e-6)


def test_reprojecting_twice_starts_from_the_file(rmnp_path: Path) -> None:
    scene = open_scene(rmnp_path)
    direct = scene.reproject("EPSG:32613", 200)
    twice = scene.reproject("EPSG:32613", 100).reproject("EPSG:32613", 200)
    assert twice.transform == direct.transform and twice.shape == direct.shape
    assert twice.source_crs == scene.crs


def test_reproject_errors(yell_path: Path, osbs_path: Path) -> None:
    with pytest.raises(InputError, match=r"no CRS"):
        open_scene(yell_path).reproject("EPSG:32617", 1.0)
    with pytest.raises(ConfigError, match=r"resolution must be positive"):
        open_scene(osbs_path).reproject("EPSG:32617", 0)
    with pytest.raises(ConfigError, match=r"not a coordinate reference system"):
        open_scene(osbs_path).reproject("EPSG:nope")


def test_reprojected_scene_without_nodata_masks_outside(make_scene: Callable[..., Path]) -> None:
    # Far from the UTM central meridian, so the grid turns in EPSG:4326.
    scene = open_scene(make_scene(64, 64, origin=(200_000.0, 6_500_000.0)))
    assert scene.mask_kind == "all_valid"
    rotated = scene.reproject("EPSG:4326")
    assert rotated.mask_kind == "mask"
    with rotated.open() as src:
        masks = src.read_masks(1)
    assert masks.min() == 0 and masks.max() == 255


# -- file layouts and bad files ---------------------------------------------------------------
def test_untiled_striped_file_tiles(make_scene: Callable[..., Path]) -> None:
    path = make_scene(300, 200, blocksize=None, compress=None, nodata=0, nodata_margin=70)
    scene = open_scene(path)
    assert not scene.is_tiled and scene.block_shape[1] == 300
    grid = TileGrid(scene, 64, 0)
    kept = grid.drop_empty(max_chunk_px=128)
    with rasterio.open(path) as ds:
        valid = (ds.read() != 0).all(axis=0)
    expected = [
        t.id for t in grid
        if valid[t.read_window.toslices()].any()
    ]  # fmt: skip
    assert [t.id for t in kept] == expected
    assert 0 < len(kept) < len(grid)


def test_tiled_file_reports_blocks(make_scene: Callable[..., Path]) -> None:
    scene = open_scene(make_scene(200, 200, blocksize=64))
    assert scene.is_tiled and scene.block_shape == (64, 64)


def test_truncated_tiff_fails_cleanly_at_open(osbs_path: Path, tmp_path: Path) -> None:
    data = osbs_path.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"truncated or corrupt|cannot open"):
        open_scene(cut)


def test_corrupt_block_fails_cleanly_when_read(make_scene: Callable[..., Path]) -> None:
    path = make_scene(512, 512, blocksize=64, nodata=0)
    with rasterio.open(path) as ds:
        offset = int(ds.get_tag_item("BLOCK_OFFSET_1_1", "TIFF", bidx=1))
        size = int(ds.get_tag_item("BLOCK_SIZE_1_1", "TIFF", bidx=1))
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(bytes(range(256)) * (size // 256 + 1))
    scene = open_scene(path)  # the block is not among the sampled ones
    with pytest.raises(InputError, match=r"pixel data cannot be read.*IReadBlock"):
        TileGrid(scene, 128).drop_empty()


def test_missing_folder_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"file not found"):
        open_scene(tmp_path / "nope.tif")
    with pytest.raises(InputError, match=r"is a folder"):
        open_scene(tmp_path)
    empty = tmp_path / "empty.tif"
    empty.touch()
    with pytest.raises(InputError, match=r"empty"):
        open_scene(empty)
    text = tmp_path / "notes.tif"
    text.write_text("not an image\n")
    with pytest.raises(InputError, match=r"cannot open as a raster"):
        open_scene(text)


def test_complex_dtype_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "slc.tif"
    transform = Affine(10, 0, 500_000, 0, -10, 4_500_000)
    profile = {"driver": "GTiff", "width": 16, "height": 16, "count": 1, "dtype": "complex64",
               "crs": "EPSG:32633", "transform": transform}  # fmt: skip
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(np.ones((1, 16, 16), dtype=np.complex64))
    with pytest.raises(InputError, match=r"unsupported pixel type complex64.*amplitude"):
        open_scene(path)


@pytest.mark.parametrize(
    "vrt",
    [
        '<VRTDataset rasterXSize="10" rasterYSize="10"></VRTDataset>',
        '<VRTDataset rasterXSize="0" rasterYSize="0">'
        '<VRTRasterBand dataType="Byte" band="1"></VRTRasterBand></VRTDataset>',
    ],
    ids=["zero-bands", "zero-size"],
)
def test_zero_band_or_zero_size_raster(vrt: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.vrt"
    path.write_text(vrt)
    # GDAL itself refuses these; the error must still be ours, naming the file.
    with pytest.raises(InputError) as err:
        open_scene(path)
    assert err.value.where == str(path)


# -- helpers ----------------------------------------------------------------------------------
def test_parse_crs_forms() -> None:
    assert parse_crs("EPSG:32633") == CRS.from_epsg(32633)
    assert parse_crs(4326) == CRS.from_epsg(4326)
    assert parse_crs("32617") == CRS.from_epsg(32617)
    assert parse_crs(CRS.from_epsg(3857).to_wkt()) == CRS.from_epsg(3857)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-15T05:31:21Z", datetime(2024, 1, 15, 5, 31, 21, tzinfo=UTC)),
        ("2024:01:15 05:31:21", datetime(2024, 1, 15, 5, 31, 21, tzinfo=UTC)),
        ("20240115", datetime(2024, 1, 15, tzinfo=UTC)),
        ("not a date", None),
    ],
)
def test_parse_datetime(text: str, expected: datetime | None) -> None:
    assert parse_datetime(text) == expected


def test_resolution_m_in_feet(make_scene: Callable[..., Path]) -> None:
    scene = open_scene(make_scene(16, 16, crs="EPSG:2263", resolution=10.0,
                                  origin=(980_000.0, 200_000.0)))  # fmt: skip
    assert scene.resolution_m is not None
    assert scene.resolution_m[0] == pytest.approx(3.048, rel=1e-4)
    assert math.isclose(scene.resolution[0], 10.0)


def test_rgba_file_is_rgb_plus_alpha(make_scene: Callable[..., Path]) -> None:
    # GDAL writes 4-band uint8 GeoTIFFs as RGBA: the alpha band is a mask, not data.
    scene = open_scene(make_scene(32, 32, count=4))
    assert scene.sensor == "rgb"
    assert scene.band_names == ("red", "green", "blue", "alpha")
    assert scene.mask_kind == "mask"
    assert scene.band_indexes(["red", "green", "blue"]) == [1, 2, 3]
