"""Similarity search: example crowns on OSBS find tiles with crowns, there and at YELL.

No training: the profile's pretrained EfficientNet-Lite0 backbone embeds tiles and examples.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
import torch

from geoscreen.errors import InputError
from geoscreen.evaluate.tile_truth import tiles_containing
from geoscreen.imagery.dataset import ChipDataset
from geoscreen.imagery.preprocess import ScenePreprocessor
from geoscreen.imagery.scene import Scene, open_scene
from geoscreen.labels import load_labels
from geoscreen.profiles import Profile, load_profile
from geoscreen.ranking import average_precision
from geoscreen.samples import make_synthetic_scene
from geoscreen.vision.augment import dihedral
from geoscreen.vision.classifier import TileClassifier
from geoscreen.vision.embeddings import (
    embed_examples,
    example_chips,
    feature_model,
    similarity_scores,
)
from geoscreen.vision.infer import ScreenOptions, screen_scene

PROFILE = Path(__file__).resolve().parents[2] / "geoscreen" / "configs" / "tree_crowns_neon.yaml"
EXAMPLE_ROWS = [0, 10, 20, 30, 40]
OPTS = ScreenOptions(num_workers=0, device="cpu", embeddings=True)


def write_examples(scene: Scene, boxes_px: np.ndarray, path: Path, labels: list[str]) -> Path:
    """Pixel boxes as polygons in the scene's CRS (via its transform), as GeoJSON."""
    t = scene.transform
    matrix = [t.a, t.b, t.d, t.e, t.c, t.f]
    geoms = [shapely.affinity.affine_transform(shapely.box(*b), matrix) for b in boxes_px]
    gpd.GeoDataFrame({"label": labels}, geometry=geoms, crs=scene.crs).to_file(path)
    return path


@pytest.fixture(scope="module")
def profile() -> Profile:
    return load_profile(PROFILE)


@pytest.fixture(scope="module")
def osbs(osbs_path: Path) -> Scene:
    return open_scene(osbs_path, sensor="rgb")


