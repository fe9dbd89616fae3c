"""Preprocessing runtime: band resolution, indices, normalisation and statistics."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
from pydantic import ValidationError
from rasterio.enums import Resampling

from geoscreen.errors import ConfigError, InputError
from geoscreen.imagery.preprocess import (
    NormalizationConfig,
    PreprocessConfig,
    ScenePreprocessor,
    estimate_percentiles,
)
from geoscreen.imagery.scene import Scene, open_scene


def _config(method: str = "percentile", **options: object) -> PreprocessConfig:
    bands = options.pop("bands", None)
    indices = options.pop("indices", [])
    return PreprocessConfig.model_validate(
        {"bands": bands, "indices": indices, "normalization": {"method": method, **options}}
    )


def _read_all(scene: Scene, indexes: tuple[int, ...]) -> np.ndarray:
    with rasterio.open(scene.uri) as src:
        return src.read(list(indexes))


def _valid(raw: np.ndarray, nodata: float | None) -> np.ndarray:
    """GDAL's rule: nodata only where every band holds the nodata value."""
    return np.ones(raw.shape[1:], bool) if nodata is None else ~(raw == nodata).all(axis=0)


# -- band resolution ---------------------------------------------------------------------
def test_sentinel2_bands_and_ndvi_read_indexes(sentinel2_path: Path) -> None:
    scene = open_scene(sentinel2_path)
    pre = ScenePreprocessor.build(
        _config(bands=["red", "green", "blue"], indices=["ndvi", "ndbi"]), scene
    )
    # red, green, blue = B04, B03, B02; NDVI adds nir (B08); NDBI adds swir16 (B11), no repeats.
    assert pre.read_indexes == (4, 3, 2, 8, 12)
    assert pre.channel_names == ("B04", "B03", "B02", "ndvi", "ndbi")
    assert pre.out_channels == 5


def test_duplicate_band_read_once(sentinel2_path: Path) -> None:
    scene = open_scene(sentinel2_path)
    pre = ScenePreprocessor.build(_config("dtype_range", bands=["nir", "red", "nir"]), scene)
    assert pre.read_indexes == (8, 4)
    raw = _read_all(scene, pre.read_indexes)
    out = pre.apply(raw, np.ones(raw.shape[1:], bool))
    np.testing.assert_array_equal(out[0], out[2])


def test_index_without_its_band_is_a_config_error(osbs_path: Path) -> None:
    scene = open_scene(osbs_path)  # RGB only
    with pytest.raises(ConfigError, match="ndvi needs a 'nir' band") as err:
        ScenePreprocessor.build(_config(indices=["ndvi"]), scene)
    assert err.value.fix and "red, green, blue" in err.value.fix


# -- indices -----------------------------------------------------------------------------
def test_ndvi_matches_formula_and_range(sentinel2_path: Path) -> None:
    scene = open_scene(sentinel2_path)
    pre = ScenePreprocessor.build(_config("dtype_range", bands=["red"], indices=["ndvi"]), scene)
    raw = _read_all(scene, pre.read_indexes)
    valid = _valid(raw, scene.nodata)
    out = pre.apply(raw, valid)
    nir, red = raw[1].astype(np.float64), raw[0].astype(np.float64)
    with np.errstate(invalid="ignore"):
        expected = ((nir - red) / (nir + red) + 1) / 2
    np.testing.assert_allclose(out[1][valid], expected[valid], atol=1e-6)
    assert out[1].min() >= 0 and out[1].max() <= 1
    assert (out[:, ~valid] == 0).all()
    np.testing.assert_allclose(out[0][valid], red[valid] / 65535, rtol=1e-6)


def test_index_meanstd_and_zero_denominator() -> None:
    pre = ScenePreprocessor(
        scene_id="x",
        read_indexes=(1, 2),
        channel_names=("ndvi",),
        band_positions=(),
        index_positions=((1, 0),),
        offset=np.array([0.0], np.float32),
        scale=np.array([1.0], np.float32),
        clip=False,
    )
    raw = np.array([[[1, 0, 3]], [[3, 0, 1]]], dtype=np.uint16)  # red, nir
    out = pre.apply(raw, np.ones((1, 3), bool))
    np.testing.assert_allclose(out[0, 0], [0.5, 0.0, -0.5])


