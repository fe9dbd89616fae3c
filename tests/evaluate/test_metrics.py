"""Object-level evaluation on hand-built cases, checked against hand computations and sklearn."""

from __future__ import annotations

import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from geoscreen.errors import ConfigError, InputError
from geoscreen.evaluate.metrics import (
    FN,
    FP,
    TP,
    Criterion,
    bootstrap_intervals,
    evaluate_sites,
    pr_curve,
    precision_at_k,
    roc_curve,
    tile_metrics,
)
from geoscreen.evaluate.truth import load_truth
from geoscreen.imagery.scene import open_scene
from geoscreen.matching import MatchRule, match_hungarian, match_in_score_order
from geoscreen.ranking import average_precision, object_average_precision
from geoscreen.samples import sample_path

UTM = "EPSG:32633"


def frame(
    geoms: list[shapely.Geometry], crs: str | None = UTM, **columns: list[object]
) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(dict(columns), geometry=geoms, crs=crs)


def sq(x: float, y: float, size: float = 10.0) -> shapely.Polygon:
    return shapely.box(x, y, x + size, y + size)


def test_one_to_one_second_prediction_on_the_same_object_is_a_false_positive() -> None:
    pred = frame([sq(0, 0), sq(1, 0)], score_max=[0.9, 0.8])
    truth = frame([sq(0, 0)])
    ev = evaluate_sites(pred, truth, Criterion(iou=0.5), n_boot=0)
    assert (ev.metrics["tp"], ev.metrics["fp"], ev.metrics["fn"]) == (1, 1, 0)
    assert ev.metrics["precision"] == 0.5 and ev.metrics["recall"] == 1.0
    assert ev.metrics["f1"] == pytest.approx(2 / 3)
    assert list(ev.predicted["outcome"]) == [TP, FP]
    assert list(ev.truth["outcome"]) == [TP]


def test_hungarian_finds_more_matches_than_greedy() -> None:
    # Prediction 0 overlaps both truths; prediction 1 only the first.
    pred = np.array([shapely.box(0, 0, 20, 10), shapely.box(-4, 0, 10, 10)])
    truth = np.array([shapely.box(0, 0, 10, 10), shapely.box(10, 0, 20, 10)])
    pairs = match_hungarian(pred, truth, MatchRule("iou", min_iou=0.4))
    assert sorted(zip(pairs.left.tolist(), pairs.right.tolist(), strict=True)) == [(0, 1), (1, 0)]
    # Greedy in score order gives prediction 0 the better truth (0) and leaves 1 unmatched.
    greedy = match_in_score_order(pred, np.array([0.9, 0.8]), truth, MatchRule("iou", 0.4))
    assert greedy.tolist() == [0, -1]


def test_ties_resolve_deterministically() -> None:
    pred = frame([sq(0, 0), sq(0, 0)], score_max=[0.5, 0.5])
    truth = frame([sq(0, 0)])
    first = evaluate_sites(pred, truth, n_boot=0)
    again = evaluate_sites(pred, truth, n_boot=0)
    assert list(first.predicted["outcome"]) == list(again.predicted["outcome"])
    assert sorted(first.predicted["outcome"]) == [FP, TP]
    # Equal scores rank together: AP is the same whichever of the two is the TP.
    assert first.metrics["average_precision"] == pytest.approx(0.5)


def test_empty_truth_and_empty_predictions() -> None:
    pred = frame([sq(0, 0)], score_max=[0.9])
    no_truth = evaluate_sites(pred, frame([]), n_boot=0).metrics
    assert (no_truth["tp"], no_truth["fp"], no_truth["fn"]) == (0, 1, 0)
    assert no_truth["precision"] == 0.0 and math.isnan(no_truth["recall"])
    assert math.isnan(no_truth["average_precision"])
    no_pred = evaluate_sites(frame([], score_max=[]), frame([sq(0, 0)]), n_boot=0).metrics
    assert (no_pred["tp"], no_pred["fp"], no_pred["fn"]) == (0, 0, 1)
    assert no_pred["recall"] == 0.0 and no_pred["average_precision"] == 0.0


