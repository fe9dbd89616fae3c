"""Helpers for tests and benchmarks (not used by any command): an untrained model folder.

Scanning and screening speed and mechanics do not depend on what a model learnt, so
tests and benchmarks use a classifier with the profile's backbone and an untrained
head, saved with the card fields that loading and screening read.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from geoscreen.imagery.region import region_record
from geoscreen.imagery.scene import Scene
from geoscreen.profiles import Profile
from geoscreen.vision.backbones import build_backbone, input_stats
from geoscreen.vision.classifier import TileClassifier, save_model
from geoscreen.vision.inputs import backbone_spec


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
    card = {
        "profile": {"name": profile.name, "version": profile.version},
        "backbone": {
            "name": spec.name,
            "in_channels": spec.in_channels,
            "band_roles": list(spec.band_roles or []),
        },
        "input_stats": {"mean": mean, "std": std},
        "preprocess": profile.preprocess.model_dump(mode="json"),
        "tiling": profile.tiling.model_dump(mode="json"),
        "threshold": threshold,
    }
    if region_of:
        card["region"] = region_record(region_of)
    save_model(TileClassifier(build_backbone(spec), mean, std), card, out)
    return out
