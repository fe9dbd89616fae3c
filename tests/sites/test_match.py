"""Matching across runs: re-seen vs new sites, detections, new_since from coverage history."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from geoscreen.errors import ConfigError
from geoscreen.imagery.scene import Scene
from geoscreen.imagery.tiling import TileGrid
from geoscreen.matching import MatchRule, Pairs, assign_one_to_one, candidate_pairs, haversine_m
from geoscreen.profiles import Profile
from geoscreen.sites.coverage import (
    coverage_of,
    coverage_path,
    empty_coverage,
    read_coverage,
    write_coverage,
)
from geoscreen.sites.extract import extract_sites
from geoscreen.sites.match import update_sites
from geoscreen.vision.scoremap import ScoreMap

MakeProfile = Callable[..., Profile]
MakeScores = Callable[..., ScoreMap]
JAN, JUN, DEC = (datetime(2023, m, 1, tzinfo=UTC) for m in (1, 6, 12))


def _run(
    scene: Scene,
    make_scores: MakeScores,
    profile: Profile,
    flags: list[tuple[int, int]],
    run_id: str,
    when: datetime,
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    scores = make_scores(scene, 32, 0, flags)
    sites = extract_sites(scores, profile, run_id=run_id, acquired=when)
    return sites, coverage_of(scores, run_id=run_id, profile=profile.name, acquired=when)


def test_reseen_site_gains_a_detection_new_one_is_added(
    utm_scene: Scene, make_profile: MakeProfile, make_scores: MakeScores
) -> None:
    profile = make_profile()
    first, _ = _run(utm_scene, make_scores, profile, [(0, 0), (3, 3)], "r1", JAN)
    second, _ = _run(utm_scene, make_scores, profile, [(0, 0), (0, 1), (2, 0)], "r2", JUN)
    update = update_sites(first, second)
    table = update.sites.set_index("site_id")
    kept = first.iloc[np.argmin(first.geometry.bounds["minx"])]["site_id"]  # the (0, 0) site
    assert update.reseen == [kept]
    assert len(update.added) == 1 and len(table) == 3
    grown = table.loc[kept]
    assert grown["detections"] == 2 and grown["tile_count"] == 2  # geometry of the newer run
    assert grown["first_seen"] == JAN and grown["last_seen"] == JUN
    assert grown["run_id"] == "r2" and grown["acquired"] == JUN
    untouched = table.drop(index=[kept, *update.added])
    assert list(untouched["detections"]) == [1] and list(untouched["run_id"]) == ["r1"]


def test_older_acquisition_keeps_the_newer_geometry(
    utm_scene: Scene, make_profile: MakeProfile, make_scores: MakeScores
) -> None:
    profile = make_profile()
    newer, _ = _run(utm_scene, make_scores, profile, [(1, 1), (1, 2)], "r-new", DEC)
    older, _ = _run(utm_scene, make_scores, profile, [(1, 1)], "r-old", JAN)
    site = update_sites(newer, older).sites.iloc[0]
    assert site["detections"] == 2 and site["tile_count"] == 2 and site["run_id"] == "r-new"
    assert site["first_seen"] == JAN and site["last_seen"] == DEC


def test_same_run_again_is_not_another_detection(
    utm_scene: Scene, make_profile: MakeProfile, make_scores: MakeScores
) -> None:
    sites, _ = _run(utm_scene, make_scores, make_profile(), [(1, 1)], "r1", JAN)
    assert update_sites(sites, sites).sites["detections"].tolist() == [1]


def test_other_profiles_never_match(
    utm_scene: Scene, make_profile: MakeProfile, make_scores: MakeScores
) -> None:
    a, _ = _run(utm_scene, make_scores, make_profile(name="kilns"), [(1, 1)], "r1", JAN)
    b, _ = _run(utm_scene, make_scores, make_profile(name="camps"), [(1, 1)], "r2", JUN)
    update = update_sites(a, b)
    assert update.reseen == [] and len(update.sites) == 2


def test_new_since_from_coverage_history(
    utm_scene: Scene, make_profile: MakeProfile, make_scores: MakeScores
) -> None:
    profile = make_profile()
    jan_sites, jan_cov = _run(utm_scene, make_scores, profile, [(0, 0)], "r1", JAN)
    jun_sites, jun_cov = _run(utm_scene, make_scores, profile, [(0, 0)], "r2", JUN)
    history = update_sites(jan_sites, jun_sites, coverage=jan_cov).sites
    assert history["new_since"].isna().all()  # seen in January already
    coverage = pd.concat([jan_cov, jun_cov], ignore_index=True)
    dec_sites, _ = _run(utm_scene, make_scores, profile, [(0, 0), (3, 3)], "r3", DEC)
    update = update_sites(history, dec_sites, coverage=coverage)
    table = update.sites.set_index("site_id")
    assert table.loc[update.added[0], "new_since"] == JUN  # covered in Jan and Jun, no site
    assert pd.isna(table.loc[update.reseen[0], "new_since"])
    # Coverage of another profile, or a later acquisition, says nothing.
    other = coverage.assign(profile="another")
    assert update_sites(history, dec_sites, coverage=other).sites["new_since"].isna().all()
    later = coverage.assign(acquired=pd.Timestamp(datetime(2024, 1, 1, tzinfo=UTC)))
    assert update_sites(history, dec_sites, coverage=later).sites["new_since"].isna().all()


def test_place_outside_earlier_coverage_is_not_new_since(
    utm_scene: Scene, make_profile: MakeProfile, make_scores: MakeScores
) -> None:
    profile = make_profile()
    corner = TileGrid(utm_scene, 32, 0, selection=np.array([0, 1, 4, 5]))  # top-left 2 x 2 tiles
    scores = ScoreMap(corner, np.zeros(4, np.float32), np.ones(4, np.float32))
    partial = coverage_of(scores, run_id="r0", profile=profile.name, acquired=JAN)
    dec_sites, _ = _run(utm_scene, make_scores, profile, [(0, 0), (3, 3)], "r3", DEC)
    table = update_sites(None, dec_sites, coverage=partial).sites
    flagged = table[table["new_since"].notna()]
    assert list(flagged["tile_count"]) == [1] and flagged["new_since"].iloc[0] == JAN
    assert partial.geometry.iloc[0].contains(flagged.geometry.iloc[0].centroid)


def test_coverage_footprint_and_round_trip(
    tmp_path: Path, utm_scene: Scene, make_profile: MakeProfile, make_scores: MakeScores
) -> None:
    scores = make_scores(utm_scene, 32, 0, [(1, 1)])
    cov = coverage_of(scores, run_id="r1", profile="p", acquired=JAN)
    footprint = gpd.GeoSeries(cov.geometry, crs=4326).to_crs(utm_scene.crs).iloc[0]
    assert footprint.area == pytest.approx(1280.0 * 1280.0, rel=1e-6)
    path = write_coverage(cov, coverage_path(tmp_path / "sites.parquet"))
    assert path.name == "sites.coverage.parquet"
    back = read_coverage(path)
    assert back["acquired"].iloc[0] == JAN and back["tiles"].iloc[0] == 16
    assert len(empty_coverage()) == 0


def test_iou_and_distance_rules() -> None:
    a = np.array([shapely.box(0, 0, 10, 10), shapely.box(100, 100, 110, 110)])
    b = np.array([shapely.box(5, 0, 15, 10), shapely.box(300, 300, 310, 310)])
    pairs = candidate_pairs(a, b, MatchRule("iou", min_iou=0.3))
    assert pairs.left.tolist() == [0] and pairs.similarity == pytest.approx([1 / 3])
    assert candidate_pairs(a, b, MatchRule("iou", min_iou=0.34)).left.size == 0
    near = candidate_pairs(a, b, MatchRule("distance", max_distance=5.0))
    assert near.left.tolist() == [0] and near.right.tolist() == [0]
    assert candidate_pairs(a, b, MatchRule("distance", max_distance=4.9)).left.size == 0
    with pytest.raises(ConfigError):
        candidate_pairs(a, np.array([shapely.Point(1, 1)]), MatchRule("iou"))
    with pytest.raises(ConfigError):
        MatchRule("distance")


def test_distance_in_metres_on_lon_lat() -> None:
    lat = 60.0
    step = 8.0 / (111_320.0 * np.cos(np.radians(lat)))  # about 8 m east
    a = np.array([shapely.Point(10.0, lat)])
    b = np.array([shapely.Point(10.0 + step, lat)])
    d = haversine_m(np.array([10.0]), np.array([lat]), np.array([10.0 + step]), np.array([lat]))
    assert d[0] == pytest.approx(8.0, rel=0.01)
    rule = MatchRule("distance", max_distance=10.0)
    assert candidate_pairs(a, b, rule, geographic=True).left.size == 1
    assert candidate_pairs(a, b, MatchRule("distance", max_distance=5.0), True).left.size == 0


def test_assignment_is_one_to_one_and_maximal() -> None:
    # Greedy by similarity would take (0, 0) and leave 1 unmatched; two pairs are possible.
    pairs = Pairs(np.array([0, 0, 1]), np.array([0, 1, 0]), np.array([0.9, 0.5, 0.6]))
    chosen = assign_one_to_one(pairs, 2, 2)
    assert sorted(zip(chosen.left.tolist(), chosen.right.tolist(), strict=True)) == [(0, 1), (1, 0)]
    # Ties: one of two equal candidates, deterministically.
    tie = Pairs(np.array([0, 1]), np.array([0, 0]), np.array([0.5, 0.5]))
    first = assign_one_to_one(tie, 2, 1)
    assert (
        first.left.size == 1 and first.left.tolist() == assign_one_to_one(tie, 2, 1).left.tolist()
    )
    assert assign_one_to_one(Pairs.empty(), 3, 3).left.size == 0


def test_pixel_and_georeferenced_sites_do_not_mix(
    utm_scene: Scene, make_profile: MakeProfile, make_scores: MakeScores
) -> None:
    geo, _ = _run(utm_scene, make_scores, make_profile(), [(1, 1)], "r1", JAN)
    pixel = gpd.GeoDataFrame(
        {"site_id": ["x"], "score_max": [0.9], "profile": ["test_sites"]},
        geometry=[shapely.box(0, 0, 1, 1)],
    )
    with pytest.raises(ConfigError, match="pixel-space"):
        update_sites(geo, pixel)


def test_groups_too_large_for_an_exact_assignment_are_matched_greedily(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import geoscreen.matching as match

    pairs = Pairs(np.array([0, 0, 1]), np.array([0, 1, 0]), np.array([0.9, 0.5, 0.6]))
    monkeypatch.setattr(match, "MAX_DENSE", 1)
    chosen = assign_one_to_one(pairs, 2, 2)
    # Greedy takes the most similar pair first, then nothing else fits.
    assert list(zip(chosen.left.tolist(), chosen.right.tolist(), strict=True)) == [(0, 0)]
    assert "greedily" in caplog.text
