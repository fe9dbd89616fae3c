"""Tile classifier: input normalisation -> backbone -> one logit ("matches the profile").

A trained classifier is saved as a *model directory* (:mod:`geoscreen.vision.modeldir`):
``model.pt`` (weights), ``model.yaml`` (machine-readable model card) and ``MODEL_CARD.md``.
The model hash (sha256 of ``model.pt``) identifies a model in screening runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from geoscreen.errors import InputError
from geoscreen.vision.backbones import Backbone, BackboneSpec, build_backbone
from geoscreen.vision.cards import data_lines, limits_lines, selection_lines, split_lines
from geoscreen.vision.modelcard import ClassifyCard, ModelCard
from geoscreen.vision.modeldir import CARD_FILE as CARD_FILE  # the layout's names, re-exported
from geoscreen.vision.modeldir import CARD_MARKDOWN as CARD_MARKDOWN
from geoscreen.vision.modeldir import WEIGHTS_FILE as WEIGHTS_FILE
from geoscreen.vision.modeldir import (
    LoadedModelDir,
    read_model_dir,
    restore_weights,
    save_model_dir,
)


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


class TileModel(nn.Module):
    """What screening needs of a tile model: logits, scores with embeddings, embeddings.

    Implemented by :class:`TileClassifier` (a CNN with a linear head) and by the
    feature scorers of :mod:`geoscreen.vision.scorer`.
    """

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings (B, F) used for similarity search."""
        raise NotImplementedError

    def score_and_embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores in [0, 1] (B,) and embeddings (B, F) from one pass."""
        raise NotImplementedError

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Scores in [0, 1] (B,) when no embeddings are wanted (a model may skip work)."""
        return self.score_and_embed(x)[0]

    # Scores in fp32 whatever --precision asks: bf16's check covers probabilities near a
    # threshold, not a model whose scores are on another scale (similarity search).
    fp32_only: bool = False


class TileClassifier(TileModel):
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
class LoadedModel(LoadedModelDir[TileModel]):
    """A tile model loaded from a model directory, with its card and hash: a
    :class:`TileClassifier` (fine-tuned CNN) or a feature scorer
    (:mod:`geoscreen.vision.scorer`); both screen through ``score_and_embed``."""

    card: ClassifyCard


def spec_from_card(card: ModelCard) -> BackboneSpec:
    """The backbone spec recorded in a model card (no pretrained file needed to rebuild)."""
    b = card.backbone
    if b is None:
        raise ValueError("the card records no backbone")
    return BackboneSpec(
        name=b.name,
        in_channels=b.in_channels,
        band_roles=tuple(b.band_roles) if b.band_roles is not None else None,
    )


def save_model(model: TileClassifier, card: ClassifyCard, out_dir: Path) -> str:
    """Write weights and card (YAML + Markdown) to ``out_dir``; returns the model hash."""
    return str(save_model_dir(model, card, out_dir, render_card_markdown).model_sha256)


def load_model(model_dir: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model directory written by :func:`save_model`, checking the recorded hash."""
    path = Path(model_dir)
    not_a_card = InputError(
        "model.yaml is not the card of a tile classifier",
        where=str(path / CARD_FILE),
        fix="Use a model trained for a 'task: classify' profile with 'geoscreen train' (a "
        "detection model's folder does not fit here), or restore the original file.",
    )
    card, state = read_model_dir(path, ClassifyCard, not_a_card)
    model: TileModel
    if card.similarity:
        from geoscreen.vision.similarity_model import model_from_card

        model = model_from_card(card, state)
    elif card.learner is not None:
        from geoscreen.vision.scorer import scorer_from_card

        model = scorer_from_card(card, state)
    else:
        spec = spec_from_card(card)
        model = TileClassifier(build_backbone(spec), card.input_stats.mean, card.input_stats.std)
    digest = restore_weights(model, state, path, "architecture", device)
    return LoadedModel(model, card, digest, path)


def render_card_markdown(card: ClassifyCard) -> str:
    """A readable model card from the machine-readable one."""
    training, split = card.training, card.split
    lines = [
        f"# Model card: {card.profile.name} v{card.profile.version}",
        "",
        "Output meaning: a score that a tile **matches the screening profile**. It is a ranking "
        "aid for human reviewers, not a finding about any place or person.",
        "",
        "## Model",
        f"- profile fingerprint: `{card.profile.fingerprint or '?'}`",
        *_model_lines(card),
        f"- training mode: {training.mode if training else None}; "
        f"device: {training.device if training else None}; "
        f"time: {training.seconds if training else 0:.1f} s",
        f"- decision threshold: {card.threshold}",
        f"- model sha256: `{card.model_sha256 or '?'}`",
        *data_lines(card),
        *split_lines(card),
    ]
    if card.selection is not None:
        lines += selection_lines(card)
        heading = "## Metrics of the chosen learner, out of fold"
    else:
        s = split
        lines += [
            f"- chips: train {s and s.train_chips} ({s and s.train_positives} "
            f"positive), validation {s and s.val_chips} ({s and s.val_positives} "
            "positive)",
        ]
        heading = "## Metrics on the held-out block"
    lines += ["", heading]
    for key, value in card.metrics.items():
        lines.append(f"- {key}: {value:.3f}")
    lines += limits_lines(card)
    return "\n".join(lines) + "\n"


def _model_lines(card: ClassifyCard) -> list[str]:
    backbone, learner = card.backbone, card.learner
    lines = []
    if learner is not None:
        lines.append(
            f"- learner: `{learner.name}` ({learner.features} features, "
            f"{learner.estimator}), {learner.channels} input channels, scores "
            "calibrated (Platt scaling on out-of-fold scores)"
        )
    if backbone is not None:
        lines.append(
            f"- backbone: `{backbone.name}`, {backbone.in_channels} input "
            f"channels, pretrained weights: `{backbone.weights or 'none'}`"
        )
    return lines
