"""``--json`` on ``tile``, ``sites extract`` and ``evaluate``: stdout is exactly one JSON
object that agrees with the files written; human lines and progress go to stderr."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
import yaml

from geoscreen.imagery.scene import open_scene
from geoscreen.imagery.tiling import TileGrid
from geoscreen.samples import make_synthetic_scene
from geoscreen.sites.site import read_sites
from geoscreen.vision.scoremap import ScoreMap

Run = Callable[..., tuple[int, str, str]]  # the ``run`` fixture (conftest.py)


def test_tile_json(run: Run, osbs_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "tiles.parquet"
    code, stdout, err = run("tile", osbs_path, "--tile-size", "128", "--out", out, "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    frame = gpd.read_parquet(out)
    assert summary["tiles"] == len(frame) == 16
    assert (summary["rows"], summary["cols"], summary["grid_tiles"]) == (4, 4, 16)
    assert (summary["tile_size"], summary["overlap"], summary["out"]) == (128, 0, str(out))
    assert summary["scene_id"] == open_scene(osbs_path).id == frame["scene_id"].iloc[0]
    assert summary["crs"] == "EPSG:32617" and summary["bands"] is None
    assert "checking tiles for data" in err  # the progress bar stays on stderr


def _scores(folder: Path, scene_path: Path, flags: list[int], run_id: str) -> Path:
    scene = open_scene(scene_path)
    grid = TileGrid(scene, 32, 0)
    scores = np.full(len(grid), 0.1, dtype=np.float32)
    scores[flags] = 0.9
    meta = {"profile": "bright_squares", "run_id": run_id, "scene_id": scene.id}
    ScoreMap(grid, scores, np.ones(len(grid), np.float32), None, meta).write(folder)
    return folder


def test_sites_extract_json(run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("geoscreen.cli.sites.CHIP_BATCH", 1)  # chips written one call each
    scene = make_synthetic_scene(tmp_path / "scene.tif", 128, 128, structures=2,
                                 tags={"ACQUISITION_DATETIME": "2024-03-01T10:00:00Z"})  # fmt: skip
    profile = tmp_path / "profile.yaml"
    profile.write_text(yaml.safe_dump({
        "name": "bright_squares", "version": "1.0.0",
        "description": "bright square structures in synthetic test scenes",
        "model": {"backbone": "resnet18"}, "tiling": {"tile_size": 32},
        "threshold": 0.5, "sites": {"min_area_m2": 0.0, "merge_distance_m": 0.0},
    }))  # fmt: skip
    scores = _scores(tmp_path / "s1", scene, [0, 1, 15], "run-1")
    out = tmp_path / "run1.parquet"
    code, stdout, err = run("sites", "extract", scores, "--image", scene, "--profile", profile,
                            "--out", out, "--history", tmp_path / "h.gpkg", "--json")  # fmt: skip
    assert code == 0, err
    summary = json.loads(stdout)
    written = read_sites(out)
    assert summary["sites"] == len(written) == 2
    assert (summary["new"], summary["seen_before"], summary["history_sites"]) == (2, 0, 2)
    assert [Path(p).stem for p in written["evidence_path"]] == list(written["site_id"])
    assert all(Path(p).is_file() for p in written["evidence_path"])
    assert summary["evidence_chips"] == 2 and summary["evidence_dir"].endswith("run1_evidence")
    assert summary["scenes"] == [{"scene": str(scene), "scene_id": open_scene(scene).id,
                                  "run_id": "run-1", "sites": 2, "new": 2,
                                  "seen_before": 0}]  # fmt: skip
    assert summary["profile"] == "bright_squares" and summary["out"] == str(out)
    assert "2 sites (2 new, 0 seen before)" in err  # the human lines moved to stderr


def test_evaluate_json(run: Run, tmp_path: Path) -> None:
    utm = [shapely.box(500_000 + 40 * i, 4_500_000, 500_020 + 40 * i, 4_500_020) for i in range(3)]
    gpd.GeoDataFrame(
        {"site_id": ["a", "b"], "score_max": [0.9, 0.6], "profile": ["p", "p"]},
        geometry=utm[:2], crs="EPSG:32633",
    ).to_crs(4326).to_parquet(tmp_path / "sites.parquet")  # fmt: skip
    gpd.GeoDataFrame({"kind": ["x", "y"]}, geometry=[utm[0], utm[2]], crs="EPSG:32633").to_file(
        tmp_path / "truth.geojson"
    )
    code, stdout, err = run("evaluate", "--predicted", tmp_path / "sites.parquet", "--truth",
                            tmp_path / "truth.geojson", "--iou", "0.5", "--out",
                            tmp_path / "eval", "--bootstrap", "50", "--json")  # fmt: skip
    assert code == 0, err
    summary = json.loads(stdout)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert (summary["tp"], summary["fp"], summary["fn"]) == (1, 1, 1)
    for key in ("precision", "recall", "f1", "average_precision", "criterion"):
        assert summary[key] == metrics[key]
    assert summary["confidence_intervals"] == metrics["confidence_intervals"]
    assert Path(summary["files"]["report"]).is_file()
    assert summary["inputs"]["predicted"] == str(tmp_path / "sites.parquet")
