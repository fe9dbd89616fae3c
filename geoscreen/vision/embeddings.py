"""Similarity search ("find more like this"): rank tiles by likeness to example sites.

No training: tiles and examples are embedded with the profile's pretrained
backbone (or a trained model's), examples averaged over the 8 flips/rotations so
orientation does not matter, and each tile scored by its highest cosine
similarity to any example.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from geoscreen.errors import InputError
from geoscreen.imagery.chips import Chip
from geoscreen.imagery.dataset import ChipDataset
from geoscreen.imagery.preprocess import ScenePreprocessor
from geoscreen.imagery.scene import Scene
from geoscreen.labels import load_labels
from geoscreen.profiles import Profile
from geoscreen.vision.augment import DIHEDRAL, dihedral
from geoscreen.vision.backbones import build_backbone, input_stats
from geoscreen.vision.classifier import TileClassifier, TileModel
from geoscreen.vision.inputs import backbone_spec


def feature_model(profile: Profile, scene: Scene) -> TileClassifier:
    """The profile's pretrained backbone as an (untrained-head) feature extractor."""
    spec = backbone_spec(profile, scene)
    mean, std = input_stats(spec)
    return TileClassifier(build_backbone(spec), mean, std).eval()


def example_chips(profile: Profile, scene: Scene, example_file: str | Path) -> list[Chip]:
    """Tile-sized chips centred on every positive example that falls inside ``scene``.

    Rows labelled negative (``negative``/``0``/``false``/``no``) are not examples.
    """
    labels = load_labels(example_file, scene).positives()
    size = profile.tiling.tile_size
    chips = []
    for col, row in labels.centres():
        r0 = int(np.clip(round(row - size / 2), 0, max(0, scene.height - size)))
        c0 = int(np.clip(round(col - size / 2), 0, max(0, scene.width - size)))
        chips.append(Chip(row_off=r0, col_off=c0, size=size, label=1, source="example"))
    return chips


@torch.inference_mode()
def embed_examples(
    model: TileModel, profile: Profile, scenes: Sequence[Scene], example_file: str | Path
) -> np.ndarray:
    """Unit-norm embeddings (K, F) of the examples, each averaged over 8 orientations.

    Examples need to lie in only one of ``scenes``: scenes they cannot be placed on
    (outside, or without a georeference) are skipped.
    """
    device = next(itertools.chain(model.parameters(), model.buffers())).device
    vectors = []
    problems: list[str] = []
    for scene in scenes:
        try:
            chips = example_chips(profile, scene, example_file)
        except InputError as exc:
            problems.append(exc.what)
            continue
        if not chips:
            continue
        dataset = ChipDataset(scene, chips, ScenePreprocessor.build(profile.preprocess, scene))
        for batch in DataLoader(dataset, batch_size=16):
            image = batch["image"].to(device)
            views = torch.stack([model.features(dihedral(image, k)) for k in range(DIHEDRAL)])
            vectors.append(torch.nn.functional.normalize(views.float().mean(dim=0), dim=1).cpu())
    if not vectors:
        raise InputError(
            "no example falls inside the given imagery" + (f" ({problems[0]})" if problems else ""),
            where=str(example_file),
            fix="Give examples located in one of the --imagery scenes (same place, any CRS).",
        )
    return torch.cat(vectors).numpy()


def similarity_scores(tile_embeddings: np.ndarray, examples: np.ndarray) -> np.ndarray:
    """Highest cosine similarity of each tile (N, F) to any example (K, F), in [-1, 1]."""
    tiles = torch.nn.functional.normalize(
        torch.from_numpy(tile_embeddings.astype(np.float32)), dim=1
    )
    ex = torch.nn.functional.normalize(torch.from_numpy(examples.astype(np.float32)), dim=1)
    return (tiles @ ex.T).max(dim=1).values.numpy()
