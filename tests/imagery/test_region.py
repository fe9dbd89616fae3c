"""Training region: footprint in EPSG:4326 and band statistics, and the warnings for a
scene far from it or unlike it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
from pyproj import Geod
from shapely.geometry import Polygon

from geoscreen.errors import ConfigError
from geoscreen.imagery.region import (
    TrainingRegion,
    band_stats,
    distance_km,
    region_warnings,
    training_region,
)
from geoscreen.imagery.scene import open_scene


def test_same_scene_is_not_warned_and_far_scene_is(osbs_path: Path, rmnp_path: Path) -> None:
    osbs, rmnp = open_scene(osbs_path), open_scene(rmnp_path)
    region = training_region([osbs])
    assert region.footprint is not None and region.footprint.equals(osbs.footprint)
    assert set(region.stats) == set(osbs.band_names)
    assert region_warnings(region, osbs) == []
    here, there = osbs.footprint, rmnp.footprint
    assert here is not None and there is not None
    far = distance_km(there, region.footprint)
    geod = Geod(ellps="WGS84")
    a, b = there.centroid, here.centroid
    centres = geod.inv(a.x, a.y, b.x, b.y)[2] / 1000

    def radius(poly: Polygon) -> float:  # centre to farthest corner, km
        c = poly.centroid
        return max(geod.inv(c.x, c.y, x, y)[2] for x, y in poly.exterior.coords) / 1000

    # Nearest edges: between the centres' distance less both scenes' radii and that distance.
    assert centres - radius(there) - radius(here) <= far < centres
    assert far > 2000  # Florida to Colorado
    warnings = region_warnings(region, rmnp, far_km=100)
    assert any(f"{far:,.0f} km from where the model was trained" in w for w in warnings)
    assert region_warnings(region, rmnp, far_km=far + 1, max_shift=1e9) == []


def test_band_shift_is_warned(make_scene: Callable[..., Path], tmp_path: Path) -> None:
    train = open_scene(make_scene(64, 64, name="train.tif", seed=1))
    region = training_region([train])
    bright = tmp_path / "bright.tif"
    with rasterio.open(train.uri) as src:
        profile, data = src.profile, src.read()
    with rasterio.open(bright, "w", **profile) as dst:
        dst.write(np.clip(data.astype(np.int32) + 120, 0, 255).astype(data.dtype))
    warnings = region_warnings(region, open_scene(bright), far_km=1)
    assert len(warnings) == len(train.band_names)
    assert all("training standard deviations from the training mean" in w for w in warnings)
    assert region_warnings(region, open_scene(bright), max_shift=1e6) == []


def test_pooled_statistics_are_those_of_all_pixels(make_scene: Callable[..., Path]) -> None:
    scenes = [open_scene(make_scene(40, 30, name=f"s{i}.tif", seed=i)) for i in range(2)]
    region = training_region(scenes)
    for i, name in enumerate(scenes[0].band_names):
        pixels = []
        for scene in scenes:
            with rasterio.open(scene.uri) as src:
                pixels.append(src.read(i + 1).astype(np.float64).ravel())
        values = np.concatenate(pixels)
        stats = region.stats[name]
        assert stats.count == values.size
        assert stats.mean == pytest.approx(values.mean(), rel=1e-9)
        assert stats.std == pytest.approx(values.std(), rel=1e-9)
    assert band_stats(scenes[0], max_side=10)[scenes[0].band_names[0]].count <= 100


def test_record_round_trip_and_malformed(osbs_path: Path, yell_path: Path) -> None:
    region = training_region([open_scene(osbs_path)])
    again = TrainingRegion.from_dict(json.loads(json.dumps(region.to_dict())))
    assert again.footprint is not None and region.footprint is not None
    assert again.footprint.equals(region.footprint) and again.stats == region.stats
    pixel = training_region([open_scene(yell_path)])  # no georeference: no footprint
    assert pixel.footprint is None and region_warnings(pixel, open_scene(yell_path)) == []
    with pytest.raises(ConfigError, match="malformed"):
        TrainingRegion.from_dict({"band_stats": {"red": {"mean": 1.0}}})
    with pytest.raises(ConfigError, match="positive"):
        region_warnings(region, open_scene(osbs_path), far_km=0)
