"""Similarity search ("find more like this"): rank tiles by likeness to example sites.

No training. A tile is described by the pretrained backbone's pooled features (every
trunk stage and the last layer; tiles smaller than
:data:`~geoscreen.vision.scorer.DEEP_MIN_SIZE` enlarged first, as the deep learners do)
and, when the imagery holds more than visible RGB, by the spectral-context statistics of
every band and index (:mod:`geoscreen.vision.tilefeatures`), standardised by tiles of
the examples' scene. A tile scores its highest cosine similarity to any example, each
example the mean of its 8 flips/rotations, so orientation does not matter.

Until session 23 a tile was described by the last layer alone, on the tile as it is.
An ImageNet network sees neither near- nor shortwave infrared, and a 16 px tile is far
below its receptive field: on the Sentinel-2 water points (examples' own water bodies
left out) that ranking was near chance. Measured with ``benchmarks/similarity.py``
(README, similarity search).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
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
from geoscreen.vision.cards import label_record
from geoscreen.vision.classifier import TileClassifier, TileModel
from geoscreen.vision.infer import profile_grid
from geoscreen.vision.inputs import backbone_spec, band_roles
from geoscreen.vision.scorer import DeepFeatures, FeatureScorer
from geoscreen.vision.tilefeatures import SpectralContext

log = logging.getLogger(__name__)

# Tiles of the examples' scene that set each spectral statistic's mean and spread (all
# when fewer).
REFERENCE_TILES = 512
# Band roles an ImageNet network was trained on.
VISIBLE = ("red", "green", "blue")


class SimilarityFeatures(nn.Module):
    """Tiles -> the deep block and/or the spectral block, each of unit length.

    The deep block is the backbone's pooled features as they are, not centred: they keep
    what every tile shares (two OSBS tiles' mean cosine is 0.76), which steadies them
    from one scene to the next, where centring by one scene's tiles shifts another's.
    The spectral block is standardised (:meth:`set_reference`; the identity
    until then), so that each statistic counts by how much it varies among tiles. With
    both blocks, the cosine similarity of two tiles is the mean of the blocks' own.
    """

    center: torch.Tensor
    scale: torch.Tensor

    def __init__(self, deep: DeepFeatures | None, spectral: SpectralContext | None) -> None:
        super().__init__()
        if deep is None and spectral is None:
            raise ValueError("similarity needs deep or spectral features")
        self.deep, self.spectral = deep, spectral
        self.deep_width = deep.out_features if deep is not None else 0
        width = spectral.out_features if spectral is not None else 0
        # saved with a similarity model (geoscreen.vision.similarity_model)
        self.register_buffer("center", torch.zeros(width))
        self.register_buffer("scale", torch.ones(width))

    @property
    def blocks(self) -> list[str]:
        """Which blocks the features hold, in order."""
        return [n for n, b in (("deep", self.deep), ("spectral", self.spectral)) if b is not None]

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """The blocks as computed (B, F), before standardisation and scaling."""
        parts = []
        if self.deep is not None:
            parts.append(self.deep(x).float())
        if self.spectral is not None:
            parts.append(self.spectral(x).float())
        return torch.cat(parts, dim=1)

    def set_reference(self, raw: torch.Tensor) -> None:
        """Standardise the spectral block by the mean and spread of ``raw`` (N, F); a
        statistic that does not vary there is centred only."""
        spec = raw[:, self.deep_width :]
        std = spec.std(dim=0, unbiased=False) if len(spec) > 1 else torch.ones(spec.shape[1])
        self.center = spec.mean(dim=0)
        self.scale = torch.where(std > 1e-6, std, torch.ones_like(std))

    def standardise(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw blocks -> the embedding: each block of unit length, the whole too."""
        parts = []
        if self.deep is not None:
            parts.append(nn.functional.normalize(raw[:, : self.deep_width], dim=1))
        if self.spectral is not None:
            spec = (raw[:, self.deep_width :] - self.center) / self.scale
            parts.append(nn.functional.normalize(spec, dim=1))
        return torch.cat(parts, dim=1) / len(parts) ** 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.standardise(self.raw(x))


class SimilarityModel(TileModel):
    """Scores a tile by its highest cosine similarity to any example (in [-1, 1])."""

    examples: torch.Tensor
    fp32_only = True  # as 'geoscreen similar' scores, whatever --precision asks

    def __init__(self, features: SimilarityFeatures, examples: torch.Tensor) -> None:
        super().__init__()
        self.embed = features
        self.register_buffer("examples", nn.functional.normalize(examples.float(), dim=1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x)

    def score_and_embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.embed(x)
        return best_cosine(feats, self.examples), feats


def best_cosine(tiles: torch.Tensor, examples: torch.Tensor) -> torch.Tensor:
    """Highest cosine similarity of each tile (N, F) to any example (K, F)."""
    t = nn.functional.normalize(tiles.float(), dim=1)
    e = nn.functional.normalize(examples.float(), dim=1)
    return (t @ e.T).max(dim=1).values


def similarity_scores(tile_embeddings: np.ndarray, examples: np.ndarray) -> np.ndarray:
    """Highest cosine similarity of each tile (N, F) to any example (K, F), in [-1, 1]."""
    return best_cosine(torch.from_numpy(tile_embeddings), torch.from_numpy(examples)).numpy()


def beyond_visible(profile: Profile, scene: Scene) -> bool:
    """Whether the profile's inputs hold more than visible red, green and blue (near or
    shortwave infrared, red edge, an index): what an ImageNet network never saw."""
    return any(role not in VISIBLE for role in band_roles(profile, scene))


def similarity_features(
    profile: Profile, scene: Scene, model: TileModel | None = None
) -> SimilarityFeatures:
    """The features similarity compares, for ``profile`` on imagery like ``scene``.

    The deep block comes from ``model`` (a trained model's backbone) or the profile's
    pretrained backbone (every stage pooled, small tiles enlarged); none for a profile
    without pretrained weights (``model.weights: null``: a random network's features
    rank nothing) nor for a trained model without a backbone (a spectral learner). The
    spectral block is added when the inputs go beyond visible RGB
    (:func:`beyond_visible`), or when there is no deep block. On visible RGB alone it is
    left out: colour statistics change from one scene to the next (NEON crowns, examples
    on OSBS ranking YELL's tiles: AP 0.67-0.69 with it, 0.77-0.78 without, README).
    """
    deep: DeepFeatures | None = None
    if isinstance(model, SimilarityModel):
        raise InputError(
            "--model is a similarity search kept as a model, not a trained model",
            where="--model",
            fix="Leave --model out to compare the profile's own features, or give a model "
            "trained with 'geoscreen train'.",
        )
    if isinstance(model, FeatureScorer):
        deep = model.deep
    elif isinstance(model, TileClassifier):  # a fine-tuned CNN: its features as trained
        mean, std = model.norm.mean.flatten().tolist(), model.norm.std.flatten().tolist()
        deep = DeepFeatures(model.backbone, mean, std, min_size=1)
    elif model is not None:
        raise TypeError(f"no similarity features for a {type(model).__name__}")
    elif profile.model.weights is None:
        log.warning(
            "profile %s names no pretrained weights (model.weights: null): similarity "
            "compares the spectral-context features alone",
            profile.name,
        )
    else:
        spec = backbone_spec(profile, scene)
        mean, std = input_stats(spec)
        deep = DeepFeatures(build_backbone(spec), mean, std, stages=True)
    spectral = None
    if deep is None or beyond_visible(profile, scene):
        roles = band_roles(profile, scene)
        relative = len(roles) > 1 and profile.preprocess.normalization.method != "meanstd"
        spectral = SpectralContext(len(roles), profile.tiling.tile_size, relative)
    return SimilarityFeatures(deep, spectral).eval()


def example_chips(profile: Profile, scene: Scene, example_file: str | Path) -> list[Chip]:
    """Tile-sized chips centred on every positive example that falls inside ``scene``.

    Rows labelled negative (``negative``/``0``/``false``/``no``) are not examples.
    """
    return chips_at(profile, scene, load_labels(example_file, scene).positives().centres())


def chips_at(profile: Profile, scene: Scene, centres: np.ndarray) -> list[Chip]:
    """Tile-sized chips centred on ``centres`` (N x 2 pixel col/row), kept in the scene."""
    size = profile.tiling.tile_size
    chips = []
    for col, row in np.asarray(centres, dtype=np.float64).reshape(-1, 2):
        r0 = int(np.clip(round(row - size / 2), 0, max(0, scene.height - size)))
        c0 = int(np.clip(round(col - size / 2), 0, max(0, scene.width - size)))
        chips.append(Chip(row_off=r0, col_off=c0, size=size, label=1, source="example"))
    return chips


def reference_chips(profile: Profile, scene: Scene, n: int, seed: int = 0) -> list[Chip]:
    """Up to ``n`` tiles of the profile's grid of ``scene`` (with data), drawn at random."""
    grid = profile_grid(profile, scene).drop_empty()
    pick = np.sort(np.random.default_rng(seed).permutation(len(grid))[:n])
    rows, cols, stride = grid.rows[pick], grid.cols[pick], grid.stride
    return [
        Chip(int(r) * stride, int(c) * stride, grid.tile_size, 0, "background")
        for r, c in zip(rows, cols, strict=True)
    ]


@torch.inference_mode()
def raw_features(
    features: SimilarityFeatures,
    profile: Profile,
    scene: Scene,
    chips: Sequence[Chip],
    views: int,
) -> torch.Tensor:
    """Raw features (N, F) of ``chips``, each the mean over its first ``views`` views."""
    return raw_views(features, profile, scene, chips, views).mean(0)


@torch.inference_mode()
def raw_views(
    features: SimilarityFeatures,
    profile: Profile,
    scene: Scene,
    chips: Sequence[Chip],
    views: int,
) -> torch.Tensor:
    """Raw features (views, N, F) of ``chips`` under each of their first ``views`` views."""
    device = next(itertools.chain(features.parameters(), features.buffers())).device
    dataset = ChipDataset(scene, chips, ScenePreprocessor.build(profile.preprocess, scene))
    out = []
    for batch in DataLoader(dataset, batch_size=16):
        image = batch["image"].to(device)
        out.append(torch.stack([features.raw(dihedral(image, k)) for k in range(views)]))
    return torch.cat(out, dim=1).cpu()


def set_reference(
    features: SimilarityFeatures, profile: Profile, scene: Scene, n: int = REFERENCE_TILES
) -> None:
    """Standardise ``features`` by up to ``n`` random tiles of ``scene`` (seeded)."""
    sample = reference_chips(profile, scene, n)
    features.set_reference(raw_features(features, profile, scene, sample, views=1))


@dataclass(frozen=True)
class ExampleSet:
    """The examples' embeddings (K, F), each the mean of its 8 views (what tiles are
    compared with); each as one tile is seen (``as_tiles``, the first view: how a left-out
    example would score, :func:`~geoscreen.vision.similarity_model.leave_one_out`);
    where each lies (``places``, K x 3: the index of its scene in ``scenes``, then its
    chip's centre column and row); and one label record per scene that held any."""

    embeddings: np.ndarray
    as_tiles: np.ndarray
    places: np.ndarray
    label_records: list[dict[str, Any]]
    scenes: list[Scene]


def embed_examples(
    features: SimilarityFeatures,
    profile: Profile,
    scenes: Sequence[Scene],
    example_file: str | Path,
    reference_tiles: int = REFERENCE_TILES,
) -> np.ndarray:
    """Embeddings (K, F) of the examples (:func:`example_set`)."""
    return example_set(features, profile, scenes, example_file, reference_tiles).embeddings


def example_set(
    features: SimilarityFeatures,
    profile: Profile,
    scenes: Sequence[Scene],
    example_file: str | Path,
    reference_tiles: int = REFERENCE_TILES,
) -> ExampleSet:
    """The examples embedded, each from the mean of its 8 flips/rotations.

    The examples need to lie in one of ``scenes`` only: scenes they cannot be placed on
    (outside, or without a georeference) are skipped. With a spectral block, the first
    scene holding examples sets its standardisation
    (:meth:`SimilarityFeatures.set_reference`) from up to ``reference_tiles`` of its
    tiles, and every scene screened is standardised alike.
    """
    problems: list[str] = []
    raw: list[torch.Tensor] = []
    one_view: list[torch.Tensor] = []
    records: list[dict[str, Any]] = []
    used: list[Scene] = []
    places: list[tuple[int, float, float]] = []
    for scene in scenes:
        try:
            labels = load_labels(example_file, scene)
        except InputError as exc:
            problems.append(exc.what)
            continue
        chips = chips_at(profile, scene, labels.positives().centres())
        if not chips:
            continue
        if not used and features.spectral is not None:
            set_reference(features, profile, scene, reference_tiles)
        every = raw_views(features, profile, scene, chips, DIHEDRAL)  # the chips read once
        raw.append(every.mean(0))
        one_view.append(every[0])  # the first view is the chip as it is
        records.append(label_record(example_file, scene, labels, positives=len(chips)))
        places += [(len(used), c.col_off + c.size / 2, c.row_off + c.size / 2) for c in chips]
        used.append(scene)
    if not raw:
        raise InputError(
            "no example falls inside the given imagery" + (f" ({problems[0]})" if problems else ""),
            where=str(example_file),
            fix="Give examples located in one of the --imagery scenes (same place, any CRS).",
        )
    embed = features.standardise
    return ExampleSet(embed(torch.cat(raw)).numpy(), embed(torch.cat(one_view)).numpy(),
                      np.array(places, dtype=np.float64), records, used)  # fmt: skip
