"""``geoscreen evaluate`` of a classify screen at labelled places, on real Sentinel-2:
trained on the west half's water and forest points, screened, read at the east half's."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import pytest
import rasterio

from geoscreen.cli.app import EXIT_USER_ERROR
from geoscreen.samples import sentinel2_water_forest

PROFILE = Path(__file__).resolve().parents[2] / "geoscreen" / "configs" / "open_water_s2.yaml"
Run = Callable[..., tuple[int, str, str]]


@pytest.fixture(scope="module")
def screened(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """West points -> model -> the whole scene screened; the east points kept apart."""
    from geoscreen.cli.app import main

    folder = tmp_path_factory.mktemp("s2_labels")
    s2 = sentinel2_water_forest()
    points = gpd.read_file(s2.points)
    middle = points.geometry.x.median()
    points[points.geometry.x < middle].to_file(folder / "west.geojson")
    points[points.geometry.x >= middle].to_file(folder / "east.geojson")
    assert main(["train", str(PROFILE), "--labels", str(folder / "west.geojson"),
                 "--imagery", str(s2.image), "--positive", "water", "--mode", "spectral",
                 "--device", "cpu", "--out", str(folder / "model")]) == 0  # fmt: skip
    assert main(["screen", str(PROFILE), str(s2.image), "--model", str(folder / "model"),
                 "--device", "cpu", "--out", str(folder / "screened")]) == 0  # fmt: skip
    (raster,) = (folder / "screened").glob("*/scores.tif")
    return {"folder": folder, "raster": raster, "east": folder / "east.geojson"}


def _one_error(code: int, out: str, err: str) -> str:
    assert code == EXIT_USER_ERROR and out == "" and "Traceback" not in err, (code, out, err)
    (line,) = [x for x in err.splitlines() if x.startswith("geoscreen: error:")]
    return line


def test_the_east_points_are_ranked_and_scored_at_the_recorded_threshold(
    run: Run, screened: dict[str, Path], tmp_path: Path
) -> None:
    with rasterio.open(screened["raster"]) as src:
        assert float(src.tags()["threshold"]) == 0.5  # the profile's, in force
    out = tmp_path / "report"
    code, stdout, err = run("evaluate", "--predicted", screened["raster"], "--truth",
                            screened["east"], "--positive", "water", "--out", out,
                            "--json")  # fmt: skip
    assert code == 0, err
    m = json.loads(stdout)
    east = gpd.read_file(screened["east"])
    assert m["labels"] == len(east) and m["positives"] == int((east["label"] == "water").sum())
    # Water is easy in 13 bands; a ranking far above the positive rate, on the other half.
    assert m["average_precision"] > m["positive_rate"] + 0.2 and m["roc_auc"] > 0.9
    assert m["threshold"] == 0.5 and "at 0.5, the threshold in force" in err
    assert m["per_class"]["water"]["mean_score"] > m["per_class"]["forest"]["mean_score"]
    assert m["interval_resamples"] == "blocks of 3 x 3 tiles (960 units a side)"  # 16 px of 20 m
    assert {p.name for p in out.iterdir()} == {"metrics.json", "pr_curve.png",
                                                "score_histogram.png", "report.html"}  # fmt: skip
    assert json.loads((out / "metrics.json").read_text())["f1"] == m["f1"]

    code, stdout, err = run("evaluate", "--predicted", screened["raster"], "--truth",
                            screened["east"], "--positive", "water", "--score-threshold", "0.9",
                            "--out", tmp_path / "strict")  # fmt: skip
    assert code == 0, err
    assert "at 0.9: precision" in stdout and "threshold in force" not in err


def test_bad_requests_are_refused_in_one_line_and_nothing_is_written(
    run: Run, screened: dict[str, Path], tmp_path: Path
) -> None:
    raster, east = screened["raster"], screened["east"]
    out = tmp_path / "never"
    cases = [
        ((), "the labels name several classes (forest, water)"),
        (("--positive", "lake"), "lake do not occur in the labels; classes found: forest, water"),
        (("--positive", "water", "--iou", "0.5"), "--iou match objects"),
        (("--positive", "water", "--negative", "water"), "cannot be both"),
    ]
    for extra, message in cases:
        line = _one_error(*run("evaluate", "--predicted", raster, "--truth", east, *extra,
                               "--out", out))  # fmt: skip
        assert message in line, line
        assert not out.exists()
    water = gpd.read_file(east)
    water[water["label"] == "water"].to_file(tmp_path / "water.geojson")
    line = _one_error(*run("evaluate", "--predicted", raster, "--truth",
                           tmp_path / "water.geojson", "--out", out))  # fmt: skip
    assert "no negative label has a score" in line and "sites extract" in line
    line = _one_error(*run("evaluate", "--predicted", raster.parent / "tiles.parquet",
                           "--truth", east, "--positive", "water", "--out", out))  # fmt: skip
    assert "tile table" in line and "scores.tif" in line
    line = _one_error(*run("evaluate", "--predicted", raster.parent / "sites.tif",
                           "--truth", east, "--positive", "water", "--out", out))  # fmt: skip
    assert "score raster not found" in line
    assert not out.exists()


def test_object_truth_with_several_classes_counts_only_the_positive_one(
    run: Run, screened: dict[str, Path], tmp_path: Path
) -> None:
    """Sites against vector truth: forest points are no longer objects to find."""
    sites = tmp_path / "sites.parquet"
    code, _, err = run("sites", "extract", screened["folder"] / "screened", "--out", sites)
    assert code == 0, err
    code, stdout, err = run("evaluate", "--predicted", sites, "--truth", screened["east"],
                            "--positive", "water", "--distance", "200", "--out",
                            tmp_path / "objects", "--json")  # fmt: skip
    assert code == 0, err
    east = gpd.read_file(screened["east"])
    assert json.loads(stdout)["truth"] == int((east["label"] == "water").sum())
    assert f"labels not counted as objects to find: {int((east['label'] == 'forest').sum())} " \
           "'forest'" in err  # fmt: skip
    # Each lake site matches one of its points; the others are misses inside it: said.
    inside = int(err.split(" missed truth points lie inside a site")[0].rsplit(" ", 1)[1])
    assert inside > 0.8 * json.loads(stdout)["fn"]
    line = _one_error(*run("evaluate", "--predicted", sites, "--truth", screened["east"],
                           "--negative", "forest", "--out", tmp_path / "no"))  # fmt: skip
    assert "--negative applies to a scores.tif" in line