@pytest.fixture(scope="module")
def examples_path(
    osbs: Scene, osbs_labels_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Five OSBS crown boxes in EPSG:32617."""
    boxes = load_labels(osbs_labels_path, osbs).boxes_px()[EXAMPLE_ROWS]
    path = tmp_path_factory.mktemp("examples") / "crowns.geojson"
    return write_examples(osbs, boxes, path, ["tree"] * len(boxes))


@pytest.fixture(scope="module")
def model(profile: Profile, osbs: Scene) -> TileClassifier:
    return feature_model(profile, osbs)


@pytest.fixture(scope="module")
def examples(
    model: TileClassifier, profile: Profile, osbs: Scene, examples_path: Path
) -> np.ndarray:
    return embed_examples(model, profile, [osbs], examples_path)


def test_example_embeddings(
    examples: np.ndarray, model: TileClassifier, profile: Profile, osbs: Scene, examples_path: Path
) -> None:
    assert examples.shape == (5, model.backbone.out_features) and examples.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(examples, axis=1), 1.0, rtol=1e-5)
    # Each is the normalised mean of its chip's 8 flips/rotations.
    chips = example_chips(profile, osbs, examples_path)
    assert len(chips) == 5 and all(c.size == 64 and c.label == 1 for c in chips)
    image = ChipDataset(osbs, chips[:1], ScenePreprocessor.build(profile.preprocess, osbs))[0]
    with torch.inference_mode():
        views = torch.stack([model.features(dihedral(image["image"][None], k)) for k in range(8)])
    expected = torch.nn.functional.normalize(views.mean(dim=0), dim=1)[0].numpy()
    np.testing.assert_allclose(examples[0], expected, atol=1e-5)
    # A rotated example has the same embedding: the 8 views are the same set.
    rotated = dihedral(image["image"][None], 1)
    with torch.inference_mode():
        views = torch.stack([model.features(dihedral(rotated, k)) for k in range(8)])
    again = torch.nn.functional.normalize(views.mean(dim=0), dim=1)[0].numpy()
    np.testing.assert_allclose(again, expected, atol=1e-4)


def test_similarity_scores_math() -> None:
    tiles = np.array([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0], [1.0, 1.0]], dtype=np.float16)
    examples = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    np.testing.assert_allclose(
        similarity_scores(tiles, examples), [1.0, 1.0, 0.0, np.sqrt(0.5)], atol=1e-3
    )
    rng = np.random.default_rng(0)
    t, e = rng.normal(size=(50, 8)), rng.normal(size=(3, 8))
    cos = (t / np.linalg.norm(t, axis=1, keepdims=True)) @ (
        e / np.linalg.norm(e, axis=1, keepdims=True)
    ).T
    np.testing.assert_allclose(similarity_scores(t, e), cos.max(axis=1), atol=1e-5)


def test_example_tiles_rank_high_on_osbs(
    model: TileClassifier,
    profile: Profile,
    osbs: Scene,
    examples: np.ndarray,
    osbs_labels_path: Path,
) -> None:
    """Measured: the tiles holding the 5 examples rank 2, 46, 0, 6 and 5 of 64."""
    scores = screen_scene(model, profile, osbs, OPTS)
    assert scores.embeddings is not None
    similarity = similarity_scores(scores.embeddings, examples)
    assert similarity.shape == (64,) and np.all(similarity <= 1 + 1e-5)
    rank = np.empty(64, dtype=int)
    rank[np.argsort(-similarity, kind="stable")] = np.arange(64)
    centres = load_labels(osbs_labels_path, osbs).centres()[EXAMPLE_ROWS]
    best = [int(rank[tiles_containing(scores.grid, c[None])].min()) for c in centres]
    assert min(best) == 0, f"the most similar tile holds an example (ranks: {best})"
    assert float(np.median(best)) <= 8, f"ranks of the example tiles among 64: {best}"


def test_similarity_finds_crowns_at_another_site(
    model: TileClassifier,
    profile: Profile,
    examples: np.ndarray,
    yell_path: Path,
    yell_labels_path: Path,
) -> None:
    """OSBS examples rank YELL tiles with crowns above those without.

    Measured: AP 0.760 against a positive rate of 0.593; mean similarity 0.664 for
    tiles with crowns, 0.551 without.
    """
    scene = open_scene(yell_path, sensor="rgb")
    scores = screen_scene(model, profile, scene, OPTS)
    assert scores.embeddings is not None
    similarity = similarity_scores(scores.embeddings, examples)
    truth = tiles_containing(scores.grid, load_labels(yell_labels_path, scene).centres())
    ap, rate = average_precision(similarity, truth), float(truth.mean())
    with_crowns, without = float(similarity[truth].mean()), float(similarity[~truth].mean())
    summary = f"AP {ap:.3f}, positive rate {rate:.3f}, mean {with_crowns:.3f} vs {without:.3f}"
    assert ap >= rate + 0.05, summary
    assert with_crowns > without + 0.05, summary


def test_examples_need_only_lie_in_one_scene(
    model: TileClassifier,
    profile: Profile,
    osbs: Scene,
    examples: np.ndarray,
    examples_path: Path,
    yell_path: Path,
    tmp_path: Path,
) -> None:
    elsewhere = open_scene(
        make_synthetic_scene(tmp_path / "far.tif", 64, 64, crs="EPSG:32617", resolution=0.1)
    )
    pixel_space = open_scene(yell_path, sensor="rgb")
    both = embed_examples(model, profile, [elsewhere, osbs, pixel_space], examples_path)
    np.testing.assert_allclose(both, examples, atol=1e-6)
    with pytest.raises(InputError, match="no example falls inside the given imagery"):
        embed_examples(model, profile, [elsewhere, pixel_space], examples_path)


def test_negative_rows_are_not_examples(
    model: TileClassifier, profile: Profile, osbs: Scene, osbs_labels_path: Path, tmp_path: Path
) -> None:
    boxes = load_labels(osbs_labels_path, osbs).boxes_px()[:4]
    path = write_examples(
        osbs, boxes, tmp_path / "mixed.geojson", ["positive", "negative", "positive", "negative"]
    )
    assert len(example_chips(profile, osbs, path)) == 2
    assert embed_examples(model, profile, [osbs], path).shape[0] == 2
