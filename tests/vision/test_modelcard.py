"""Typed model cards: old cards upgrade and load, bad fields are named, pages still render.

The ``card_v1_*.yaml`` files are ``model.yaml`` files written by geoscreen before cards
had a ``card_version`` (a learner-selection classifier, a fine-tuned classifier and a
detector, each trained on the bundled NEON OSBS_029 scene).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from geoscreen.cli.app import main
from geoscreen.errors import InputError
from geoscreen.imagery.region import card_warnings, region_from_card, training_region
from geoscreen.imagery.scene import open_scene
from geoscreen.profiles import load_profile
from geoscreen.samples import make_synthetic_scene, sample_path
from geoscreen.vision.classifier import load_model, render_card_markdown
from geoscreen.vision.detect_card import render_detection_card
from geoscreen.vision.detect_infer import decision_threshold
from geoscreen.vision.modelcard import (
    CARD_VERSION,
    ClassifyCard,
    DetectCard,
    SampledHardNegatives,
    parse_card,
    read_card,
    upgrade_card,
)
from geoscreen.vision.modeldir import CARD_FILE
from geoscreen.vision.testing import untrained_model_dir

DATA = Path(__file__).resolve().parent / "data"
CONFIGS = Path(__file__).resolve().parents[2] / "geoscreen" / "configs"


def v1(name: str) -> dict[str, Any]:
    raw = yaml.safe_load((DATA / f"card_v1_{name}.yaml").read_text(encoding="utf-8"))
    assert isinstance(raw, dict) and "card_version" not in raw
    return raw


def test_a_selection_card_of_version_1_loads_as_typed() -> None:
    card = read_card(DATA / "card_v1_spectral.yaml")
    assert isinstance(card, ClassifyCard) and card.card_version == CARD_VERSION
    assert card.learner is not None and card.learner.features == "spectral"
    assert card.backbone is None and card.channels == 3
    assert card.selection is not None and card.selection.chosen == card.learner.name
    assert card.thresholds is not None and "best_f1" in card.thresholds.suggested
    assert card.data.labels[0].classes is not None
    assert card.data.labels[0].classes["Tree"].role == "positive"
    assert card.region is None and card.hard_negatives is None  # written before either
    assert card.preprocess == load_profile(CONFIGS / "tree_crowns_neon.yaml").preprocess
    page = render_card_markdown(card)
    assert page.startswith("# Model card: tree_crowns_neon v0.1.0")
    assert "**spectral_gbm** (chosen)" in page and "| best f1 |" in page


def test_a_fine_tuned_card_of_version_1_loads_as_typed() -> None:
    card = read_card(DATA / "card_v1_finetune.yaml")
    assert isinstance(card, ClassifyCard) and card.learner is None
    assert card.backbone is not None and card.backbone.name == "efficientnet_lite0"
    assert card.training is not None and card.training.epochs_run == 1
    assert card.split is not None and card.split.val_chips is not None
    page = render_card_markdown(card)
    assert "## Metrics on the held-out block" in page and "- backbone: `efficientnet_lite0`" in page


def test_a_detector_card_of_version_1_loads_as_typed() -> None:
    card = read_card(DATA / "card_v1_detect.yaml")
    assert isinstance(card, DetectCard) and card.detector.architecture == "fcos"
    assert card.region is None and card.hard_negatives is None
    assert card.training is not None and card.training.threshold_f1_at_04 is not None
    assert card.training.epochs and card.training.epochs[0]["chips"] == 8
    profile = load_profile(CONFIGS / "tree_crowns_detect_neon.yaml")
    assert decision_threshold(profile, card) == (card.threshold, "model card")
    # an older card has no threshold of its own for --tta: its one threshold applies
    assert card.tta_threshold is None
    assert decision_threshold(profile, card, tta=True) == (card.threshold, "model card")
    with_tta = card.model_copy(update={"tta_threshold": 0.35})
    assert decision_threshold(profile, with_tta, tta=True) == (0.35, "model card, for --tta")
    assert decision_threshold(profile, with_tta) == (card.threshold, "model card")
    own = profile.model_copy(update={"threshold": 0.6})
    own.model_fields_set.add("threshold")  # a profile that sets one wins, --tta or not
    assert decision_threshold(own, with_tta, tta=True) == (0.6, "profile")
    assert "with `--tta`" in render_detection_card(with_tta)
    page = render_detection_card(card)
    assert "fcos on a feature pyramid" in page and "- val_fp@0.5: 300" in page
    assert "with `--tta`" not in page
    # Written back, the card keeps its aliased keys and reads back the same.
    written = card.to_yaml_dict()
    assert "threshold_f1@0.4" in written["training"] and written["card_version"] == CARD_VERSION
    assert parse_card(written) == card


def test_version_1_without_a_task_is_a_classifier() -> None:
    raw = v1("finetune")
    del raw["task"]
    upgraded = upgrade_card(raw)
    assert upgraded["task"] == "classify" and upgraded["card_version"] == CARD_VERSION
    assert isinstance(parse_card(raw), ClassifyCard)
    assert "card_version" not in raw  # the caller's values are left alone


def test_older_shapes_still_load() -> None:
    """Detector cards from before anchors were fitted and tiles standardised, and minimal
    classifier cards (no fingerprint, data, split or training), as the loaders took them."""
    raw = v1("detect")
    for key in ("anchor_px", "tile_norm"):
        del raw["detector"][key]
    card = parse_card(raw)
    assert isinstance(card, DetectCard)
    assert (card.detector.anchor_px, card.detector.tile_norm) == ([], False)
    minimal = {
        key: v1("finetune")[key]
        for key in ("profile", "backbone", "input_stats", "preprocess", "tiling", "threshold")
    }
    minimal["profile"] = {"name": "p", "version": "1"}
    del minimal["backbone"]["weights"]
    card = parse_card(minimal)
    assert isinstance(card, ClassifyCard) and card.training is None and card.data.labels == []
    assert "profile fingerprint: `?`" in render_card_markdown(card)


def test_a_card_from_a_newer_geoscreen_is_refused() -> None:
    with pytest.raises(InputError, match="newer than this geoscreen reads"):
        parse_card({**v1("finetune"), "card_version": CARD_VERSION + 1}, "m/model.yaml")


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"treshold": 0.4}, "model card treshold: unknown field"),
        ({"task": "segment"}, "task: unknown task 'segment'"),
        ({"threshold": "high"}, "model card threshold: Input should be a valid number"),
        ({"card_version": "two"}, "card_version: not a card version ('two')"),
    ],
    ids=["unknown-field", "unknown-task", "wrong-type", "bad-version"],
)
def test_a_bad_card_names_the_file_and_the_field(change: dict[str, Any], said: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_card({**v1("finetune"), **change}, "m/model.yaml")
    message = caught.value.message
    assert message.startswith(f"m/model.yaml: {said}") and "\n" not in message


def test_a_nested_unknown_field_is_named_with_its_path() -> None:
    raw = v1("detect")
    raw["detector"]["anchor_pixels"] = [1.0]
    raw["data"]["labels"][0]["sha"] = "x"
    with pytest.raises(InputError) as caught:
        parse_card(raw, "m/model.yaml")
    message = caught.value.message
    assert "detector.anchor_pixels: unknown field" in message
    assert "data.labels[0].sha: unknown field" in message


def test_hard_negatives_and_the_training_region_are_typed_top_level_sections() -> None:
    """Cards as written before card_version with hard negatives and a training region at
    the top level load typed, each card type with its own hard-negative shape; the
    region reads the same from a typed card and from its YAML values."""
    osbs = open_scene(sample_path("neon_osbs"))
    region = training_region([osbs]).to_dict()
    raw = v1("detect")
    raw["hard_negatives"] = {"chips": 5, "chips_per_epoch_each": 1, "weighted": False}
    raw["region"] = region
    card = parse_card(raw)
    assert isinstance(card, DetectCard) and card.hard_negatives == SampledHardNegatives(chips=5)
    assert card.region is not None and set(card.region.band_stats) == set(osbs.band_names)
    typed, plain = region_from_card(card), region_from_card(card.to_yaml_dict())
    assert typed is not None and plain is not None and typed.stats == plain.stats
    assert typed.footprint is not None and osbs.footprint is not None
    assert typed.footprint.equals(osbs.footprint)
    assert card_warnings(card, osbs) == []  # the scene it was trained on
    assert parse_card(card.to_yaml_dict()) == card
    spectral = v1("spectral")
    spectral["hard_negatives"] = {"chips": 2, "weight": 4.0, "of_negative_weight": 0.1}
    spectral["region"] = region
    card = parse_card(spectral)
    assert isinstance(card, ClassifyCard) and card.hard_negatives is not None
    assert (card.hard_negatives.chips, card.hard_negatives.weight) == (2, 4.0)
    assert parse_card(card.to_yaml_dict()) == card
    spectral["hard_negatives"] = {"chips": 2, "weighted": False}  # a detector's, unweighed
    with pytest.raises(InputError, match=r"hard_negatives\.weight: required field is missing"):
        parse_card(spectral)
    raw["region"] = {**region, "bands": {}}
    with pytest.raises(InputError, match=r"region\.bands: unknown field"):
        parse_card(raw)


def test_the_cli_refuses_a_hand_edited_card_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``geoscreen screen`` with a model whose card has a typo: exit 2, one line naming the
    file and the field, nothing written."""
    scene_path = tmp_path / "scene.tif"
    make_synthetic_scene(scene_path, 128, 128, seed=0, structures=2)
    profile_path = tmp_path / "profile.yaml"
    profile_path.write_text(
        yaml.safe_dump({
            "name": "card_probe", "version": "0.1.0", "description": "Generated RGB.",
            "imagery": {"sensor": "rgb", "bands": ["red", "green", "blue"]},
            "tiling": {"tile_size": 64, "overlap": 0},
            "model": {"task": "classify", "backbone": "mobilenet_v3_small"},
        }),
        encoding="utf-8",
    )  # fmt: skip
    torch.manual_seed(0)
    model = untrained_model_dir(load_profile(profile_path), open_scene(scene_path), tmp_path / "m")
    assert load_model(model).card.card_version == CARD_VERSION
    card = yaml.safe_load((model / CARD_FILE).read_text(encoding="utf-8"))
    card["tiling"]["tile_sise"] = 64
    (model / CARD_FILE).write_text(yaml.safe_dump(card), encoding="utf-8")
    out = tmp_path / "out"
    code = main(["screen", str(profile_path), str(scene_path), "--model", str(model),
                 "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{model / CARD_FILE}: model card tiling.tile_sise: unknown field" in err
    assert "Traceback" not in err and not out.exists()