def test_points_need_centre_distance() -> None:
    pred = frame([sq(0, 0), sq(100, 0)], score_max=[0.9, 0.8])
    truth = frame([shapely.Point(6, 5), shapely.Point(150, 5)])
    with pytest.raises(ConfigError, match="distance"):
        evaluate_sites(pred, truth, Criterion(iou=0.4))
    ev = evaluate_sites(pred, truth, Criterion(distance=2.0), n_boot=0)
    assert (ev.metrics["tp"], ev.metrics["fp"], ev.metrics["fn"]) == (1, 1, 1)
    assert ev.criterion == "centre distance <= 2 m"


def test_mixed_crss_are_reprojected_before_matching() -> None:
    pred = frame([sq(500_000, 4_500_000, 20), sq(500_500, 4_500_000, 20)], score_max=[0.9, 0.6])
    # The same squares in EPSG:4326; the second shifted 8 m east.
    shifted = [sq(500_000, 4_500_000, 20), sq(500_508, 4_500_000, 20)]
    truth = frame(shifted).to_crs(4326)
    ev = evaluate_sites(pred, truth, Criterion(iou=0.4), n_boot=0)
    assert ev.metrics["tp"] == 2 and ev.units == "m"
    assert ev.predicted["similarity"].iloc[0] == pytest.approx(1.0, abs=1e-6)
    assert ev.predicted["similarity"].iloc[1] == pytest.approx(12 / 28, abs=1e-3)
    assert evaluate_sites(pred, truth, Criterion(distance=8.1), n_boot=0).metrics["tp"] == 2
    assert evaluate_sites(pred, truth, Criterion(distance=7.9), n_boot=0).metrics["tp"] == 1
    assert ev.predicted.crs.to_epsg() == 4326 and ev.truth.crs.to_epsg() == 4326


def test_pixel_truth_against_georeferenced_sites_is_refused() -> None:
    with pytest.raises(InputError, match="pixel"):
        evaluate_sites(frame([sq(0, 0)], score_max=[0.9]), frame([sq(0, 0)], crs=None))


def test_average_precision_by_hand_and_against_sklearn() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    hits = np.array([True, False, True, False])
    # Recall over 3 objects: steps of 1/3 at precision 1 and 2/3; the third never found.
    assert object_average_precision(scores, hits, 3) == pytest.approx(1 / 3 + 2 / 9)
    # With every object found, it is scikit-learn's AP.
    rng = np.random.default_rng(0)
    s = rng.random(200).round(2)  # with ties
    h = rng.random(200) < 0.3
    assert object_average_precision(s, h, int(h.sum())) == pytest.approx(
        average_precision_score(h, s)
    )
    assert object_average_precision(s, np.zeros(200, bool), 5) == 0.0


def test_ap_of_a_ranking_matched_in_score_order() -> None:
    # Three objects; sites at scores 0.9 (hit), 0.8 (duplicate of the same object), 0.7 (hit).
    truth = frame([sq(0, 0), sq(50, 0), sq(100, 0)])
    pred = frame([sq(0, 0), sq(1, 0), sq(50, 0)], score_max=[0.9, 0.8, 0.7])
    ev = evaluate_sites(pred, truth, Criterion(iou=0.5), n_boot=0)
    assert ev.metrics["average_precision"] == pytest.approx(1 / 3 * 1 + 1 / 3 * 2 / 3)
    assert ev.metrics["precision_at_k"]["10"] == pytest.approx(2 / 3)
    assert ev.curve["recall"] == pytest.approx([1 / 3, 1 / 3, 2 / 3])


def test_precision_at_k() -> None:
    scores = np.array([0.2, 0.9, 0.8, 0.1])
    hits = np.array([True, True, False, False])
    assert precision_at_k(scores, hits, (1, 2, 3, 10)) == {1: 1.0, 2: 0.5, 3: 2 / 3, 10: 0.5}
    assert math.isnan(precision_at_k(np.zeros(0), np.zeros(0, bool), (5,))[5])


def test_curves_against_sklearn() -> None:
    rng = np.random.default_rng(3)
    s = rng.random(300).round(2)
    t = rng.random(300) < s  # informative scores
    curve = pr_curve(s, t, int(t.sum()))
    precision, recall, thresholds = precision_recall_curve(t, s)
    # sklearn lists thresholds ascending and appends (1, 0); compare on the same thresholds.
    ours = dict(zip(curve["threshold"], zip(curve["precision"], curve["recall"], strict=True),
                    strict=True))  # fmt: skip
    for p, r, th in zip(precision[:-1], recall[:-1], thresholds, strict=True):
        assert ours[th] == pytest.approx((p, r))
    roc = roc_curve(s, t)
    assert float(roc["auc"]) == pytest.approx(roc_auc_score(t, s))
    tiles = tile_metrics(s, t, 0.5)
    assert tiles["average_precision"] == pytest.approx(average_precision(s, t))
    assert tiles["roc_auc"] == pytest.approx(roc_auc_score(t, s))
    assert tiles["tp"] == int(((s >= 0.5) & t).sum())


