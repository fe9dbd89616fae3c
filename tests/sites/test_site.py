"""The site table: schema, GeoParquet/GPKG round trips, Site objects, areas in m^2."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from geoscreen.errors import InputError
from geoscreen.imagery.scene import Scene
from geoscreen.profiles import Profile
from geoscreen.sites.extract import extract_sites
from geoscreen.sites.site import (
    SITE_COLUMNS,
    area_m2,
    empty_sites,
    read_sites,
    utm_epsg,
    write_sites,
)
from geoscreen.vision.scoremap import ScoreMap


@pytest.fixture
def sites(utm_scene: Scene, make_profile: Callable[..., Profile],
          make_scores: Callable[..., ScoreMap]) -> gpd.GeoDataFrame:  # fmt: skip
    scores = make_scores(
        utm_scene, 32, 0, [(0, 0), (2, 2), (2, 3)], meta={"model_sha256": "f" * 64}
    )
    return extract_sites(scores, make_profile(), acquired=datetime(2024, 1, 2, tzinfo=UTC))


@pytest.mark.parametrize("suffix", [".parquet", ".gpkg"])
def test_round_trip_keeps_schema_and_values(
    tmp_path: Path, sites: gpd.GeoDataFrame, suffix: str
) -> None:
    path = write_sites(sites, tmp_path / f"sites{suffix}")
    back = read_sites(path)
    assert list(back.columns) == [*SITE_COLUMNS, "geometry"]
    assert back.crs.to_epsg() == 4326
    assert back.dtypes.to_dict() == sites.dtypes.to_dict()
    pd.testing.assert_frame_equal(
        pd.DataFrame(back.drop(columns="geometry")), pd.DataFrame(sites.drop(columns="geometry"))
    )
    for a, b in zip(back.geometry, sites.geometry, strict=True):
        assert a.equals_exact(b, tolerance=1e-9)


@pytest.mark.parametrize("suffix", [".parquet", ".gpkg"])
def test_pixel_space_round_trip(tmp_path: Path, suffix: str) -> None:
    frame = gpd.GeoDataFrame(
        {"site_id": ["a"], "score_max": [0.7], "profile": ["p"]},
        geometry=[shapely.box(0, 0, 64, 64)],
        crs=None,
    )
    back = read_sites(write_sites(frame, tmp_path / f"px{suffix}"))
    assert back.crs is None
    assert back.geometry.iloc[0].equals(shapely.box(0, 0, 64, 64))
    assert back["detections"].iloc[0] == 1 and back["area_unit"].iloc[0] == "px2"


def test_empty_table_is_typed(tmp_path: Path) -> None:
    back = read_sites(write_sites(empty_sites(), tmp_path / "none.parquet"))
    assert len(back) == 0 and list(back.columns) == [*SITE_COLUMNS, "geometry"]
    assert str(back["first_seen"].dtype) == "datetime64[ms, UTC]"


def test_bad_files(tmp_path: Path, sites: gpd.GeoDataFrame) -> None:
    with pytest.raises(InputError, match=r"\.parquet"):
        write_sites(sites, tmp_path / "sites.csv")
    with pytest.raises(InputError, match="not found"):
        read_sites(tmp_path / "missing.parquet")
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(InputError, match="cannot read"):
        read_sites(tmp_path / "junk.parquet")
    gpd.GeoDataFrame({"x": [1]}, geometry=[shapely.Point(0, 0)], crs=4326).to_parquet(
        tmp_path / "other.parquet"
    )
    with pytest.raises(InputError, match="site_id"):
        read_sites(tmp_path / "other.parquet")
    assert not (tmp_path / "sites.csv").exists()


def test_utm_zones() -> None:
    codes = utm_epsg(np.array([15.0, -80.0, 179.9, 10.0, 10.0]),
                     np.array([40.0, -10.0, 0.0, 85.0, -81.0]))  # fmt: skip
    assert codes.tolist() == [32633, 32717, 32660, 32661, 32761]


def test_area_in_metres_from_lon_lat() -> None:
    # 100 m squares in two far-apart UTM zones, stored in EPSG:4326.
    a = gpd.GeoSeries([shapely.box(500_000, 4_500_000, 500_100, 4_500_100)], crs=32633)
    b = gpd.GeoSeries([shapely.box(300_000, 6_000_000, 300_100, 6_000_100)], crs=32719)
    both = pd.concat([a.to_crs(4326), b.to_crs(4326)], ignore_index=True)
    assert area_m2(gpd.GeoSeries(both, crs=4326)) == pytest.approx([10_000.0, 10_000.0], rel=1e-4)
