"""Model directories: weights, model card and its Markdown page, written and read as one.

Classifiers (:mod:`geoscreen.vision.classifier`) and detectors
(:mod:`geoscreen.vision.detector`) share the layout::

    model.pt        state dict (weights of the whole network)
    model.yaml      machine-readable model card (profile, data, split, metrics, limits)
    MODEL_CARD.md   the same card for people

The model hash (sha256 of ``model.pt``) identifies a model in screening runs; the
card records it as ``model_sha256`` and loading checks the weights against it. Cards
are typed (:mod:`geoscreen.vision.modelcard`): validated before they are written and
parsed (older layouts upgraded) when read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar, cast

import torch
import yaml
from torch import nn

from geoscreen.errors import ConfigError, InputError
from geoscreen.fileio import atomic_write, sha256_file
from geoscreen.vision.modelcard import CARD_TYPES, ModelCard, checked, parse_card, upgrade_card
from geoscreen.vision.weights import load_state_dict

WEIGHTS_FILE = "model.pt"
CARD_FILE = "model.yaml"
CARD_MARKDOWN = "MODEL_CARD.md"

M = TypeVar("M", bound=nn.Module)
C = TypeVar("C", bound=ModelCard)


@dataclass(frozen=True)
class LoadedModelDir(Generic[M]):
    """A model loaded from a model directory, with its card and hash."""

    model: M
    card: ModelCard
    sha256: str
    path: Path


def write_card(folder: Path, card: ModelCard, markdown: str) -> None:
    """Write ``model.yaml`` (``card``, validated again first) and ``MODEL_CARD.md``
    (``markdown``), each atomically."""
    text = yaml.safe_dump(checked(card).to_yaml_dict(), sort_keys=False, allow_unicode=True)
    atomic_write(folder / CARD_FILE, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    atomic_write(
        folder / CARD_MARKDOWN, lambda tmp: Path(tmp).write_text(markdown, encoding="utf-8")
    )


def save_model_dir(
    model: nn.Module,
    card: C,
    out_dir: str | Path,
    render: Callable[[C], str],
) -> C:
    """Write the weights, then the card with their hash added (``model_sha256``) and its
    page ``render(card)``; returns the card as written. A card that fails validation
    is refused before the weights are written."""
    checked(card)
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / WEIGHTS_FILE, lambda tmp: torch.save(model.state_dict(), tmp))
    digest = sha256_file(folder / WEIGHTS_FILE)
    saved = cast(C, card.model_copy(update={"model_sha256": digest}))
    write_card(folder, saved, render(saved))
    return saved


def read_model_dir(
    model_dir: str | Path, kind: type[C], not_a_card: InputError
) -> tuple[C, dict[str, torch.Tensor]]:
    """The card (upgraded and validated) and state dict of a model directory, the weights
    checked against the card's hash. ``not_a_card`` is raised when ``model.yaml`` is not
    a YAML mapping or holds a card of another ``kind``; a card of the right kind with a
    bad field raises an InputError naming the file and the field."""
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
    if not isinstance(card, dict):
        raise not_a_card
    card = upgrade_card(card, str(card_path))
    if CARD_TYPES.get(str(card.get("task"))) is not kind:
        raise not_a_card
    parsed = parse_card(card, str(card_path))
    assert isinstance(parsed, kind)
    return parsed, load_state_dict(weights_path, parsed.model_sha256)


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
