"""A score raster read at labelled places: values, left-out labels, metrics, classes."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine
from shapely.geometry import Point, box

from geoscreen.errors import InputError
from geoscreen.evaluate.at_labels import label_metrics, scores_at_labels
from geoscreen.evaluate.truth import load_truth
from geoscreen.imagery.scene import open_scene
from geoscreen.ranking import average_precision, roc_auc

ORIGIN = (500_000.0, 4_000_000.0)  # EPSG:32633, upper left
CELL = 40.0  # metres, as a 20 m scene's centre raster with 2-pixel cells


def _scores(path: Path, values: np.ndarray, threshold: str | None = None) -> Path:
    transform = Affine(CELL, 0, ORIGIN[0], 0, -CELL, ORIGIN[1])
    with rasterio.open(path, "w", driver="GTiff", width=values.shape[1], height=values.shape[0],
                       count=1, dtype="float32", nodata=float("nan"), crs="EPSG:32633",
                       transform=transform) as dst:  # fmt: skip
        dst.write(values.astype(np.float32), 1)
        if threshold is not None:
            dst.update_tags(threshold=threshold)
    return path


def _cell_centre(row: int, col: int) -> Point:
    return Point(ORIGIN[0] + (col + 0.5) * CELL, ORIGIN[1] - (row + 0.5) * CELL)


@pytest.fixture
def raster(tmp_path: Path) -> Path:
    values = np.arange(48, dtype=np.float64).reshape(6, 8) / 48.0  # each cell its own score
    values[5, 7] = np.nan  # no score (beyond the tile centres)
    return _scores(tmp_path / "scores.tif", values, threshold="0.5")


def _labels(tmp_path: Path, rows: list[tuple[str, int, int]], crs: str = "EPSG:32633") -> Path:
    frame = gpd.GeoDataFrame(
        {"label": [r[0] for r in rows]},
        geometry=[_cell_centre(r, c) for _, r, c in rows],
        crs="EPSG:32633",
    ).to_crs(crs)
    path = tmp_path / "labels.geojson"
    frame.to_file(path)
    return path


def test_reads_the_cell_under_each_label_in_any_crs(raster: Path, tmp_path: Path) -> None:
    rows = [("water", 0, 1), ("water", 3, 4), ("forest", 1, 0), ("forest", 5, 6)]
    labels = _labels(tmp_path, rows, crs="EPSG:4326")  # reprojected onto the raster
    result = scores_at_labels(raster, labels, positive_classes=["water"])
    expected = [(r * 8 + c) / 48.0 for _, r, c in rows]
    assert np.allclose(result.scores, expected, atol=1e-6)
    assert result.positive.tolist() == [True, True, False, False]
    assert result.threshold == 0.5


def test_labels_outside_or_without_a_score_are_counted_and_left_out(
    raster: Path, tmp_path: Path
) -> None:
    rows = [("water", 2, 2), ("forest", 0, 0), ("water", 5, 7), ("forest", 40, 3)]
    result = scores_at_labels(raster, _labels(tmp_path, rows), positive_classes=["water"])
    assert len(result.scores) == 2
    # The label file reader drops the one beyond the raster; the NaN cell is left out here.
    assert result.left_out["no score there"] == 1
    assert "1 outside the scene" in result.report


def test_negative_classes_narrow_and_unknown_classes_are_refused(
    raster: Path, tmp_path: Path
) -> None:
    rows = [("water", 4, 4), ("forest", 0, 0), ("reed", 1, 1), ("forest", 2, 0)]
    labels = _labels(tmp_path, rows)
    every = scores_at_labels(raster, labels, positive_classes=["water"])
    assert every.classes.tolist() == ["water", "forest", "reed", "forest"]
    narrowed = scores_at_labels(raster, labels, positive_classes=["water"],
                                negative_classes=["forest"])  # fmt: skip
    assert narrowed.classes.tolist() == ["water", "forest", "forest"]
    assert narrowed.left_out["unused class"] == 1
    with pytest.raises(InputError, match="several classes"):
        scores_at_labels(raster, labels)
    with pytest.raises(InputError, match=r"lake do not occur.*classes found: forest, reed"):
        scores_at_labels(raster, labels, positive_classes=["lake"])
    with pytest.raises(InputError, match="no negative label has a score"):
        scores_at_labels(raster, _labels(tmp_path, [("water", 1, 1)]), positive_classes=["water"])


def test_metrics_match_the_ranking_and_the_threshold(raster: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    cells = [(int(r), int(c)) for r, c in rng.integers(0, (5, 7), size=(30, 2))]
    rows = [("tree" if (r + c) % 3 else "grass", r, c) for r, c in cells]
    result = scores_at_labels(raster, _labels(tmp_path, rows), positive_classes=["tree"])
    m = label_metrics(result, result.threshold, n_boot=200, seed=0)
    ap = average_precision(result.scores, result.positive)
    assert m["average_precision"] == pytest.approx(ap)
    assert m["roc_auc"] == pytest.approx(roc_auc(result.scores, result.positive))
    assert m["positive_rate"] == pytest.approx(result.positive.mean())
    shown = result.scores >= 0.5
    assert m["tp"] == int((shown & result.positive).sum())
    assert m["fp"] == int((shown & ~result.positive).sum())
    low, high = m["average_precision_interval"]
    assert low <= m["average_precision"] <= high
    assert m["per_class"]["tree"]["positive"] and not m["per_class"]["grass"]["positive"]
    # Without a threshold: ranking only.
    ranking = label_metrics(result, None, n_boot=0)
    assert "f1" not in ranking and ranking["average_precision_interval"] == []
    assert result.blocks is None and m["interval_resamples"].startswith("labels")


def test_the_interval_resamples_blocks_of_three_tiles(tmp_path: Path) -> None:
    """A raster that records its tile size (160 m: 4 cells) groups the labels in blocks
    of 3 x 3 tiles (480 m), as training's folds do: labels there share their context."""
    values = np.arange(48, dtype=np.float64).reshape(6, 8) / 48.0
    with rasterio.open(_scores(tmp_path / "scores.tif", values), "r+") as dst:
        dst.update_tags(tile_extent="160.0")
    rows = [("a", 0, 0), ("b", 1, 1), ("a", 2, 2), ("b", 0, 5), ("a", 5, 7), ("b", 5, 1)]
    result = scores_at_labels(tmp_path / "scores.tif", _labels(tmp_path, rows),
                              positive_classes=["a"])  # fmt: skip
    assert result.block_side == 480.0 and result.blocks is not None
    # Blocks lie on multiples of 480 m in the CRS: here from column 4 and from row 4.
    assert len(set(result.blocks[:3])) == 1 and len(set(result.blocks)) == 4
    m = label_metrics(result, None, n_boot=100)
    assert m["interval_resamples"] == "blocks of 3 x 3 tiles (480 units a side)"


