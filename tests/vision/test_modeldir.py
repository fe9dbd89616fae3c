"""Model directories and card sections shared by classifiers and detectors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from geoscreen.errors import ConfigError, InputError
from geoscreen.fileio import sha256_file
from geoscreen.imagery.preprocess import PreprocessConfig
from geoscreen.profiles import TilingConfig
from geoscreen.vision.cards import data_lines, limits_lines, split_lines
from geoscreen.vision.detector import load_detector
from geoscreen.vision.modelcard import (
    CARD_VERSION,
    BackboneRecord,
    ClassifyCard,
    DataRecord,
    LabelRecord,
    ProfileRecord,
    SceneRecord,
    SplitRecord,
)
from geoscreen.vision.modeldir import (
    CARD_FILE,
    CARD_MARKDOWN,
    WEIGHTS_FILE,
    read_model_dir,
    restore_weights,
    save_model_dir,
)

NOT_A_CARD = InputError("not a card of this test")


def small_card() -> ClassifyCard:
    return ClassifyCard(
        profile=ProfileRecord(name="p", version="1"),
        backbone=BackboneRecord(name="resnet18", in_channels=3),
        preprocess=PreprocessConfig(),
        tiling=TilingConfig(),
    )


@pytest.fixture
def saved(tmp_path: Path) -> tuple[nn.Module, Path, str]:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    card = save_model_dir(model, small_card(), tmp_path, lambda c: f"# {c.model_sha256}\n")
    return model, tmp_path, str(card.model_sha256)


def test_save_writes_weights_then_card_with_their_hash(saved: tuple[nn.Module, Path, str]) -> None:
    _model, folder, digest = saved
    assert {p.name for p in folder.iterdir()} == {WEIGHTS_FILE, CARD_FILE, CARD_MARKDOWN}
    assert digest == sha256_file(folder / WEIGHTS_FILE)
    written = yaml.safe_load((folder / CARD_FILE).read_text())
    assert written["model_sha256"] == digest and written["card_version"] == CARD_VERSION
    assert written["task"] == "classify" and "learner" not in written  # unset: left out
    assert (folder / CARD_MARKDOWN).read_text() == f"# {digest}\n"


def test_read_and_restore_round_trip(saved: tuple[nn.Module, Path, str]) -> None:
    model, folder, digest = saved
    card, state = read_model_dir(folder, ClassifyCard, NOT_A_CARD)
    assert card.model_sha256 == digest
    assert card == small_card().model_copy(update={"model_sha256": digest})
    fresh = nn.Linear(3, 2).train()
    assert restore_weights(fresh, state, folder, "layer", "cpu") == digest
    assert not fresh.training
    assert torch.equal(fresh.weight, model.weight) and torch.equal(fresh.bias, model.bias)
    with pytest.raises(ConfigError, match=r"model\.pt does not match the layer in model\.yaml"):
        restore_weights(nn.Linear(4, 2), state, folder, "layer", "cpu")


@pytest.mark.parametrize(
    "text", ["task: [unclosed", "just a string", "task: detect\n"], ids=["yaml", "str", "other"]
)
def test_a_card_that_fails_is_refused_with_the_callers_error(
    saved: tuple[nn.Module, Path, str], text: str
) -> None:
    folder = saved[1]
    (folder / CARD_FILE).write_text(text)
    with pytest.raises(InputError) as caught:
        read_model_dir(folder, ClassifyCard, NOT_A_CARD)
    assert caught.value is NOT_A_CARD
    (folder / WEIGHTS_FILE).unlink()
    with pytest.raises(InputError, match="not a geoscreen model directory"):
        read_model_dir(folder, ClassifyCard, NOT_A_CARD)


def test_a_card_with_a_bad_field_names_the_file_and_the_field(
    saved: tuple[nn.Module, Path, str],
) -> None:
    folder = saved[1]
    card = yaml.safe_load((folder / CARD_FILE).read_text())
    (folder / CARD_FILE).write_text(yaml.safe_dump({**card, "treshold": 0.4}))
    with pytest.raises(InputError) as caught:
        read_model_dir(folder, ClassifyCard, NOT_A_CARD)
    assert caught.value.message.startswith(f"{folder / CARD_FILE}: model card treshold: unknown")
    card["backbone"]["in_channels"] = "three"
    (folder / CARD_FILE).write_text(yaml.safe_dump(card))
    with pytest.raises(InputError, match=r"backbone\.in_channels: .*'three'"):
        read_model_dir(folder, ClassifyCard, NOT_A_CARD)


def test_a_card_that_fails_validation_is_not_written(tmp_path: Path) -> None:
    card = small_card()
    card.backbone = None  # a fine-tuned model needs its backbone
    with pytest.raises(InputError, match="backbone: required"):
        save_model_dir(nn.Linear(3, 2), card, tmp_path, lambda c: "")
    assert list(tmp_path.iterdir()) == []


def test_detector_card_that_is_not_yaml_is_an_input_error(tmp_path: Path) -> None:
    torch.save({"w": torch.zeros(1)}, tmp_path / WEIGHTS_FILE)
    (tmp_path / CARD_FILE).write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(InputError, match="not the card of a detection model"):
        load_detector(tmp_path)


def test_markdown_sections_of_both_tasks() -> None:
    card = small_card().model_copy(
        update={
            "data": DataRecord(
                labels=[
                    LabelRecord(path="a.csv", sha256="aa", scene_id="s1", positives=3),
                    LabelRecord(path="b.xml", sha256="bb", scene_id="s1", objects=7),
                ],
                scenes=[SceneRecord(uri="s.tif", id="s1")],
            ),
            "split": SplitRecord(method="spatially blocked", description="2 of 9 blocks"),
            "limits": ["small data"],
        }
    )
    assert data_lines(card) == [
        "",
        "## Data",
        "- labels `a.csv` sha256 `aa`",
        "- labels `b.xml` (7 objects) sha256 `bb`",
        "- scene `s.tif` id `s1`",
    ]
    assert split_lines(card)[1:] == ["## Validation split", "- spatially blocked: 2 of 9 blocks"]
    assert limits_lines(card) == ["", "## Known limits", "- small data"]
    bare = small_card()
    assert data_lines(bare) == ["", "## Data"] and limits_lines(bare) == ["", "## Known limits"]
