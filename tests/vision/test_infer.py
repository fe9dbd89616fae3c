"""Screening: score maps on a generated scene and on real NEON imagery, and their files."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
import torch
from affine import Affine

from geoscreen.errors import ConfigError, InputError
from geoscreen.imagery.dataset import TileDataset
from geoscreen.imagery.preprocess import ScenePreprocessor
from geoscreen.imagery.scene import open_scene
from geoscreen.profiles import Profile, load_profile
from geoscreen.samples import make_sentinel2_like, make_synthetic_scene
from geoscreen.vision.classifier import LoadedModel, load_model
from geoscreen.vision.infer import (
    READER_THREAD,
    ScreenOptions,
    auto_workers,
    check_model_fits,
    read_in_thread,
    screen_scene,
)
from geoscreen.vision.scoremap import EMBEDDINGS_FILE, RASTER_FILE, TILES_FILE, ScoreMap
from geoscreen.vision.train import TrainOptions, train_classifier

PROFILE = Path(__file__).resolve().parents[2] / "geoscreen" / "configs" / "tree_crowns_neon.yaml"
CPU0 = ScreenOptions(num_workers=0, device="cpu")


@pytest.fixture(scope="module")
def profile() -> Profile:
    return load_profile(PROFILE)


@pytest.fixture(scope="module")
def loaded(
    profile: Profile,
    osbs_path: Path,
    osbs_labels_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> LoadedModel:
    """The tree-crown linear probe trained on OSBS_029 (seed 0)."""
    out = tmp_path_factory.mktemp("model")
    train_classifier(profile, [osbs_labels_path], [osbs_path], out, TrainOptions(device="cpu"))
    return load_model(out)


@pytest.fixture(scope="module")
def small_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 x 150 RGB at 0.1 m (the profile's resolution), nodata 0 on a 70 px left/top band."""
    return make_synthetic_scene(
        tmp_path_factory.mktemp("small") / "small.tif",
        200,
        150,
        crs="EPSG:32617",
        resolution=0.1,
        nodata=0,
        nodata_margin=70,
        structures=6,
        blocksize=64,
    )


def tile_probabilities(loaded: LoadedModel, profile: Profile, scores: ScoreMap) -> np.ndarray:
    """Each tile read on its own and scored without the screening loop."""
    pre = ScenePreprocessor.build(profile.preprocess, scores.grid.scene)
    dataset = TileDataset(scores.grid, pre)
    images = torch.stack([dataset[i]["image"] for i in range(len(dataset))])
    with torch.inference_mode():
        return torch.sigmoid(loaded.model.eval()(images)).numpy()


def test_generated_scene(loaded: LoadedModel, profile: Profile, small_path: Path) -> None:
    scene = open_scene(small_path, sensor="rgb")
    scores = screen_scene(loaded.model, profile, scene, CPU0)
    grid = scores.grid
    # 64 px tiles, stride 48: 3 x 4; the 70 px nodata band fills every tile of row 0 and col 0.
    assert (grid.n_rows, grid.n_cols) == (3, 4)
    assert len(grid) == 6
    assert grid.rows.min() == 1 and grid.cols.min() == 1
    flat = grid.rows * grid.n_cols + grid.cols
    assert np.all(np.diff(flat) > 0), "tiles are in grid (row-major) order"
    assert scores.scores.shape == (6,) and scores.scores.dtype == np.float32
    assert np.all((scores.scores >= 0) & (scores.scores <= 1))
    # Tile r1c1 covers rows/cols 48..112; valid from 70: (112 - 70)^2 / 64^2.
    first = grid.tile_at(1, 1)
    assert (grid[0].row, grid[0].col) == (first.row, first.col)
    assert scores.valid_fraction[0] == pytest.approx((42 / 64) ** 2)
    assert scores.embeddings is None
    # Each score is the model's score of that very tile.
    np.testing.assert_allclose(
        scores.scores, tile_probabilities(loaded, profile, scores), atol=1e-5
    )


