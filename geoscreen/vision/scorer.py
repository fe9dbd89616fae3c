"""Feature scorers: tile features -> a fitted tabular head -> a calibrated probability.

The model a profile screens with when training chose a spectral-context, deep-feature
or combined learner (:mod:`geoscreen.vision.learners`). It screens through the same
path as a fine-tuned CNN (``score_and_embed`` on a batch of preprocessed tiles) and is
saved in the same model directory: every fitted number is a tensor in ``model.pt``,
and the card's ``learner`` section says how to rebuild the module around them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from geoscreen.errors import InputError
from geoscreen.vision.augment import DIHEDRAL, dihedral
from geoscreen.vision.backbones import Backbone, build_backbone
from geoscreen.vision.classifier import InputNorm, TileModel, spec_from_card
from geoscreen.vision.modelcard import ClassifyCard
from geoscreen.vision.stages import stage_maps, trunk_stages
from geoscreen.vision.tabular import LinearHead, PlattCalibrator, TreeEnsembleHead
from geoscreen.vision.tilefeatures import SpectralContext

KIND = "feature_scorer"
# Tiles smaller than this are enlarged before the backbone: a 16 px Landsat tile is
# half a stride-32 CNN's output cell, far below its receptive field.
DEEP_MIN_SIZE = 64


class DeepFeatures(nn.Module):
    """Normalise, enlarge small tiles, then the backbone's pooled features; with
    ``views`` > 1 their mean over the first ``views`` flips/rotations of the tile
    (:func:`~geoscreen.vision.augment.dihedral`), as the ``deep`` learner was fitted.

    With ``stages``, the pooled output of every resolution stage of the trunk comes
    first (finest first, :func:`~geoscreen.vision.stages.trunk_stages`), then the last
    layer's features as without.
    """

    def __init__(
        self,
        backbone: Backbone,
        mean: Sequence[float],
        std: Sequence[float],
        min_size: int = DEEP_MIN_SIZE,
        views: int = 1,
        stages: bool = False,
    ) -> None:
        super().__init__()
        if not 1 <= views <= DIHEDRAL:
            raise ValueError(f"views must be 1..{DIHEDRAL}, got {views}")
        self.norm = InputNorm(mean, std)
        self.backbone = backbone
        self.min_size = min_size
        self.views = views
        self.stages = stages
        found = trunk_stages(backbone, len(mean))[0] if stages else []
        self.stage_paths = tuple(stage.path for stage in found)
        self.stage_channels = sum(stage.channels for stage in found)

    @property
    def out_features(self) -> int:
        return self.stage_channels + int(self.backbone.out_features)

    def with_views(self, views: int) -> DeepFeatures:
        """The same backbone (shared, not copied), normalisation and stages, averaging
        ``views``."""
        mean, std = self.norm.mean.flatten().tolist(), self.norm.std.flatten().tolist()
        other = DeepFeatures(self.backbone, mean, std, self.min_size, views)
        # The stages found here, not probed for again.
        other.stages, other.stage_paths = self.stages, self.stage_paths
        other.stage_channels = self.stage_channels
        return other

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.views == 1:
            return self._one(x)
        return torch.stack([self._one(dihedral(x, k)).float() for k in range(self.views)]).mean(0)

    def _one(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < self.min_size:
            scale = self.min_size / min(x.shape[-2:])
            size = (round(x.shape[-2] * scale), round(x.shape[-1] * scale))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        x = self.norm(x)
        if not self.stages:
            return self.backbone(x)
        maps, top = stage_maps(self.backbone.body, self.stage_paths, x)
        pooled = [m.float().mean(dim=(2, 3)) for m in maps]
        return torch.cat([*pooled, self.backbone.pool(top).float()], dim=1)


class FeatureScorer(TileModel):
    """Spectral and/or deep features -> head (raw score) -> Platt calibration."""

    def __init__(
        self,
        head: LinearHead | TreeEnsembleHead,
        calibrator: PlattCalibrator,
        spectral: SpectralContext | None = None,
        deep: DeepFeatures | None = None,
        head_columns: int | None = None,
    ) -> None:
        super().__init__()
        if spectral is None and deep is None:
            raise ValueError("a feature scorer needs spectral or deep features")
        self.spectral, self.deep = spectral, deep
        # The per-pixel baseline scores the first columns only (the label pixel's values).
        self.head_columns = head_columns
        self.head, self.calibrator = head, calibrator

    def head_input(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the head scores, and the embedding (deep features when there are any)."""
        parts = []
        if self.deep is not None:
            parts.append(self.deep(x).float())
        if self.spectral is not None:
            parts.append(self.spectral(x))
        joined = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        if self.head_columns is not None:
            joined = joined[:, : self.head_columns]
        return joined, parts[0]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding used for similarity search."""
        return self.head_input(x)[1]

    def score_and_embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Calibrated probabilities (B,) and embeddings (B, F)."""
        joined, embedding = self.head_input(x)
        return self.calibrator(self.head(joined)), embedding

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Calibrated probabilities (B,). The per-pixel learner reads the tile's centre
        pixel and nothing else (the spectral features' first columns, the 1 px window's
        means): it is cut out directly, so screening every pixel of a scene (a stride of
        1 px) costs a read, not the whole tile's statistics."""
        if self.deep is None and self.spectral is not None and self.pixel_only:
            centre = (x.shape[-2] - 1) // 2, (x.shape[-1] - 1) // 2
            return self.calibrator(self.head(x[:, :, centre[0], centre[1]].float()))
        return self.score_and_embed(x)[0]

    @property
    def pixel_only(self) -> bool:
        """Whether the head reads the centre pixel's channels alone (``pixel_lr``)."""
        assert self.spectral is not None
        return self.head_columns is not None and self.head_columns <= self.spectral.channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Calibrated logits (B,): ``sigmoid`` of them is the score."""
        raw = self.head(self.head_input(x)[0])
        return self.calibrator.a * raw + self.calibrator.b


def scorer_from_card(card: ClassifyCard, state: dict[str, torch.Tensor]) -> FeatureScorer:
    """Rebuild the module a card's ``learner`` section describes, shaped like ``state``.

    Raises InputError when the learner section lacks what its kind needs."""
    learner = card.learner
    assert learner is not None, "a feature scorer's card records its learner"
    uses, channels, tile = learner.features, learner.channels, learner.tile_size
    relative = learner.relative_channels
    spectral = SpectralContext(channels, tile, relative) if uses != "deep" else None
    deep = None
    if uses in ("deep", "combined"):
        mean, std = card.input_stats.mean, card.input_stats.std
        backbone = build_backbone(spec_from_card(card))
        min_size = required_field(learner.deep_min_size, "deep_min_size")
        deep = DeepFeatures(
            backbone, mean, std, min_size, learner.deep_views or 1, learner.deep_stages
        )
    head: LinearHead | TreeEnsembleHead
    if learner.estimator == "gbm":
        depth = required_field(learner.tree_depth, "tree_depth")
        head = TreeEnsembleHead.from_state(state, "head.", depth)
    else:
        head = LinearHead.from_state(state, "head.")
    return FeatureScorer(
        head,
        PlattCalibrator(),
        spectral=spectral,
        deep=deep,
        head_columns=learner.head_columns,
    )


def required_field(value: int | None, name: str) -> int:
    if value is None:
        raise InputError(
            f"model card learner.{name}: required for this learner",
            fix="Restore the model.yaml written by 'geoscreen train', or retrain the model.",
        )
    return value