# -- normalisation -----------------------------------------------------------------------
def test_percentile_stats_ignore_nodata(sentinel2_path: Path) -> None:
    scene = open_scene(sentinel2_path)  # nodata 0 on a 12-pixel margin
    stats = estimate_percentiles(scene, [2, 8], (0.0, 2.0, 100.0))
    raw = _read_all(scene, (2, 8))
    valid = _valid(raw, 0)
    assert (~valid).sum() > 0
    for k in range(2):
        values = raw[k][valid]
        np.testing.assert_allclose(stats[k], np.percentile(values, [0, 2, 100]))
    assert (stats[:, 0] > 0).all()  # the nodata zeros were not counted


def test_percentile_normalisation_stretches_and_clips(rgb_path: Path) -> None:
    scene = open_scene(rgb_path)
    pre = ScenePreprocessor.build(_config("percentile", percentiles=(5.0, 95.0)), scene)
    raw = _read_all(scene, pre.read_indexes)
    valid = _valid(raw, scene.nodata)
    out = pre.apply(raw, valid)
    lo, hi = np.percentile(raw[0][valid], [5, 95])
    expected = np.clip((raw[0].astype(np.float64) - lo) / (hi - lo), 0, 1)
    np.testing.assert_allclose(out[0][valid], expected[valid], atol=1e-5)
    assert out.min() == 0 and out.max() == 1
    assert (out[:, ~valid] == 0).all()


def test_percentile_from_overviews_close_to_full(make_scene: Callable[..., Path]) -> None:
    path = make_scene(1024, 1024, count=2, dtype="uint16", nodata=0, nodata_margin=100)
    with rasterio.open(path, "r+") as dst:
        dst.build_overviews([2, 4, 8], Resampling.nearest)
    scene = open_scene(path)
    assert scene.overview_count == 3
    sampled = estimate_percentiles(scene, [1, 2], (2.0, 50.0, 98.0), max_pixels=20_000)
    raw = _read_all(scene, (1, 2))
    valid = _valid(raw, 0)
    full = np.stack([np.percentile(raw[k][valid], [2, 50, 98]) for k in range(2)])
    span = full[:, 2] - full[:, 0]
    assert np.all(np.abs(sampled - full) <= 0.05 * span[:, None])


def test_percentile_window_sampling_without_overviews(make_scene: Callable[..., Path]) -> None:
    path = make_scene(1024, 1024, count=1, nodata=0, nodata_margin=64, blocksize=128)
    scene = open_scene(path)
    assert scene.overview_count == 0
    sampled = estimate_percentiles(scene, [1], (2.0, 50.0, 98.0), max_pixels=16_384)
    raw = _read_all(scene, (1,))
    full = np.percentile(raw[0][raw[0] != 0], [2, 50, 98])
    assert np.all(np.abs(sampled[0] - full) <= 0.08 * (full[2] - full[0]))
    assert sampled[0, 0] > 0


def test_no_valid_pixels_is_an_input_error(make_scene: Callable[..., Path]) -> None:
    path = make_scene(32, 32, nodata=0, nodata_margin=32)
    with pytest.raises(InputError, match="no valid pixels"):
        ScenePreprocessor.build(_config("percentile"), open_scene(path))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"percentiles": (90.0, 10.0)}, "percentiles must satisfy 0 <= low < high <= 100"),
        ({"method": "meanstd", "mean": [0.5] * 3, "std": [0.2, 0.0, 0.2]}, "must all be positive"),
        ({"method": "meanstd", "mean": [0.5] * 3, "std": [0.2]}, "mean has 3 values but std has 1"),
        ({"method": "meanstd", "mean": [float("inf")], "std": [1.0]}, "finite"),
    ],
)
def test_bad_normalization_is_refused_when_read(options: dict[str, object], message: str) -> None:
    """Before any scene is opened: a profile with them fails 'profile validate'."""
    with pytest.raises(ValidationError, match=message):
        NormalizationConfig.model_validate(options)


