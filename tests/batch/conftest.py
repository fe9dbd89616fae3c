"""Batch fixtures: a trained tree-crown model and real NEON scenes cut into quadrants."""

from __future__ import annotations

from pathlib import Path

import pytest
import rasterio
from rasterio.windows import Window

from geoscreen.profiles import load_profile
from geoscreen.vision.train import TrainOptions, train_classifier

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / "geoscreen" / "configs" / "tree_crowns_neon.yaml"


@pytest.fixture(scope="session")
def tree_model(tmp_path_factory: pytest.TempPathFactory, osbs_path: Path,
               osbs_labels_path: Path) -> Path:  # fmt: skip
    out = tmp_path_factory.mktemp("tree-model")
    train_classifier(load_profile(PROFILE), [osbs_labels_path], [osbs_path], out, TrainOptions())
    return out


def cut_quadrants(source: Path, folder: Path, size: int = 200) -> list[Path]:
    """The four corners of a real scene as separate, georeferenced GeoTIFFs."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    with rasterio.open(source) as src:
        for i, (row, col) in enumerate([(0, 0), (0, size), (size, 0), (size, size)]):
            window = Window(col, row, size, size)
            profile = dict(src.profile, width=size, height=size,
                           transform=src.window_transform(window))  # fmt: skip
            path = folder / f"quadrant{i}.tif"
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(src.read(window=window))
            paths.append(path)
    return paths


@pytest.fixture
def scene_folder(tmp_path: Path, osbs_path: Path) -> Path:
    folder = tmp_path / "incoming"
    cut_quadrants(osbs_path, folder)
    return folder