def test_bootstrap_is_seeded_and_brackets_the_estimate() -> None:
    outcome = np.array([TP] * 30 + [FP] * 10 + [FN] * 20)
    scores = np.linspace(1, 0, 40)
    ranked = np.r_[np.ones(30, bool), np.zeros(10, bool)]
    a = bootstrap_intervals(outcome, scores, ranked, n_boot=300, seed=1)
    b = bootstrap_intervals(outcome, scores, ranked, n_boot=300, seed=1)
    c = bootstrap_intervals(outcome, scores, ranked, n_boot=300, seed=2)
    assert a == b and a != c
    assert a["precision"][0] < 0.75 < a["precision"][1]
    assert a["recall"][0] < 0.6 < a["recall"][1]
    ap = object_average_precision(scores, ranked, 50)
    assert a["average_precision"][0] < ap < a["average_precision"][1]
    assert bootstrap_intervals(np.array([]), np.zeros(0), np.zeros(0, bool)) == {}


def test_groups_by_scene_and_by_region() -> None:
    pred = frame([sq(0, 0), sq(1000, 0), sq(2000, 0)], score_max=[0.9, 0.8, 0.7],
                 scene_id=["a", "b", "b"])  # fmt: skip
    truth = frame([sq(0, 0), sq(1000, 0), sq(3000, 0)], scene_id=["a", "b", "b"])
    ev = evaluate_sites(pred, truth, n_boot=0)
    assert ev.groups["a"] == {"predicted": 1, "truth": 1, "tp": 1, "fp": 0, "fn": 0,
                              "precision": 1.0, "recall": 1.0}  # fmt: skip
    assert ev.groups["b"]["fp"] == 1 and ev.groups["b"]["fn"] == 1
    regions = frame([shapely.box(-10, -10, 1500, 100), shapely.box(1500, -10, 4000, 100)],
                    name=["west", "east"])  # fmt: skip
    by_region = evaluate_sites(pred, truth, regions=regions, n_boot=0).groups
    assert set(by_region) == {"west", "east"}
    assert by_region["west"]["tp"] == 2 and by_region["east"]["fn"] == 1
    with pytest.raises(ConfigError, match="region"):
        evaluate_sites(pred, truth, group_column="region", n_boot=0)


def test_score_threshold_limits_the_predictions_counted() -> None:
    pred = frame([sq(0, 0), sq(50, 0)], score_max=[0.9, 0.3])
    truth = frame([sq(0, 0), sq(50, 0)])
    m = evaluate_sites(pred, truth, score_threshold=0.5, n_boot=0).metrics
    assert (m["tp"], m["fp"], m["fn"]) == (1, 0, 1)
    assert m["average_precision"] == pytest.approx(1.0)  # AP ranks every site


def test_truth_from_the_bundled_labels() -> None:
    yell = open_scene(sample_path("neon_yell"))
    voc = load_truth(sample_path("neon_yell_labels"), yell)
    assert len(voc) == 279 and voc.crs is None and set(voc["scene_id"]) == {yell.id}
    osbs = open_scene(sample_path("neon_osbs"))
    csv = load_truth(sample_path("neon_osbs_labels"), osbs)
    assert len(csv) == 61 and csv.crs.to_epsg() == 32617
    with pytest.raises(InputError, match="--image"):
        load_truth(sample_path("neon_yell_labels"))


@pytest.mark.filterwarnings("ignore:'crs' was not provided")
def test_truth_vector_files(tmp_path: Path) -> None:
    good = frame([sq(0, 0)], crs="EPSG:4326")
    good.to_file(tmp_path / "truth.geojson")
    assert len(load_truth(tmp_path / "truth.geojson")) == 1
    frame([sq(0, 0)], crs=None).to_file(tmp_path / "nocrs.gpkg")
    with pytest.raises(InputError, match="no CRS"):
        load_truth(tmp_path / "nocrs.gpkg")
    with pytest.raises(InputError, match="not found"):
        load_truth(tmp_path / "missing.geojson")
