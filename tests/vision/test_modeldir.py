"""Model directories and card sections shared by classifiers and detectors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import nn

from geoscreen.errors import ConfigError, InputError
from geoscreen.fileio import sha256_file
from geoscreen.vision.cards import data_lines, limits_lines, split_lines
from geoscreen.vision.detector import load_detector
from geoscreen.vision.modeldir import (
    CARD_FILE,
    CARD_MARKDOWN,
    WEIGHTS_FILE,
    read_model_dir,
    restore_weights,
    save_model_dir,
)

NOT_A_CARD = InputError("not a card of this test")


def is_card(card: dict[str, Any]) -> bool:
    return card.get("task") == "test"


@pytest.fixture
def saved(tmp_path: Path) -> tuple[nn.Module, Path, str]:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    digest = save_model_dir(
        model, {"task": "test"}, tmp_path, lambda card: f"# {card['model_sha256']}\n"
    )
    return model, tmp_path, digest


def test_save_writes_weights_then_card_with_their_hash(saved: tuple[nn.Module, Path, str]) -> None:
    _model, folder, digest = saved
    assert {p.name for p in folder.iterdir()} == {WEIGHTS_FILE, CARD_FILE, CARD_MARKDOWN}
    assert digest == sha256_file(folder / WEIGHTS_FILE)
    assert yaml.safe_load((folder / CARD_FILE).read_text()) == {
        "task": "test",
        "model_sha256": digest,
    }
    assert (folder / CARD_MARKDOWN).read_text() == f"# {digest}\n"


def test_read_and_restore_round_trip(saved: tuple[nn.Module, Path, str]) -> None:
    model, folder, digest = saved
    card, state = read_model_dir(folder, is_card, NOT_A_CARD)
    assert card["model_sha256"] == digest
    fresh = nn.Linear(3, 2).train()
    assert restore_weights(fresh, state, folder, "layer", "cpu") == digest
    assert not fresh.training
    assert torch.equal(fresh.weight, model.weight) and torch.equal(fresh.bias, model.bias)
    with pytest.raises(ConfigError, match=r"model\.pt does not match the layer in model\.yaml"):
        restore_weights(nn.Linear(4, 2), state, folder, "layer", "cpu")


@pytest.mark.parametrize(
    "text", ["task: [unclosed", "just a string", "task: other\n"], ids=["yaml", "str", "other"]
)
def test_a_card_that_fails_is_refused_with_the_callers_error(
    saved: tuple[nn.Module, Path, str], text: str
) -> None:
    folder = saved[1]
    (folder / CARD_FILE).write_text(text)
    with pytest.raises(InputError) as caught:
        read_model_dir(folder, is_card, NOT_A_CARD)
    assert caught.value is NOT_A_CARD
    (folder / WEIGHTS_FILE).unlink()
    with pytest.raises(InputError, match="not a geoscreen model directory"):
        read_model_dir(folder, is_card, NOT_A_CARD)


def test_detector_card_that_is_not_yaml_is_an_input_error(tmp_path: Path) -> None:
    torch.save({"w": torch.zeros(1)}, tmp_path / WEIGHTS_FILE)
    (tmp_path / CARD_FILE).write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(InputError, match="not the card of a detection model"):
        load_detector(tmp_path)


def test_markdown_sections_of_both_tasks() -> None:
    card = {
        "data": {
            "labels": [
                {"path": "a.csv", "sha256": "aa", "positives": 3},
                {"path": "b.xml", "sha256": "bb", "objects": 7},
            ],
            "scenes": [{"uri": "s.tif", "id": "s1"}],
        },
        "split": {"method": "spatially blocked", "description": "2 of 9 blocks"},
        "limits": ["small data"],
    }
    assert data_lines(card) == [
        "",
        "## Data",
        "- labels `a.csv` sha256 `aa`",
        "- labels `b.xml` (7 objects) sha256 `bb`",
        "- scene `s.tif` id `s1`",
    ]
    assert split_lines(card)[1:] == ["## Validation split", "- spatially blocked: 2 of 9 blocks"]
    assert limits_lines(card) == ["", "## Known limits", "- small data"]
    assert data_lines({}) == ["", "## Data"] and limits_lines({}) == ["", "## Known limits"]
