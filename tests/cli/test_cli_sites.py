"""``geoscreen sites extract`` and ``geoscreen evaluate`` end to end, bad input included."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
import yaml

from geoscreen.cli.app import EXIT_USER_ERROR
from geoscreen.imagery.scene import open_scene
from geoscreen.imagery.tiling import TileGrid
from geoscreen.samples import make_synthetic_scene, sample_path
from geoscreen.sites.coverage import coverage_path, read_coverage
from geoscreen.sites.site import read_sites
from geoscreen.vision.scoremap import ScoreMap

Run = Callable[..., tuple[int, str, str]]  # the ``run`` fixture (conftest.py)


def _one_line_error(code: int, err: str) -> str:
    assert code == EXIT_USER_ERROR
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("geoscreen: error:"), err
    return lines[0]


def test_evaluate_end_to_end(tmp_path: Path, run: Run) -> None:
    utm = [shapely.box(500_000 + 40 * i, 4_500_000, 500_020 + 40 * i, 4_500_020) for i in range(3)]
    sites = gpd.GeoDataFrame(
        {"site_id": ["a", "b"], "score_max": [0.9, 0.6], "profile": ["p", "p"]},
        geometry=utm[:2],
        crs="EPSG:32633",
    ).to_crs(4326)
    sites.to_parquet(tmp_path / "sites.parquet")
    truth = gpd.GeoDataFrame({"kind": ["x", "y"]}, geometry=[utm[0], utm[2]], crs="EPSG:32633")
    truth.to_file(tmp_path / "truth.geojson")
    code, out, err = run("evaluate", "--predicted", tmp_path / "sites.parquet", "--truth",
                         tmp_path / "truth.geojson", "--iou", "0.5", "--out", tmp_path / "eval",
                         "--bootstrap", "100")  # fmt: skip
    assert code == 0, err
    assert "precision 0.500, recall 0.500" in out
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert (metrics["tp"], metrics["fp"], metrics["fn"]) == (1, 1, 1)
    assert metrics["criterion"] == "IoU >= 0.5"
    assert (tmp_path / "eval" / "report.html").is_file()
    assert (tmp_path / "eval" / "pr_curve.png").is_file()
    code, out, err = run("evaluate", "--predicted", tmp_path / "sites.parquet", "--truth",
                         tmp_path / "truth.geojson", "--distance", "5", "--out",
                         tmp_path / "d")  # fmt: skip
    assert code == 0 and "centre distance <= 5 m" in out


def test_evaluate_bad_input(tmp_path: Path, run: Run) -> None:
    yell_labels = sample_path("neon_yell_labels")
    line = _one_line_error(*run("evaluate", "--predicted", tmp_path / "none.parquet", "--truth",
                                yell_labels, "--out", tmp_path / "x")[::2])  # fmt: skip
    assert "predictions file not found" in line
    line = _one_line_error(*run("evaluate", "--predicted", tmp_path / "none.parquet", "--truth",
                                yell_labels, "--iou", "0.5", "--distance", "3", "--out",
                                tmp_path / "x")[::2])  # fmt: skip
    assert "not both" in line
    gpd.GeoDataFrame({"site_id": ["a"], "score_max": [0.9], "profile": ["p"]},
                     geometry=[shapely.box(0, 0, 5, 5)], crs=4326).to_parquet(
        tmp_path / "s.parquet")  # fmt: skip
    line = _one_line_error(*run("evaluate", "--predicted", tmp_path / "s.parquet", "--truth",
                                yell_labels, "--out", tmp_path / "x")[::2])  # fmt: skip
    assert "--image" in line
    assert not (tmp_path / "x").exists()


def _profile_file(folder: Path) -> Path:
    path = folder / "profile.yaml"
    path.write_text(yaml.safe_dump({
        "name": "bright_squares", "version": "1.0.0",
        "description": "bright square structures in synthetic test scenes",
        "model": {"backbone": "resnet18"}, "tiling": {"tile_size": 32},
        "threshold": 0.5, "sites": {"min_area_m2": 0.0, "merge_distance_m": 0.0},
    }))  # fmt: skip
    return path


def _scores(folder: Path, scene_path: Path, flags: list[int], run_id: str) -> Path:
    scene = open_scene(scene_path)
    grid = TileGrid(scene, 32, 0)
    scores = np.full(len(grid), 0.1, dtype=np.float32)
    scores[flags] = 0.9
    meta = {"profile": "bright_squares", "run_id": run_id, "scene_id": scene.id}
    ScoreMap(grid, scores, np.ones(len(grid), np.float32), None, meta).write(folder)
    return folder


def test_sites_extract_twice_with_history(tmp_path: Path, run: Run) -> None:
    scene = make_synthetic_scene(tmp_path / "scene.tif", 128, 128, structures=2,
                                 tags={"ACQUISITION_DATETIME": "2024-03-01T10:00:00Z"})  # fmt: skip
    profile = _profile_file(tmp_path)
    first = _scores(tmp_path / "s1", scene, [0, 1, 15], "run-1")
    code, out, err = run("sites", "extract", first, "--image", scene, "--profile", profile,
                         "--out", tmp_path / "run1.parquet", "--history",
                         tmp_path / "history.gpkg")  # fmt: skip
    assert code == 0, err
    assert "2 sites (2 new, 0 seen before)" in out
    run1 = read_sites(tmp_path / "run1.parquet")
    assert all(Path(p).is_file() for p in run1["evidence_path"])
    assert Path(run1["evidence_path"].iloc[0]).parent.name == "run1_evidence"
    second = _scores(tmp_path / "s2", scene, [0, 1, 10], "run-2")
    code, out, err = run("sites", "extract", second, "--image", scene, "--profile", profile,
                         "--out", tmp_path / "run2.parquet", "--history",
                         tmp_path / "history.gpkg", "--no-evidence")  # fmt: skip
    assert code == 0, err
    assert "1 new, 1 seen before" in out
    history = read_sites(tmp_path / "history.gpkg")
    assert len(history) == 3 and sorted(history["detections"]) == [1, 1, 2]
    run2 = read_sites(tmp_path / "run2.parquet")
    assert len(run2) == 2 and set(run2["site_id"]) < set(history["site_id"])
    coverage = read_coverage(coverage_path(tmp_path / "history.gpkg"))
    assert list(coverage["run_id"]) == ["run-1", "run-2"]


def test_sites_extract_bad_input(tmp_path: Path, run: Run) -> None:
    profile = _profile_file(tmp_path)
    line = _one_line_error(*run("sites", "extract", tmp_path, "--profile", profile, "--out",
                                tmp_path / "x.parquet")[::2])  # fmt: skip
    assert "screen.json" in line
    scene = make_synthetic_scene(tmp_path / "scene.tif", 64, 64)
    folder = _scores(tmp_path / "s", scene, [0], "r")
    line = _one_line_error(*run("sites", "extract", folder, "--image", scene, "--profile",
                                profile, "--out", tmp_path / "x.csv")[::2])  # fmt: skip
    assert ".parquet or .gpkg" in line


def _screen_summary(out: Path, scene_path: Path, folder: Path, profile: Path) -> None:
    """The ``screen.json`` that 'geoscreen screen' writes beside the score folders."""
    from geoscreen.cli.vision import profile_record
    from geoscreen.profiles import load_profile

    scene = open_scene(scene_path)
    summary = {"kind": "screen", "run_id": "run-1", **profile_record(load_profile(profile)),
               "scenes": [{"scene": str(scene_path), "scene_id": scene.id,
                           "files": {"tiles": str(folder / "tiles.parquet")}}]}  # fmt: skip
    (out / "screen.json").write_text(json.dumps(summary), encoding="utf-8")


def test_sites_extract_needs_no_profile_to_read_scores_back(tmp_path: Path, run: Run) -> None:
    scene = make_synthetic_scene(tmp_path / "scene.tif", 128, 128, structures=2)
    profile = _profile_file(tmp_path)
    folder = _scores(tmp_path / "screened" / "scene", scene, [0, 1, 15], "run-1")
    tiles = gpd.read_parquet(folder / "tiles.parquet")
    assert set(tiles["tile_size"]) == {32} and set(tiles["overlap"]) == {0}
    _screen_summary(tmp_path / "screened", scene, folder, profile)
    code, _out, err = run("sites", "extract", tmp_path / "screened", "--out",
                         tmp_path / "a.parquet", "--no-evidence")  # fmt: skip
    assert code == 0, err
    code, _, err = run("sites", "extract", tmp_path / "screened", "--profile", profile, "--out",
                       tmp_path / "b.parquet", "--no-evidence")  # fmt: skip
    assert code == 0, err
    a, b = read_sites(tmp_path / "a.parquet"), read_sites(tmp_path / "b.parquet")
    assert len(a) == 2 and list(a["site_id"]) == list(b["site_id"])
    (tmp_path / "screened" / "screen.json").unlink()  # nothing records the profile now
    line = _one_line_error(*run("sites", "extract", folder, "--image", scene, "--out",
                                tmp_path / "c.parquet")[::2])  # fmt: skip
    assert "--profile" in line


def test_sites_extract_leaves_the_profile_s_exclusion_zones_empty(tmp_path: Path, run: Run) -> None:
    scene_path = make_synthetic_scene(tmp_path / "scene.tif", 128, 128, structures=2)
    scene = open_scene(scene_path)
    grid = TileGrid(scene, 32, 0)
    zone = shapely.unary_union(grid.geometries()[[1, 15]]).buffer(1.0)  # tiles 1, 15 and 1 m
    gpd.GeoDataFrame(geometry=[zone], crs=scene.crs).to_file(tmp_path / "zone.geojson")
    profile = _profile_file(tmp_path)
    data = yaml.safe_load(profile.read_text())
    profile.write_text(yaml.safe_dump({**data, "exclusions": ["zone.geojson"]}))
    folder = _scores(tmp_path / "s", scene_path, [0, 1, 15], "run-1")
    code, _out, err = run("sites", "extract", folder, "--image", scene_path, "--profile",
                         profile, "--out", tmp_path / "sites.parquet")  # fmt: skip
    assert code == 0, err
    found = read_sites(tmp_path / "sites.parquet")
    # Tiles 0 and 1 made one site, cut back to tile 0 (less 1 m); tile 15 was excluded.
    assert len(found) == 1
    inside = gpd.GeoSeries([zone.buffer(-0.5)], crs=scene.crs).to_crs(4326).iloc[0]
    assert not found.geometry.intersects(inside).any()
    tile0 = gpd.GeoSeries([grid.geometries()[0].buffer(-1.5)], crs=scene.crs).to_crs(4326)
    assert found.geometry.iloc[0].contains(tile0.iloc[0])
    assert found["area_m2"].iloc[0] < 320 * 320