def test_meanstd_with_scale(sentinel2_path: Path) -> None:
    scene = open_scene(sentinel2_path)
    config = _config(
        "meanstd", bands=["red", "nir"], indices=["ndvi"],
        mean=[0.15, 0.3, 0.2], std=[0.05, 0.1, 0.5], scale=1e-4,
    )  # fmt: skip
    pre = ScenePreprocessor.build(config, scene)
    raw = _read_all(scene, pre.read_indexes)
    valid = _valid(raw, 0)
    out = pre.apply(raw, valid)
    red, nir = raw[0][valid].astype(np.float64), raw[1][valid].astype(np.float64)
    np.testing.assert_allclose(out[0][valid], (red * 1e-4 - 0.15) / 0.05, atol=1e-3)
    ndvi = (nir - red) / (nir + red)
    np.testing.assert_allclose(out[2][valid], (ndvi - 0.2) / 0.5, atol=1e-4)
    assert out[0].min() < 0  # meanstd is never clipped
    assert (out[:, ~valid] == 0).all()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "needs both mean and std"),
        ({"mean": [0.5, 0.5], "std": [0.2, 0.2]}, "2 mean and 2 std values for 3"),
    ],
)
def test_meanstd_errors(osbs_path: Path, options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        ScenePreprocessor.build(_config("meanstd", **options), open_scene(osbs_path))
    assert err.value.fix and "red, green, blue" in err.value.fix


def test_dtype_range_uint8_and_nodata_zeroed(rmnp_path: Path) -> None:
    scene = open_scene(rmnp_path)  # EPSG:4326, nodata 255
    pre = ScenePreprocessor.build(_config("dtype_range"), scene)
    assert not pre.clip  # uint8 / 255 cannot leave [0, 1]
    raw = _read_all(scene, pre.read_indexes)
    valid = _valid(raw, 255)
    assert 0 < valid.sum() < valid.size
    out = pre.apply(raw, valid)
    assert out.dtype == np.float32 and out.shape == raw.shape
    np.testing.assert_allclose(out[:, valid], raw[:, valid] / 255.0, rtol=1e-6)
    assert (out[:, ~valid] == 0).all()


def test_reprojected_scene_uses_source_statistics(rmnp_path: Path) -> None:
    scene = open_scene(rmnp_path)
    warped = scene.reproject("EPSG:3857")
    direct = ScenePreprocessor.build(_config(), scene)
    via_warp = ScenePreprocessor.build(_config(), warped)
    np.testing.assert_array_equal(direct.offset, via_warp.offset)
    np.testing.assert_array_equal(direct.scale, via_warp.scale)


def test_apply_writes_into_out_and_checks_shapes(osbs_path: Path) -> None:
    scene = open_scene(osbs_path)
    pre = ScenePreprocessor.build(_config("dtype_range"), scene)
    raw = _read_all(scene, pre.read_indexes)[:, :64, :64]
    valid = np.ones((64, 64), bool)
    target = np.full((3, 80, 80), -1.0, np.float32)
    returned = pre.apply(raw, valid, out=target[:, 8:72, 8:72])
    assert np.shares_memory(returned, target)
    np.testing.assert_allclose(target[:, 8:72, 8:72], raw / 255.0, rtol=1e-6)
    assert (target[:, :8] == -1).all()
    with pytest.raises(ValueError, match="raw bands"):
        pre.apply(raw[:2], valid)
    with pytest.raises(ValueError, match="out must be"):
        pre.apply(raw, valid, out=np.empty((3, 64, 64), np.float64))


def test_preprocessor_pickles(sentinel2_path: Path) -> None:
    scene = open_scene(sentinel2_path)
    pre = ScenePreprocessor.build(_config(indices=["ndwi"]), scene)
    copy = pickle.loads(pickle.dumps(pre))
    raw = _read_all(scene, pre.read_indexes)
    valid = _valid(raw, 0)
    np.testing.assert_array_equal(pre.apply(raw, valid), copy.apply(raw, valid))


def test_normalization_config_forbids_unknown_fields() -> None:
    with pytest.raises(ValueError, match="extra"):
        NormalizationConfig.model_validate({"method": "percentile", "low": 2})
