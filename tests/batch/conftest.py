"""Batch fixtures: a trained tree-crown model and real NEON scenes cut into quadrants."""

from __future__ import annotations

from pathlib import Path

import pytest

from geoscreen.profiles import load_profile
from geoscreen.samples import cut_quadrants
from geoscreen.vision.train import TrainOptions, train_classifier

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / "geoscreen" / "configs" / "tree_crowns_neon.yaml"


@pytest.fixture(scope="session")
def tree_model(tmp_path_factory: pytest.TempPathFactory, osbs_path: Path,
               osbs_labels_path: Path) -> Path:  # fmt: skip
    out = tmp_path_factory.mktemp("tree-model")
    train_classifier(load_profile(PROFILE), [osbs_labels_path], [osbs_path], out, TrainOptions())
    return out


@pytest.fixture
def scene_folder(tmp_path: Path, osbs_path: Path) -> Path:
    folder = tmp_path / "incoming"
    cut_quadrants(osbs_path, folder)
    return folder
