"""Site extraction: thresholds, merging at tile borders, merge distance, minimum area, CRS."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely

from geoscreen.errors import ConfigError, InputError
from geoscreen.imagery.scene import Scene, open_scene
from geoscreen.imagery.tiling import TileGrid
from geoscreen.profiles import Profile
from geoscreen.samples import sample_path
from geoscreen.sites.extract import extract_sites, load_scoremap, tile_components
from geoscreen.sites.site import SITE_COLUMNS
from geoscreen.vision.scoremap import ScoreMap

MakeProfile = Callable[..., Profile]
MakeScores = Callable[..., ScoreMap]


def test_one_object_across_four_tiles_is_one_site(
    utm_scene: Scene, make_profile: MakeProfile, make_scores: MakeScores
) -> None:
    scores = make_scores(utm_scene, 32, 0, {(1, 1): 0.9, (1, 2): 0.7, (2, 1): 0.6, (2, 2): 0.8})
    sites = extract_sites(scores, make_profile(), run_id="run-a")
    assert len(sites) == 1
    site = sites.iloc[0]
    assert site["tile_count"] == 4
    assert site["score_max"] == pytest.approx(0.9)
    assert site["score_mean"] == pytest.approx((0.9 + 0.7 + 0.6 + 0.8) / 4)
    # 64 x 64 px of 10 m: 640 m x 640 m, in the scene's own UTM zone.
    assert site["area_m2"] == pytest.approx(640.0 * 640.0, rel=1e-6)
    assert site["area_unit"] == "m2"
    assert sites.crs.to_epsg() == 4326
    back = gpd.GeoSeries([site.geometry], crs=4326).to_crs(utm_scene.crs).iloc[0]
    expected = shapely.box(500_320, 4_500_000 - 960, 500_960, 4_500_000 - 320)
    assert back.symmetric_difference(expected).area < 1e-3
    assert list(sites.columns) == [*SITE_COLUMNS, "geometry"]
    assert site["run_id"] == "run-a" and site["detections"] == 1
    assert site["profile"] == "test_sites" and site["profile_version"] == "1.2.3"


def test_corner_touching_tiles_merge_separate_ones_do_not(
    utm_scene: Scene, make_profile: MakeProfile, make_scores: MakeScores
) -> None:
    scores = make_scores(utm_scene, 32, 0, [(0, 0), (1, 1), (3, 3)])
    sites = extract_sites(scores, make_profile())
    assert sorted(sites["tile_count"]) == [1, 2]


def test_merge_distance_bridges_a_gap(
    utm_scene: Scene, make_profile: MakeProfile, make_scores: MakeScores
) -> None:
    # Tiles (0, 0) and (0, 2) are one 32 px tile (320 m) apart.
    scores = make_scores(utm_scene, 32, 0, [(0, 0), (0, 2)])
    assert len(extract_sites(scores, make_profile(merge_distance_m=319.0))) == 2
    merged = extract_sites(scores, make_profile(merge_distance_m=320.0))
    assert len(merged) == 1
    assert merged.iloc[0]["tile_count"] == 2
    assert merged.iloc[0]["area_m2"] == pytest.approx(2 * 320.0**2, rel=1e-6)


def test_minimum_area_drops_small_sites(
    utm_scene: Scene, make_profile: MakeProfile, make_scores: MakeScores
) -> None:
    scores = make_scores(utm_scene, 32, 0, [(0, 0), (2, 2), (2, 3)])
    one_tile = 320.0**2
    sites = extract_sites(scores, make_profile(min_area_m2=one_tile * 1.5))
    assert list(sites["tile_count"]) == [2]
    assert len(extract_sites(scores, make_profile(min_area_m2=one_tile * 0.99))) == 2


def test_threshold_is_inclusive_and_sites_are_ranked(
    utm_scene: Scene, make_profile: MakeProfile, make_scores: MakeScores
) -> None:
    scores = make_scores(utm_scene, 32, 0, {(0, 0): 0.5, (3, 3): 0.95, (0, 3): 0.49})
    sites = extract_sites(scores, make_profile(threshold=0.5))
    assert list(sites["score_max"]) == pytest.approx([0.95, 0.5])
    assert len(extract_sites(scores, make_profile(), threshold=0.96)) == 0
    with pytest.raises(ConfigError):
        extract_sites(scores, make_profile(), threshold=1.5)


def test_overlapping_tiles_and_edge_tiles(
    scene_factory: Callable[..., Scene], make_profile: MakeProfile, make_scores: MakeScores
) -> None:
    scene = scene_factory(100, 100, resolution=1.0)
    # tile 32, stride 16: grid 6 x 6; tiles two strides apart touch (gap 0).
    scores = make_scores(scene, 32, 16, [(0, 0), (0, 2), (5, 5)])
    sites = extract_sites(scores, make_profile(tile_size=32, overlap=16))
    assert sorted(sites["tile_count"]) == [1, 2]
    # The corner tile reaches past the scene edge and is clipped: 20 x 20 px of 1 m.
    assert sorted(sites["area_m2"]) == pytest.approx([400.0, 64.0 * 32.0], rel=1e-6)


def test_invalid_tiles_are_never_flagged(
    utm_scene: Scene, make_profile: MakeProfile, make_scores: MakeScores
) -> None:
    scores = make_scores(utm_scene, 32, 0, [(0, 0), (3, 3)])
    scores.valid_fraction[0] = 0.0
    assert list(extract_sites(scores, make_profile())["tile_count"]) == [1]


@pytest.mark.parametrize("seed", range(6))
def test_components_match_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    tile = int(rng.choice([16, 32]))
    stride = int(rng.choice([tile, tile // 2, tile - 4]))
    merge = float(rng.choice([0.0, 3.0, stride * 1.5]))
    n_rows = n_cols = 9
    flat = rng.choice(n_rows * n_cols, size=25, replace=False)
    rows, cols = flat // n_cols, flat % n_cols
    labels = tile_components(rows, cols, tile, stride, merge)
    boxes = shapely.box(cols * stride, rows * stride, cols * stride + tile, rows * stride + tile)
    parent = list(range(len(flat)))

    def find(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i in range(len(flat)):
        for j in range(i + 1, len(flat)):
            if shapely.distance(boxes[i], boxes[j]) <= merge + 1e-9:
                parent[find(i)] = find(j)
    expected = {frozenset(np.flatnonzero([find(k) == r for k in range(len(flat))])) for r in
                {find(k) for k in range(len(flat))}}  # fmt: skip
    got = {frozenset(np.flatnonzero(labels == g)) for g in np.unique(labels)}
    assert got == expected


def test_pixel_space_image_keeps_pixel_coordinates(
    make_profile: MakeProfile, make_scores: MakeScores
) -> None:
    scene = open_scene(sample_path("neon_yell"))
    scores = make_scores(scene, 64, 0, [(0, 0), (0, 1), (5, 5)])
    profile = make_profile(tile_size=64, min_area_m2=1.0, merge_distance_m=0.5)
    sites = extract_sites(scores, profile)
    assert sites.crs is None
    assert set(sites["area_unit"]) == {"px2"}
    assert sorted(sites["area_m2"]) == [64.0 * 64.0, 2 * 64.0 * 64.0]
    assert sites.geometry.iloc[0].bounds == (0.0, 0.0, 128.0, 64.0)
    # A nominal pixel size turns the rules and areas into metres (0.1 m: 6.4 m tiles).
    metres = extract_sites(scores, profile, pixel_size_m=0.1)
    assert set(metres["area_unit"]) == {"m2"}
    assert sorted(metres["area_m2"]) == pytest.approx([40.96, 81.92])
    bigger = make_profile(tile_size=64, min_area_m2=50.0)
    assert list(extract_sites(scores, bigger, pixel_size_m=0.1)["tile_count"]) == [2]


def test_times_and_provenance(
    utm_scene: Scene, make_profile: MakeProfile, make_scores: MakeScores
) -> None:
    meta = {"profile": "test_sites", "run_id": "r1", "model_sha256": "ab" * 32}
    scores = make_scores(utm_scene, 32, 0, [(1, 1)], meta=meta)
    when = datetime(2023, 5, 1, 10, tzinfo=UTC)
    site = extract_sites(scores, make_profile(), acquired=when).iloc[0]
    assert site["run_id"] == "r1" and site["model_sha256"] == "ab" * 32
    assert site["acquired"] == when and site["first_seen"] == when and site["last_seen"] == when
    assert site["scene_id"] == utm_scene.id
    assert site["scene_uri"] == utm_scene.uri  # the review server finds the imagery there
    other = make_scores(utm_scene, 32, 0, [(1, 1)], meta={"profile": "another"})
    with pytest.raises(ConfigError, match="another"):
        extract_sites(other, make_profile())


def test_site_ids_are_deterministic(
    utm_scene: Scene, make_profile: MakeProfile, make_scores: MakeScores
) -> None:
    scores = make_scores(utm_scene, 32, 0, [(0, 0), (3, 3)])
    a = extract_sites(scores, make_profile(), run_id="x")
    b = extract_sites(scores, make_profile(), run_id="x")
    assert list(a["site_id"]) == list(b["site_id"])
    assert a["site_id"].nunique() == 2


def test_load_scoremap_round_trip(
    tmp_path: Path, utm_scene: Scene, make_profile: MakeProfile, make_scores: MakeScores
) -> None:
    folder = tmp_path / "scores"
    full = make_scores(utm_scene, 32, 0, [(1, 1), (1, 2)], meta={"run_id": "r9"})
    grid = TileGrid(utm_scene, 32, 0, selection=np.arange(15))  # the last tile was not screened
    scores = ScoreMap(grid, full.scores[:15], full.valid_fraction[:15], None, full.meta)
    scores.write(folder)
    back = load_scoremap(folder, utm_scene, make_profile())
    assert len(back.grid) == 15
    np.testing.assert_array_equal(back.scores, scores.scores)
    assert back.meta["run_id"] == "r9"
    a = extract_sites(scores, make_profile())
    b = extract_sites(back, make_profile())
    assert a.geometry.iloc[0].equals(b.geometry.iloc[0])
    with pytest.raises(InputError, match=r"tiles\.parquet"):
        load_scoremap(tmp_path, utm_scene, make_profile())
    with pytest.raises(InputError, match="on 32 px tiles overlapping by 0 px"):
        load_scoremap(folder, utm_scene, make_profile(tile_size=64))
    alone = load_scoremap(folder, utm_scene)  # tile size and overlap as the file records
    assert (alone.grid.tile_size, alone.grid.overlap, len(alone.grid)) == (32, 0, 15)
