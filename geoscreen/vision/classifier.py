"""Tile classifier: input normalisation -> backbone -> one logit ("matches the profile").

A trained classifier is saved as a *model directory*::

    model.pt        state dict (weights of the whole network)
    model.yaml      machine-readable model card (profile, data, split, metrics, limits)
    MODEL_CARD.md   the same card for people

The model hash (sha256 of ``model.pt``) identifies a model in screening runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from geoscreen.errors import ConfigError, InputError
from geoscreen.fileio import sha256_file
from geoscreen.vision.backbones import Backbone, BackboneSpec, build_backbone
from geoscreen.vision.weights import load_state_dict

WEIGHTS_FILE = "model.pt"
CARD_FILE = "model.yaml"
CARD_MARKDOWN = "MODEL_CARD.md"


class InputNorm(nn.Module):
    """Fixed per-channel ``(x - mean) / std``, as the backbone's pretrained weights expect."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer(
            "mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        )
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One fused pass, x * (1 / std) - mean / std: twice as fast as (x - mean) / std
        # on channels_last batches, and one full-size temporary instead of two.
        scale = self.std.reciprocal()
        return torch.addcmul(-self.mean * scale, x, scale)


class TileClassifier(nn.Module):
    """Binary tile classifier; ``forward`` returns logits of shape (B,)."""

    def __init__(self, backbone: Backbone, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.norm = InputNorm(mean, std)
        self.backbone = backbone
        self.head = nn.Linear(backbone.out_features, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features (B, F): the embedding used for similarity search."""
        return self.backbone(self.norm(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(1)

    def score_and_embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Probabilities (B,) and embeddings (B, F) from one backbone pass."""
        feats = self.features(x)
        return torch.sigmoid(self.head(feats).squeeze(1)), feats


@dataclass(frozen=True)
class LoadedModel:
    """A classifier loaded from a model directory, with its card and hash."""

    model: TileClassifier
    card: dict[str, Any]
    sha256: str
    path: Path

    @property
    def threshold(self) -> float:
        return float(self.card.get("threshold", 0.5))


def spec_from_card(card: dict[str, Any]) -> BackboneSpec:
    """The backbone spec recorded in a model card (no pretrained file needed to rebuild)."""
    b = card["backbone"]
    roles = b.get("band_roles")
    return BackboneSpec(
        name=b["name"],
        in_channels=int(b["in_channels"]),
        band_roles=tuple(roles) if roles is not None else None,
    )


def save_model(model: TileClassifier, card: dict[str, Any], out_dir: Path) -> str:
    """Write weights and card (YAML + Markdown) to ``out_dir``; returns the model hash."""
    from geoscreen.fileio import atomic_write

    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / WEIGHTS_FILE, lambda tmp: torch.save(model.state_dict(), tmp))
    digest = sha256_file(out_dir / WEIGHTS_FILE)
    card = {**card, "model_sha256": digest}
    text = yaml.safe_dump(card, sort_keys=False, allow_unicode=True)
    atomic_write(out_dir / CARD_FILE, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    markdown = render_card_markdown(card)
    atomic_write(
        out_dir / CARD_MARKDOWN, lambda tmp: Path(tmp).write_text(markdown, encoding="utf-8")
    )
    return digest


def load_model(model_dir: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model directory written by :func:`save_model`, checking the recorded hash."""
    path = Path(model_dir)
    card_path, weights_path = path / CARD_FILE, path / WEIGHTS_FILE
    if not card_path.is_file() or not weights_path.is_file():
        raise InputError(
            "not a geoscreen model directory (needs model.yaml and model.pt)",
            where=str(path),
            fix="Point --model at the folder written by 'geoscreen train'.",
        )
    not_a_card = InputError(
        "model.yaml is not a geoscreen model card",
        where=str(card_path),
        fix="Retrain with 'geoscreen train' or restore the original file.",
    )
    try:
        card = yaml.safe_load(card_path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        raise not_a_card from None
    if not isinstance(card, dict) or "backbone" not in card or "input_stats" not in card:
        raise not_a_card
    state = load_state_dict(weights_path, card.get("model_sha256"))
    try:
        spec = spec_from_card(card)
        mean, std = list(card["input_stats"]["mean"]), list(card["input_stats"]["std"])
    except (KeyError, TypeError, ValueError):
        raise not_a_card from None
    model = TileClassifier(build_backbone(spec), mean, std)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(
            "model.pt does not match the architecture in model.yaml",
            where=str(path),
            fix="Retrain the model.",
        ) from exc
    model.eval().to(device)
    return LoadedModel(model, card, sha256_file(weights_path), path)


def render_card_markdown(card: dict[str, Any]) -> str:
    """A readable model card from the machine-readable one."""
    metrics = card.get("metrics", {})
    lines = [
        f"# Model card: {card.get('profile', {}).get('name', '?')} "
        f"v{card.get('profile', {}).get('version', '?')}",
        "",
        "Output meaning: a score that a tile **matches the screening profile**. It is a ranking "
        "aid for human reviewers, not a finding about any place or person.",
        "",
        "## Model",
        f"- profile fingerprint: `{card.get('profile', {}).get('fingerprint', '?')}`",
        f"- backbone: `{card['backbone']['name']}`, {card['backbone']['in_channels']} input "
        f"channels, pretrained weights: `{card['backbone'].get('weights') or 'none'}`",
        f"- training mode: {card.get('training', {}).get('mode')}; "
        f"device: {card.get('training', {}).get('device')}; "
        f"time: {card.get('training', {}).get('seconds', 0):.1f} s",
        f"- decision threshold: {card.get('threshold')}",
        f"- model sha256: `{card.get('model_sha256', '?')}`",
        "",
        "## Data",
    ]
    for item in card.get("data", {}).get("labels", []):
        lines.append(f"- labels `{item['path']}` sha256 `{item['sha256']}`")
    for item in card.get("data", {}).get("scenes", []):
        lines.append(f"- scene `{item['uri']}` id `{item['id']}`")
    split = card.get("split", {})
    lines += [
        "",
        "## Validation split",
        f"- {split.get('method', '?')}: {split.get('description', '')}",
        f"- chips: train {split.get('train_chips')} ({split.get('train_positives')} positive), "
        f"validation {split.get('val_chips')} ({split.get('val_positives')} positive)",
        "",
        "## Metrics on the held-out block",
    ]
    for key, value in metrics.items():
        lines.append(f"- {key}: {value:.3f}" if isinstance(value, float) else f"- {key}: {value}")
    lines += ["", "## Known limits"]
    lines += [f"- {text}" for text in card.get("limits", [])]
    return "\n".join(lines) + "\n"
