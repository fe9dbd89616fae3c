"""The evaluation report: metrics.json, plots, an offline TP/FP/FN map and report.html."""

from __future__ import annotations

import json
import re
from pathlib import Path

import geopandas as gpd
import pytest
import shapely
from PIL import Image

from geoscreen.evaluate.metrics import Criterion, Evaluation, evaluate_sites
from geoscreen.evaluate.report import FILES, json_safe, outcome_map, write_report


def _evaluation(crs: str | None) -> Evaluation:
    x0, y0 = (500_000.0, 4_500_000.0) if crs else (0.0, 0.0)
    boxes = [shapely.box(x0 + 30 * i, y0, x0 + 30 * i + 10, y0 + 10) for i in range(4)]
    pred = gpd.GeoDataFrame(
        {"site_id": list("abc"), "score_max": [0.9, 0.7, 0.4], "scene_id": ["s1", "s1", "s2"]},
        geometry=[boxes[0], boxes[1], shapely.box(x0 + 500, y0, x0 + 510, y0 + 10)],
        crs=crs,
    )
    truth = gpd.GeoDataFrame({"scene_id": ["s1", "s1", "s2"]}, geometry=[boxes[0], boxes[1],
                             boxes[3]], crs=crs)  # fmt: skip
    return evaluate_sites(pred, truth, Criterion(iou=0.4), n_boot=200)


@pytest.mark.parametrize("crs", ["EPSG:32633", None])
def test_report_files(tmp_path: Path, crs: str | None) -> None:
    ev = _evaluation(crs)
    paths = write_report(ev, tmp_path / "out", extra={"notes": ["a <note> & more"]})
    assert {p.name for p in (tmp_path / "out").iterdir()} == set(FILES.values())
    metrics = json.loads(paths["metrics"].read_text())
    assert (metrics["tp"], metrics["fp"], metrics["fn"]) == (2, 1, 1)
    assert metrics["groups"]["s2"]["recall"] == 0.0
    assert set(metrics["confidence_intervals"]) == {"precision", "recall", "f1",
                                                    "average_precision"}  # fmt: skip
    assert metrics["notes"] == ["a <note> & more"]
    for key in ("pr_curve", "histogram", "groups", "outcomes"):
        with Image.open(paths[key]) as image:
            assert image.format == "PNG" and image.size[0] >= 300
    page = paths["report"].read_text()
    for name in ("pr_curve.png", "score_histogram.png", "outcomes.png", "map.html"):
        assert f'"{name}"' in page
    assert "a &lt;note&gt; &amp; more" in page and "matches a screening profile" in page


def test_map_is_offline(tmp_path: Path) -> None:
    for crs in ("EPSG:32633", None):
        page = outcome_map(_evaluation(crs)).html()
        # No script, style sheet or tile layer from anywhere else: Leaflet is inlined.
        assert not re.search(r'<script[^>]+src="https?:', page)
        assert not re.search(r'<link[^>]+href="https?:', page)
        assert "L.tileLayer" not in page
        assert "true positive sites" in page and "missed truth (FN)" in page
    assert "L.CRS.Simple" in outcome_map(_evaluation(None)).html()


def test_json_safe() -> None:
    assert json_safe({"a": float("nan"), "b": [1.0, float("inf")], 3: (2,)}) == {
        "a": None,
        "b": [1.0, None],
        "3": [2],
    }


@pytest.mark.filterwarnings("error::UserWarning")
def test_point_truth_is_drawn_without_warnings(tmp_path: Path) -> None:
    """Points have no boundary: the static map draws them as markers (geopandas warned
    of empty geometries on stderr for every point truth file until session 22)."""
    pred = gpd.GeoDataFrame({"site_id": ["a", "b"], "score_max": [0.9, 0.4]},
                            geometry=[shapely.box(0, 0, 10, 10), shapely.box(50, 0, 60, 10)],
                            crs="EPSG:32633")  # fmt: skip
    truth = gpd.GeoDataFrame(geometry=[shapely.Point(5, 5), shapely.Point(200, 5)],
                             crs="EPSG:32633")  # fmt: skip
    ev = evaluate_sites(pred, truth, Criterion(distance=10.0), n_boot=0)
    paths = write_report(ev, tmp_path / "out")
    with Image.open(paths["outcomes"]) as image:
        assert image.format == "PNG"
