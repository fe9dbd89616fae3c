"""Model directories: weights, model card and its Markdown page, written and read as one.

Classifiers (:mod:`geoscreen.vision.classifier`) and detectors
(:mod:`geoscreen.vision.detector`) share the layout::

    model.pt        state dict (weights of the whole network)
    model.yaml      machine-readable model card (profile, data, split, metrics, limits)
    MODEL_CARD.md   the same card for people

The model hash (sha256 of ``model.pt``) identifies a model in screening runs; the
card records it as ``model_sha256`` and loading checks the weights against it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch
import yaml
from torch import nn

from geoscreen.errors import ConfigError, InputError
from geoscreen.fileio import atomic_write, sha256_file
from geoscreen.vision.weights import load_state_dict

WEIGHTS_FILE = "model.pt"
CARD_FILE = "model.yaml"
CARD_MARKDOWN = "MODEL_CARD.md"

M = TypeVar("M", bound=nn.Module)


@dataclass(frozen=True)
class LoadedModelDir(Generic[M]):
    """A model loaded from a model directory, with its card and hash."""

    model: M
    card: dict[str, Any]
    sha256: str
    path: Path


def write_card(folder: Path, card: dict[str, Any], markdown: str) -> None:
    """Write ``model.yaml`` (``card``) and ``MODEL_CARD.md`` (``markdown``), each atomically."""
    text = yaml.safe_dump(card, sort_keys=False, allow_unicode=True)
    atomic_write(folder / CARD_FILE, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    atomic_write(
        folder / CARD_MARKDOWN, lambda tmp: Path(tmp).write_text(markdown, encoding="utf-8")
    )


def save_model_dir(
    model: nn.Module,
    card: dict[str, Any],
    out_dir: str | Path,
    render: Callable[[dict[str, Any]], str],
) -> str:
    """Write the weights, then the card with their hash added (``model_sha256``) and its
    page ``render(card)``; returns the hash."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / WEIGHTS_FILE, lambda tmp: torch.save(model.state_dict(), tmp))
    digest = sha256_file(folder / WEIGHTS_FILE)
    card = {**card, "model_sha256": digest}
    write_card(folder, card, render(card))
    return digest


def read_model_dir(
    model_dir: str | Path, is_card: Callable[[Any], bool], not_a_card: InputError
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The card and state dict of a model directory, the weights checked against the card's
    hash; ``not_a_card`` is raised when ``model.yaml`` is not YAML or fails ``is_card``."""
    path = Path(model_dir)
    card_path, weights_path = path / CARD_FILE, path / WEIGHTS_FILE
    if not card_path.is_file() or not weights_path.is_file():
        raise InputError(
            "not a geoscreen model directory (needs model.yaml and model.pt)",
            where=str(path),
            fix="Point --model at the folder written by 'geoscreen train'.",
        )
    try:
        card = yaml.safe_load(card_path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        raise not_a_card from None
    if not isinstance(card, dict) or not is_card(card):
        raise not_a_card
    return card, load_state_dict(weights_path, card.get("model_sha256"))


def restore_weights(
    model: M,
    state: dict[str, torch.Tensor],
    model_dir: str | Path,
    what: str,
    device: str | torch.device,
) -> str:
    """Load ``state`` into ``model`` (eval mode, on ``device``); returns the weights' hash.

    Raises ConfigError when the weights do not fit the ``what`` the card describes.
    """
    path = Path(model_dir)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(
            f"model.pt does not match the {what} in model.yaml",
            where=str(path),
            fix="Retrain the model.",
        ) from exc
    model.eval().to(device)
    return sha256_file(path / WEIGHTS_FILE)