def test_deterministic_and_workers_agree(
    loaded: LoadedModel, profile: Profile, osbs_path: Path
) -> None:
    scene = open_scene(osbs_path, sensor="rgb")
    first = screen_scene(loaded.model, profile, scene, CPU0)
    second = screen_scene(loaded.model, profile, scene, CPU0)
    assert np.array_equal(first.scores, second.scores)
    with_worker = screen_scene(
        loaded.model, profile, scene, ScreenOptions(num_workers=1, device="cpu", batch_size=7)
    )
    assert np.array_equal(first.grid.rows, with_worker.grid.rows)
    assert np.array_equal(first.grid.cols, with_worker.grid.cols)
    # Another batch size changes float summation order: equal to float32 rounding, not bitwise.
    np.testing.assert_allclose(first.scores, with_worker.scores, atol=1e-5)
    assert np.array_equal(first.valid_fraction, with_worker.valid_fraction)
    # The default on CPU reads in one thread (num_workers 0).
    assert auto_workers(torch.device("cpu")) == 0 and auto_workers(torch.device("cuda")) == 1
    default = screen_scene(loaded.model, profile, scene, ScreenOptions(device="cpu"))
    assert np.array_equal(first.scores, default.scores)


@pytest.mark.parametrize("ahead", [0, 2])
def test_read_in_thread_order_errors_and_close(ahead: int) -> None:
    assert list(read_in_thread(iter(range(100)), ahead)) == list(range(100))
    threads: set[int] = set()

    def produce() -> Iterator[int]:
        for i in range(3):
            threads.add(threading.get_ident())
            yield i
        raise InputError("unreadable block", where="scene.tif")

    got = []
    with pytest.raises(InputError, match="unreadable block"):
        for item in read_in_thread(produce(), ahead):
            got.append(item)
    assert got == [0, 1, 2] and len(threads) == 1 and threading.get_ident() not in threads
    # Closing early stops the reader thread, even over an endless source.
    pulled: list[int] = []
    endless = read_in_thread((pulled.append(i) or i for i in itertools.count()), ahead)
    assert [next(endless) for _ in range(5)] == [0, 1, 2, 3, 4]
    endless.close()
    assert not [t for t in threading.enumerate() if t.name.startswith(READER_THREAD)]
    # Phased reading (the CPU default) reads only what was asked for; ahead=k, up to k more.
    assert len(pulled) == 5 if ahead == 0 else 5 <= len(pulled) <= 5 + ahead


def test_written_files_on_real_scene(
    loaded: LoadedModel, profile: Profile, osbs_path: Path, tmp_path: Path
) -> None:
    scene = open_scene(osbs_path, sensor="rgb")
    meta = {"profile": profile.name, "run_id": "abc123"}
    scores = screen_scene(
        loaded.model, profile, scene, ScreenOptions(device="cpu", embeddings=True), meta=meta
    )
    grid = scores.grid
    assert len(grid) == 64  # 400 px: 8 x 8 tiles of 64 px at stride 48
    files = scores.write(tmp_path, raster="footprint")
    assert files == {
        "tiles": tmp_path / TILES_FILE,
        "raster": tmp_path / RASTER_FILE,
        "embeddings": tmp_path / EMBEDDINGS_FILE,
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in files.values())

    # tiles.parquet: GeoParquet in the scene's CRS, one row per tile in grid order.
    frame = gpd.read_parquet(files["tiles"])
    assert frame.crs.to_epsg() == 32617
    assert frame["tile_id"].tolist() == [t.id for t in grid]
    assert np.array_equal(frame["score"].to_numpy(), scores.scores)
    assert (frame["profile"] == profile.name).all() and (frame["run_id"] == "abc123").all()
    assert shapely.equals(frame.geometry.values, grid.geometries()).all()
    assert frame.geometry.total_bounds == pytest.approx(scene.bounds)

    # scores.tif: a Cloud-Optimized GeoTIFF; with raster="footprint", each cell the mean of
    # the tiles covering it (the default, centres interpolated: test_scoremap_raster.py).
    with rasterio.open(files["raster"]) as ds:
        assert ds.driver == "GTiff"
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert ds.profile["tiled"] is True
        assert ds.crs.to_epsg() == 32617
        assert ds.transform == scene.transform * Affine.scale(16)  # gcd(64, 48) px cells
        assert ds.descriptions == ("score",) and ds.tags()["run_id"] == "abc123"
        assert np.isnan(ds.nodata)
        raster = ds.read(1)
    assert raster.shape == (25, 25)
    r0, c0 = grid.rows * grid.stride, grid.cols * grid.stride
    for i in range(raster.shape[0]):
        for j in range(raster.shape[1]):
            y, x = i * 16 + 8, j * 16 + 8
            covering = (r0 <= y) & (y < r0 + 64) & (c0 <= x) & (x < c0 + 64)
            assert raster[i, j] == pytest.approx(scores.scores[covering].mean(), abs=1e-6)

    # embeddings.npy: float16 model features, rows aligned with tiles.parquet.
    emb = np.load(files["embeddings"])
    width = loaded.model.features(torch.zeros(1, 3, 64, 64)).shape[1]
    assert emb.dtype == np.float16 and emb.shape == (64, width)
    pre = ScenePreprocessor.build(profile.preprocess, scene)
    dataset = TileDataset(grid, pre)
    for i in (0, 17, 63):
        with torch.inference_mode():
            feats = loaded.model.features(dataset[i]["image"][None])[0].numpy()
        np.testing.assert_allclose(emb[i].astype(np.float32), feats, rtol=1e-2, atol=1e-2)


