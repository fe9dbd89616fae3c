"""Predictions from other tools: vector files with a score column, DeepForest-style CSV boxes.

The bundled NEON OSBS scene and its 61 tree-crown boxes stand in for another model's
output: crowns copied (shifted by one pixel) with scores, a few spurious small boxes,
and rows for another image, as a DeepForest ``predict_tile`` CSV would hold them.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from geoscreen.cli.app import EXIT_USER_ERROR, main
from geoscreen.errors import InputError
from geoscreen.evaluate.metrics import evaluate_sites
from geoscreen.evaluate.predictions import load_predictions
from geoscreen.evaluate.truth import load_truth
from geoscreen.imagery.scene import open_scene
from geoscreen.samples import sample_path
from geoscreen.sites.detections import write_detection_sites
from geoscreen.sites.site import normalise, read_sites

FOUND = 40  # crowns the "other model" finds
SPURIOUS = 5


@pytest.fixture(scope="module")
def deepforest_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    truth = pd.read_csv(sample_path("neon_osbs_labels"))
    found = truth.iloc[:FOUND].copy()
    found[["xmin", "xmax"]] += 1  # near copies: IoU well above 0.4 for crowns >= 20 px
    found["score"] = np.linspace(0.95, 0.55, FOUND)
    spurious = pd.DataFrame({"image_path": "OSBS_029.tif", "xmin": np.arange(SPURIOUS) * 3 + 1,
                             "ymin": 390, "xmax": np.arange(SPURIOUS) * 3 + 3, "ymax": 392,
                             "label": "Tree", "score": 0.99})  # fmt: skip
    elsewhere = found.head(7).assign(image_path="OSBS_030.tif")
    table = pd.concat([found, spurious, elsewhere], ignore_index=True)
    path = tmp_path_factory.mktemp("preds") / "deepforest.csv"
    table[["image_path", "xmin", "ymin", "xmax", "ymax", "label", "score"]].to_csv(
        path, index=False
    )
    return path


def _run(*args: str | Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def test_deepforest_csv_boxes_are_placed_on_the_image(deepforest_csv: Path) -> None:
    scene = open_scene(sample_path("neon_osbs"))
    pred = load_predictions(deepforest_csv, scene=scene)
    assert (pred.kind, pred.score_column, pred.other_image) == ("csv boxes", "score", 7)
    assert len(pred.frame) == FOUND + SPURIOUS and pred.frame.crs == scene.crs
    # first crown: pixel box (204, 67, 228, 90) at 0.1 m from the scene's corner
    west, north = scene.transform * (204, 67)
    assert pred.frame.geometry.iloc[0].bounds == pytest.approx(
        (west, north - 2.3, west + 2.4, north), abs=1e-6
    )
    truth = load_truth(sample_path("neon_osbs_labels"), scene)
    ev = evaluate_sites(pred.frame, truth, score_column=pred.score_column, n_boot=0)
    assert (ev.metrics["tp"], ev.metrics["fp"]) == (FOUND, SPURIOUS)
    assert ev.metrics["fn"] == len(truth) - FOUND


def test_cli_compares_csv_boxes_and_a_vector_file_alike(
    deepforest_csv: Path, tmp_path: Path
) -> None:
    """The same predictions as CSV boxes and as a GeoJSON with a 'confidence' column."""
    image, labels = sample_path("neon_osbs"), sample_path("neon_osbs_labels")
    code, out, err = _run("evaluate", "--predicted", deepforest_csv, "--image", image,
                          "--truth", labels, "--bootstrap", "0",
                          "--out", tmp_path / "csv")  # fmt: skip
    assert code == 0, err
    assert f"({FOUND} TP, {SPURIOUS} FP" in out
    assert "7 predictions for other images left out" in err
    from_csv = json.loads((tmp_path / "csv" / "metrics.json").read_text())
    assert (from_csv["tp"], from_csv["fp"]) == (FOUND, SPURIOUS)
    assert from_csv["inputs"]["predictions"]["kind"] == "csv boxes"
    scene = open_scene(image)
    placed = load_predictions(deepforest_csv, scene=scene).frame
    vector = placed.rename(columns={"score": "confidence"}).to_crs(4326)
    vector.to_file(tmp_path / "other.geojson")
    code, _, err = _run("evaluate", "--predicted", tmp_path / "other.geojson", "--truth", labels,
                        "--image", image, "--score-column", "confidence", "--bootstrap", "0",
                        "--out", tmp_path / "vec")  # fmt: skip
    assert code == 0, err
    from_vector = json.loads((tmp_path / "vec" / "metrics.json").read_text())
    for key in ("tp", "fp", "fn", "average_precision", "precision_at_k"):
        assert from_vector[key] == pytest.approx(from_csv[key]), key
    assert from_vector["inputs"]["predictions"]["score_column"] == "confidence"


@pytest.mark.filterwarnings("ignore:'crs' was not provided")
def test_pixel_space_image_and_vector_without_crs(tmp_path: Path) -> None:
    """A PNG without georeference: boxes stay in pixels on both sides."""
    image = open_scene(sample_path("neon_yell"))
    truth = load_truth(sample_path("neon_yell_labels"), image)
    boxes = np.asarray(shapely.bounds(truth.geometry.values))[:50]
    frame = gpd.GeoDataFrame({"score": np.linspace(1, 0.5, 50)},
                             geometry=shapely.box(*boxes.T))  # fmt: skip
    frame.to_file(tmp_path / "px.gpkg")
    pred = load_predictions(tmp_path / "px.gpkg", scene=image)
    assert pred.frame.crs is None
    ev = evaluate_sites(pred.frame, truth, score_column="score", n_boot=0)
    assert (ev.metrics["tp"], ev.metrics["fp"], ev.units) == (50, 0, "px")
    with pytest.raises(InputError, match="has no CRS"):
        load_predictions(tmp_path / "px.gpkg")


Bad = Callable[[Path], Path]


def _write(text: str, name: str = "p.csv") -> Bad:
    def make(folder: Path) -> Path:
        path = folder / name
        path.write_text(text)
        return path

    return make


@pytest.mark.parametrize(
    ("make", "extra", "message"),
    [
        (_write("xmin,ymin,xmax,ymax,score\n1,1,5,5,0.5\n"), [], "need the image"),
        (_write("xmin,ymin,xmax,ymax,conf\n1,1,5,5,0.5\n"), ["--image"], "no 'score' column"),
        (_write("xmin,ymin,xmax,ymax,score\n1,1,5,5,high\n"), ["--image"], "no numeric 'score'"),
        (_write("xmin,ymin,xmax,ymax,score\n5,1,1,5,0.5\n"), ["--image"], "1 bad boxes"),
        (_write("x,y,score\n1,1,0.5\n"), ["--image"], "need xmin, ymin, xmax, ymax"),
        (_write("image_path,xmin,ymin,xmax,ymax,score\nother.tif,1,1,5,5,0.5\n"), ["--image"],
         "none of the 1 predictions are for OSBS_029.tif"),
        (lambda folder: folder / "none.geojson", [], "predictions file not found"),
        (_write("x", "p.txt"), [], "unknown predictions file type"),
    ],
)  # fmt: skip
def test_bad_predictions_one_line_nothing_written(
    tmp_path: Path, make: Bad, extra: list[str], message: str
) -> None:
    path = make(tmp_path)
    args = ["evaluate", "--predicted", path, "--truth", sample_path("neon_osbs_labels"),
            "--out", tmp_path / "out"]  # fmt: skip
    if extra:
        args += ["--image", sample_path("neon_osbs")]
    code, _, err = _run(*args)
    assert code == EXIT_USER_ERROR
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("geoscreen: error:"), err
    assert message in lines[0]
    assert not (tmp_path / "out").exists()


def test_a_detection_screens_objects_are_scored_at_the_threshold_it_recorded(
    tmp_path: Path,
) -> None:
    """``screen`` writes every object (objects.parquet, with the threshold in force) and
    the sites at that threshold: evaluating either gives precision, recall and F1 at the
    threshold in force, and the objects' AP ranks the objects below it too."""
    image, labels = sample_path("neon_osbs"), sample_path("neon_osbs_labels")
    truth = load_truth(labels, open_scene(image)).to_crs(4326)
    # 40 crowns found above the threshold, 15 more below it, 10 spurious boxes below it
    found = truth.geometry.iloc[:55].to_numpy()
    spurious = shapely.box(*truth.total_bounds[:2], *(truth.total_bounds[:2] + 1e-6))
    scores = np.r_[np.linspace(0.95, 0.55, FOUND), np.linspace(0.45, 0.2, 15), np.full(10, 0.1)]
    frame = normalise(gpd.GeoDataFrame(
        {"site_id": [f"s{k}" for k in range(65)], "score_max": scores, "profile": "crowns"},
        geometry=[*found, *[spurious] * 10], crs=4326,
    ))  # fmt: skip
    files = write_detection_sites(frame, tmp_path / "scene", threshold=0.5)
    assert len(read_sites(files["sites"])) == FOUND
    assert read_sites(files["objects"])["threshold"].eq(0.5).all()
    metrics = {}
    for name in ("objects", "sites"):
        code, _, err = _run("evaluate", "--predicted", files[name], "--truth", labels,
                            "--image", image, "--bootstrap", "0",
                            "--out", tmp_path / name)  # fmt: skip
        assert code == 0, err
        metrics[name] = json.loads((tmp_path / name / "metrics.json").read_text())
        assert (metrics[name]["tp"], metrics[name]["fp"]) == (FOUND, 0), name
        assert ("the threshold in force when screened" in err) == (name == "objects")
    assert metrics["objects"]["score_threshold"] == 0.5
    assert metrics["objects"]["inputs"]["predictions"]["kind"] == "objects table"
    assert metrics["objects"]["average_precision"] > metrics["sites"]["average_precision"]
    # the predictions name no scene (the truth does): their own group, not a crash
    assert metrics["objects"]["groups"]["unknown"]["predicted"] == 65
    code, _, err = _run("evaluate", "--predicted", files["objects"], "--truth", labels,
                        "--image", image, "--bootstrap", "0", "--score-threshold", "0",
                        "--out", tmp_path / "all")  # fmt: skip
    every = json.loads((tmp_path / "all" / "metrics.json").read_text())
    assert code == 0 and (every["tp"], every["fp"]) == (55, 10), err