def test_pixel_labels_need_the_image_they_were_drawn_on(tmp_path: Path) -> None:
    """CSV boxes are pixels of the screened image; its grid puts them on the raster."""
    from geoscreen.samples import make_synthetic_scene

    image = make_synthetic_scene(tmp_path / "scene.tif", 64, 48)
    scene = open_scene(image)
    values = np.arange(32 * 24, dtype=np.float64).reshape(24, 32) / (32 * 24)
    transform = scene.transform * Affine.scale(2)  # 2-pixel cells, as a centre raster
    path = tmp_path / "scores.tif"
    with rasterio.open(path, "w", driver="GTiff", width=32, height=24, count=1, dtype="float32",
                       nodata=float("nan"), crs=scene.crs, transform=transform) as dst:  # fmt: skip
        dst.write(values.astype(np.float32), 1)
    boxes = pd.DataFrame({"image_path": "scene.tif", "xmin": [10, 40], "ymin": [6, 30],
                          "xmax": [14, 44], "ymax": [10, 34],
                          "label": ["kiln", "field"]})  # fmt: skip
    csv = tmp_path / "boxes.csv"
    boxes.to_csv(csv, index=False)
    result = scores_at_labels(path, csv, image=scene, positive_classes=["kiln"])
    assert np.allclose(result.scores, [values[4, 6], values[16, 21]], atol=1e-6)
    assert result.threshold is None
    with pytest.raises(InputError, match="pixel coordinates"):
        scores_at_labels(path, csv, positive_classes=["kiln"])
    boxes.drop(columns="image_path").to_csv(csv, index=False)  # no image named
    with pytest.raises(InputError, match="pixel coordinates"):
        scores_at_labels(path, csv, positive_classes=["kiln"])


def test_vector_truth_counts_only_the_positive_class(tmp_path: Path) -> None:
    """Until session 22 every feature of a vector truth file was an object to find."""
    frame = gpd.GeoDataFrame(
        {"label": ["kiln", "kiln", "field", "road"]},
        geometry=[box(i * 10, 0, i * 10 + 5, 5) for i in range(4)],
        crs="EPSG:32633",
    )
    path = tmp_path / "truth.gpkg"
    frame.to_file(path)
    with pytest.raises(InputError, match=r"several classes \(field, kiln, road\)"):
        load_truth(path)
    kilns = load_truth(path, positive_classes=["kiln"])
    assert len(kilns) == 2 and kilns.attrs["not_truth"] == {"field": 1, "road": 1}
    with pytest.raises(InputError, match="lake do not occur"):
        load_truth(path, positive_classes=["lake"])
    frame.assign(label=["Tree"] * 4).to_file(tmp_path / "one.gpkg")
    assert len(load_truth(tmp_path / "one.gpkg")) == 4  # one class: it is the truth
    frame.assign(label=["positive", "negative", "positive", "no"]).to_file(tmp_path / "pn.gpkg")
    assert len(load_truth(tmp_path / "pn.gpkg")) == 2
    frame.drop(columns="label").to_file(tmp_path / "bare.gpkg")
    assert len(load_truth(tmp_path / "bare.gpkg")) == 4  # no classes: every feature
    with pytest.raises(InputError, match="needs a 'label' column"):
        load_truth(tmp_path / "bare.gpkg", positive_classes=["kiln"])
