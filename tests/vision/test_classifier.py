"""Tile classifier and model directories: round trip, hash check, bad folders."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

from geoscreen.errors import ConfigError, InputError
from geoscreen.fileio import sha256_file
from geoscreen.vision.backbones import BackboneSpec, build_backbone, input_stats
from geoscreen.vision.classifier import (
    CARD_FILE,
    CARD_MARKDOWN,
    WEIGHTS_FILE,
    TileClassifier,
    load_model,
    render_card_markdown,
    save_model,
    spec_from_card,
)
from geoscreen.vision.modelcard import ClassifyCard, read_card


def make_model(name: str = "mobilenet_v3_small", seed: int = 0) -> TileClassifier:
    torch.manual_seed(seed)
    spec = BackboneSpec(name, 4, band_roles=("red", "green", "blue", "nir"))
    mean, std = input_stats(spec)
    model = TileClassifier(build_backbone(spec), mean, std)
    torch.nn.init.normal_(model.head.weight, std=0.1)
    return model.eval()


def card_for(model: TileClassifier, name: str = "mobilenet_v3_small") -> ClassifyCard:
    return ClassifyCard.model_validate({
        "profile": {"name": "test_profile", "version": "1.0.0", "fingerprint": "0" * 64},
        "backbone": {
            "name": name,
            "in_channels": 4,
            "band_roles": ["red", "green", "blue", "nir"],
            "weights": None,
        },
        "input_stats": {
            "mean": model.norm.mean.flatten().tolist(),
            "std": model.norm.std.flatten().tolist(),
        },
        "threshold": 0.7,
        "metrics": {"val_average_precision": 0.5, "val_tp": 3},
        "limits": ["a test model"],
        "preprocess": {},
        "tiling": {},
    })  # fmt: skip


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[TileClassifier, Path, str]:
    model = make_model()
    folder = tmp_path_factory.mktemp("model")
    digest = save_model(model, card_for(model), folder)
    return model, folder, digest


def test_forward_shapes_and_score_and_embed() -> None:
    model = make_model()
    x = torch.rand(5, 4, 64, 64)
    with torch.inference_mode():
        logits = model(x)
        prob, feats = model.score_and_embed(x)
    assert logits.shape == (5,) and feats.shape == (5, model.backbone.out_features)
    assert torch.allclose(prob, torch.sigmoid(logits))
    assert torch.all((prob >= 0) & (prob <= 1))
    assert torch.allclose(feats, model.features(x))
    # The input normalisation uses the backbone's statistics.
    assert torch.allclose(
        model.norm(torch.zeros(1, 4, 1, 1)).flatten(),
        -model.norm.mean.flatten() / model.norm.std.flatten(),
    )


def test_save_load_round_trip(saved: tuple[TileClassifier, Path, str]) -> None:
    model, folder, digest = saved
    assert {p.name for p in folder.iterdir()} == {WEIGHTS_FILE, CARD_FILE, CARD_MARKDOWN}
    assert digest == sha256_file(folder / WEIGHTS_FILE)
    loaded = load_model(folder)
    assert loaded.sha256 == digest and loaded.card.model_sha256 == digest
    assert loaded.card.threshold == 0.7 and loaded.path == folder
    assert loaded.card == card_for(model).model_copy(update={"model_sha256": digest})
    assert not loaded.model.training
    x = torch.rand(3, 4, 48, 48, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        assert torch.equal(loaded.model(x), model(x))
        assert torch.equal(loaded.model.features(x), model.features(x))
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key
    assert spec_from_card(loaded.card) == BackboneSpec(
        "mobilenet_v3_small", 4, band_roles=("red", "green", "blue", "nir")
    )


def test_card_markdown(saved: tuple[TileClassifier, Path, str]) -> None:
    _model, folder, digest = saved
    text = (folder / CARD_MARKDOWN).read_text(encoding="utf-8")
    assert text.startswith("# Model card: test_profile v1.0.0")
    assert "matches the screening profile" in text
    assert digest in text and "val_average_precision: 0.500" in text
    assert "- a test model" in text
    assert "traffick" not in text.lower()
    card = read_card(folder / CARD_FILE)
    assert isinstance(card, ClassifyCard) and render_card_markdown(card) == text


def copy_model(saved: tuple[TileClassifier, Path, str], tmp_path: Path) -> Path:
    folder = tmp_path / "copy"
    shutil.copytree(saved[1], folder)
    return folder


def test_tampered_weights_refused(saved: tuple[TileClassifier, Path, str], tmp_path: Path) -> None:
    folder = copy_model(saved, tmp_path)
    data = bytearray((folder / WEIGHTS_FILE).read_bytes())
    data[-100] ^= 0xFF
    (folder / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="SHA-256 mismatch"):
        load_model(folder)


def test_swapped_weights_refused(saved: tuple[TileClassifier, Path, str], tmp_path: Path) -> None:
    """Another valid state dict of the same architecture still fails the hash check."""
    folder = copy_model(saved, tmp_path)
    torch.save(make_model(seed=1).state_dict(), folder / WEIGHTS_FILE)
    with pytest.raises(ConfigError, match="SHA-256 mismatch"):
        load_model(folder)


def test_architecture_mismatch(saved: tuple[TileClassifier, Path, str], tmp_path: Path) -> None:
    folder = copy_model(saved, tmp_path)
    card = yaml.safe_load((folder / CARD_FILE).read_text())
    card["backbone"]["name"] = "resnet18"
    (folder / CARD_FILE).write_text(yaml.safe_dump(card))
    with pytest.raises(ConfigError, match="does not match the architecture"):
        load_model(folder)


def test_not_a_model_dir(saved: tuple[TileClassifier, Path, str], tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a geoscreen model directory"):
        load_model(tmp_path)
    with pytest.raises(InputError, match="not a geoscreen model directory"):
        load_model(tmp_path / "missing")
    folder = copy_model(saved, tmp_path)
    (folder / WEIGHTS_FILE).unlink()
    with pytest.raises(InputError, match="not a geoscreen model directory"):
        load_model(folder)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("name: [unclosed", "not the card of a tile classifier"),
        ("just a string", "not the card of a tile classifier"),
        ("task: detect\n", "not the card of a tile classifier"),
        ("backbone: {}\ninput_stats: {}\n", "model card profile: required field is missing"),
        ("\xff", "not the card of a tile classifier"),
    ],
    ids=["bad-yaml", "not-a-mapping", "a-detector", "empty-sections", "not-utf8"],
)
def test_bad_card_is_input_error(
    saved: tuple[TileClassifier, Path, str], tmp_path: Path, text: str, said: str
) -> None:
    folder = copy_model(saved, tmp_path)
    card = folder / CARD_FILE
    if text == "\xff":
        card.write_bytes(b"\xff\xfe\x00bad")
    else:
        card.write_text(text)
    with pytest.raises(InputError, match=said):
        load_model(folder)