def test_aoi_limits_tiles(loaded: LoadedModel, profile: Profile, osbs_path: Path) -> None:
    scene = open_scene(osbs_path, sensor="rgb")
    left, _bottom, _right, top = scene.bounds
    aoi = shapely.box(left, top - 5.0, left + 5.0, top)  # the top-left 5 m (50 px)
    scores = screen_scene(loaded.model, profile, scene, CPU0, aoi=aoi)
    assert len(scores.grid) == 4  # tiles starting at 0 and 48 px on each axis
    assert set(zip(scores.grid.rows, scores.grid.cols, strict=True)) == {
        (0, 0),
        (0, 1),
        (1, 0),
        (1, 1),
    }


def test_model_from_another_profile_refused(
    loaded: LoadedModel, profile: Profile, osbs_path: Path
) -> None:
    scene = open_scene(osbs_path, sensor="rgb")
    check_model_fits(loaded, profile, scene)
    other = profile.model_copy(update={"name": "other_profile"})
    with pytest.raises(ConfigError, match="trained for profile 'tree_crowns_neon'"):
        check_model_fits(loaded, other, scene)
    data = profile.model_dump()
    data["preprocess"]["normalization"]["method"] = "percentile"
    with pytest.raises(ConfigError, match="preprocessing differs"):
        check_model_fits(loaded, Profile.model_validate(data), scene)
    data = profile.model_dump()
    data["tiling"] = {"tile_size": 128, "overlap": 0}
    with pytest.raises(ConfigError, match="trained on 64 px tiles"):
        check_model_fits(loaded, Profile.model_validate(data), scene)


def test_scenes_that_do_not_fit_refused(
    loaded: LoadedModel, profile: Profile, tmp_path: Path
) -> None:
    s2 = make_sentinel2_like(tmp_path / "s2.tif", 96, 80)
    # With the profile's sensor preset, the 13-band file is refused when opened...
    with pytest.raises(ConfigError, match="expects 3 bands but the file has 13"):
        open_scene(s2, sensor=profile.imagery.sensor)
    # ...and read as Sentinel-2, its red/green/blue are 10 m, not the profile's 0.1 m.
    with pytest.raises(ConfigError, match=r"pixel size 10 x 10 m is outside .* 0\.1-0\.1 m"):
        check_model_fits(loaded, profile, open_scene(s2))
    grey = make_synthetic_scene(tmp_path / "grey.tif", 64, 64, count=1, resolution=0.1)
    with pytest.raises(ConfigError, match="lacks band"):
        check_model_fits(loaded, profile, open_scene(grey))


def test_cuda_without_gpu(loaded: LoadedModel, profile: Profile, osbs_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    scene = open_scene(osbs_path, sensor="rgb")
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        screen_scene(loaded.model, profile, scene, ScreenOptions(device="cuda"))


def test_aoi_on_pixel_space_scene_refused(
    loaded: LoadedModel, profile: Profile, yell_path: Path
) -> None:
    scene = open_scene(yell_path, sensor="rgb")
    with pytest.raises(InputError):
        screen_scene(loaded.model, profile, scene, CPU0, aoi=shapely.box(0, 0, 10, 10))
