"""Screening: score every tile of a scene with a trained classifier.

A DataLoader reads and preprocesses tiles in worker processes while the model
computes; inference runs under ``torch.inference_mode`` in channels_last layout,
with bf16 autocast on CUDA. Results are deterministic for the same inputs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from shapely.geometry.base import BaseGeometry
from torch.utils.data import DataLoader
from tqdm import tqdm

from geoscreen.errors import ConfigError
from geoscreen.imagery.dataset import TileDataset, collate
from geoscreen.imagery.preprocess import ScenePreprocessor
from geoscreen.imagery.scene import Scene
from geoscreen.imagery.tiling import TileGrid
from geoscreen.profiles import Profile, check_scene
from geoscreen.vision.classifier import LoadedModel, TileClassifier
from geoscreen.vision.runtime import pick_device, tune_malloc
from geoscreen.vision.scoremap import ScoreMap
from geoscreen.vision.train import band_roles

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScreenOptions:
    """How to run inference (what to compute comes from the profile and model)."""

    batch_size: int = 32
    device: str = "auto"
    num_workers: int = 1
    embeddings: bool = False
    drop_empty: bool = True
    progress: bool = False


def check_model_fits(loaded: LoadedModel, profile: Profile, scene: Scene) -> None:
    """Refuse a model trained for another profile, preprocessing, tile size or band layout,
    and a scene that does not fit the profile (:func:`~geoscreen.profiles.check_scene`).

    Call it for every scene before screening any, so that a run fails before writing.
    """
    card = loaded.card
    if card.get("profile", {}).get("name") != profile.name:
        raise ConfigError(
            f"model was trained for profile {card.get('profile', {}).get('name')!r}, "
            f"not {profile.name!r}",
            where=str(loaded.path),
            fix="Use the model trained for this profile, or train one with 'geoscreen train'.",
        )
    if card.get("preprocess") != profile.preprocess.model_dump(mode="json"):
        raise ConfigError(
            "the profile's preprocessing differs from the one the model was trained with",
            where=str(loaded.path),
            fix="Retrain the model after changing bands, indices or normalisation.",
        )
    trained_size = card.get("tiling", {}).get("tile_size")
    if trained_size is not None and trained_size != profile.tiling.tile_size:
        raise ConfigError(
            f"the model was trained on {trained_size} px tiles but the profile cuts "
            f"{profile.tiling.tile_size} px tiles",
            where=str(loaded.path),
            fix="Screen with the tile size the model was trained with, or retrain it.",
        )
    check_scene(profile, scene)
    roles = band_roles(profile, scene)
    if int(card["backbone"]["in_channels"]) != len(roles):
        raise ConfigError(
            f"the model takes {card['backbone']['in_channels']} channels but this scene gives "
            f"{len(roles)}",
            where=scene.uri,
            fix="Screen imagery with the bands the profile names.",
        )


def model_for_inference(model: TileClassifier, device: torch.device) -> TileClassifier:
    """Eval mode on ``device``, channels_last (faster convolutions on CPU and GPU)."""
    return model.eval().to(device=device, memory_format=torch.channels_last)  # type: ignore[call-overload]


def screen_scene(
    model: TileClassifier,
    profile: Profile,
    scene: Scene,
    opts: ScreenOptions | None = None,
    aoi: BaseGeometry | None = None,
    meta: dict[str, Any] | None = None,
) -> ScoreMap:
    """Score every (valid, in-AOI) tile of ``scene``; returns a :class:`ScoreMap`."""
    opts = opts or ScreenOptions()
    for warning in check_scene(profile, scene):
        log.warning(warning)
    device = pick_device(opts.device)
    if device.type == "cpu":
        tune_malloc()
    grid = TileGrid(scene, profile.tiling.tile_size, profile.tiling.overlap)
    if aoi is not None:
        grid = grid.within(aoi)
    if opts.drop_empty:
        grid = grid.drop_empty(progress=opts.progress)
    preprocessor = ScenePreprocessor.build(profile.preprocess, scene)
    return score_grid(model, grid, preprocessor, opts, device, meta)


@torch.inference_mode()
def score_grid(
    model: TileClassifier,
    grid: TileGrid,
    preprocessor: ScenePreprocessor,
    opts: ScreenOptions,
    device: torch.device,
    meta: dict[str, Any] | None = None,
) -> ScoreMap:
    """The inference loop over a prepared grid (the part benchmarks time)."""
    n = len(grid)
    scores = np.zeros(n, dtype=np.float32)
    valid = np.zeros(n, dtype=np.float32)
    embeddings: np.ndarray | None = None
    if n == 0:
        return ScoreMap(grid, scores, valid, None, dict(meta or {}))
    net = model_for_inference(model, device)
    loader = DataLoader(
        TileDataset(grid, preprocessor),
        collate_fn=collate,
        batch_size=opts.batch_size,
        shuffle=False,
        num_workers=opts.num_workers,
        persistent_workers=False,
        prefetch_factor=4 if opts.num_workers > 0 else None,
        pin_memory=device.type == "cuda",
    )
    use_amp = device.type == "cuda"
    with tqdm(total=n, desc="screening", unit="tile", disable=not opts.progress) as bar:
        for batch in loader:
            index = batch["index"].numpy()
            image = batch["image"].to(device, non_blocking=True)
            image = image.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                prob, feats = net.score_and_embed(image)
            scores[index] = prob.float().cpu().numpy()
            mask = batch["mask"].numpy().reshape(len(index), -1)
            valid[index] = np.count_nonzero(mask, axis=1) / mask.shape[1]  # 15x torch's mean
            if opts.embeddings:
                if embeddings is None:
                    embeddings = np.zeros((n, feats.shape[1]), dtype=np.float16)
                embeddings[index] = feats.float().cpu().numpy().astype(np.float16)
            bar.update(len(index))
    return ScoreMap(grid, scores, valid, embeddings, dict(meta or {}))
