"""Helpers for tests and benchmarks (not used by any command): an untrained model folder,
and the check that bf16/int8 screening checked near the threshold agrees with fp32.

Scanning and screening speed and mechanics do not depend on what a model learnt, so
tests and benchmarks use a classifier with the profile's backbone and an untrained
head, saved with the card fields that loading and screening read.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from geoscreen.imagery.region import region_record
from geoscreen.imagery.scene import Scene
from geoscreen.profiles import Profile
from geoscreen.vision.backbones import build_backbone, input_stats
from geoscreen.vision.classifier import TileClassifier, save_model
from geoscreen.vision.inputs import backbone_spec
from geoscreen.vision.modelcard import BackboneRecord, ClassifyCard, InputStats, ProfileRecord


def untrained_model_dir(
    profile: Profile,
    scene: Scene,
    out: Path,
    threshold: float = 0.5,
    region_of: Sequence[Scene] = (),
) -> Path:
    """Save a classifier for ``profile`` on the bands of ``scene`` (untrained head) to
    ``out``; with ``region_of``, its card records those scenes as the training region."""
    spec = backbone_spec(profile, scene)
    mean, std = input_stats(spec)
    card = ClassifyCard(
        profile=ProfileRecord(name=profile.name, version=profile.version),
        backbone=BackboneRecord(
            name=spec.name, in_channels=spec.in_channels, band_roles=list(spec.band_roles or [])
        ),
        input_stats=InputStats(mean=mean, std=std),
        preprocess=profile.preprocess,
        tiling=profile.tiling,
        threshold=threshold,
        region=region_record(region_of) if region_of else None,
    )
    save_model(TileClassifier(build_backbone(spec), mean, std), card, out)
    return out


def assert_checked_like_fp32(
    fp32: np.ndarray, plain: np.ndarray, checked: np.ndarray, threshold: float, margin: float
) -> None:
    """Scores of one grid in fp32, in a faster arithmetic throughout (``plain``) and
    checked (``checked``, tiles within ``margin`` of ``threshold`` scored again in fp32):
    tiles near the threshold got fp32's scores, the others kept the plain ones, and the
    tiles at or above the threshold are fp32's. Some tiles must be near and some not."""
    near = np.abs(plain - threshold) <= margin
    assert 0 < near.sum() < near.size
    np.testing.assert_allclose(checked[near], fp32[near], atol=1e-5)
    np.testing.assert_array_equal(checked[~near], plain[~near])
    np.testing.assert_array_equal(checked >= threshold, fp32 >= threshold)
