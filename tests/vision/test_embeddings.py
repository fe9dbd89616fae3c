"""Similarity search on real imagery: NEON crowns (RGB) and Sentinel-2 water (13 bands).

No training: the profile's pretrained EfficientNet-Lite0 backbone, and for imagery
beyond visible RGB the spectral-context statistics, describe tiles and examples.
"""

from __future__ import annotations

import logging
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
from geoscreen.samples import make_synthetic_scene, sample_path
from geoscreen.vision.augment import dihedral
from geoscreen.vision.backbones import build_backbone, input_stats
from geoscreen.vision.classifier import TileClassifier
from geoscreen.vision.embeddings import (
    REFERENCE_TILES,
    SimilarityFeatures,
    SimilarityModel,
    beyond_visible,
    embed_examples,
    example_chips,
    reference_chips,
    similarity_features,
    similarity_scores,
)
from geoscreen.vision.infer import ScreenOptions, screen_scene
from geoscreen.vision.inputs import backbone_spec
from geoscreen.vision.scorer import FeatureScorer
from geoscreen.vision.tabular import LinearHead, PlattCalibrator
from geoscreen.vision.tilefeatures import SpectralContext

CONFIGS = Path(__file__).resolve().parents[2] / "geoscreen" / "configs"
PROFILE = CONFIGS / "tree_crowns_neon.yaml"
WATER = CONFIGS / "open_water_s2.yaml"
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
def features(profile: Profile, osbs: Scene) -> SimilarityFeatures:
    return similarity_features(profile, osbs)


@pytest.fixture(scope="module")
def examples(
    features: SimilarityFeatures, profile: Profile, osbs: Scene, examples_path: Path
) -> np.ndarray:
    return embed_examples(features, profile, [osbs], examples_path)


def test_rgb_tiles_are_compared_by_the_backbone_alone(
    features: SimilarityFeatures, examples: np.ndarray, profile: Profile, osbs: Scene
) -> None:
    """Visible RGB: the deep block only (every stage pooled, then the last layer)."""
    assert not beyond_visible(profile, osbs)
    assert features.blocks == ["deep"] and features.deep is not None and features.deep.stages
    width = features.deep.out_features
    assert width == 1792  # EfficientNet-Lite0: 16 + 24 + 40 + 112 + 320 stage channels + 1,280
    assert examples.shape == (5, width) and examples.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(examples, axis=1), 1.0, rtol=1e-5)


def test_an_example_is_the_mean_of_its_eight_views(
    features: SimilarityFeatures,
    examples: np.ndarray,
    profile: Profile,
    osbs: Scene,
    examples_path: Path,
) -> None:
    chips = example_chips(profile, osbs, examples_path)
    assert len(chips) == 5 and all(c.size == 64 and c.label == 1 for c in chips)
    image = ChipDataset(osbs, chips[:1], ScenePreprocessor.build(profile.preprocess, osbs))[0]
    x = image["image"][None]

    def embedding(tile: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            views = torch.stack([features.raw(dihedral(tile, k)) for k in range(8)])
        return features.standardise(views.mean(dim=0))[0].numpy()

    expected = embedding(x)
    np.testing.assert_allclose(examples[0], expected, atol=1e-5)
    # A rotated example has the same embedding: the 8 views are the same set.
    np.testing.assert_allclose(embedding(dihedral(x, 1)), expected, atol=1e-4)


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


def test_with_two_blocks_the_similarity_is_the_mean_of_theirs() -> None:
    """Each block of unit length: a tile's cosine to an example is the mean of the deep
    block's cosine and the (standardised) spectral block's."""
    spectral = SpectralContext(channels=2, tile_size=8)
    deep = _TinyDeep()
    both = SimilarityFeatures(deep, spectral)  # type: ignore[arg-type]
    x = torch.rand(6, 2, 8, 8)
    raw = both.raw(x)
    both.set_reference(raw)
    spec = raw[:, deep.out_features :]
    z = (spec - spec.mean(0)) / spec.std(0, unbiased=False).clamp_min(1e-6)
    emb = both(x)
    np.testing.assert_allclose(emb.norm(dim=1).numpy(), 1.0, rtol=1e-5)
    d = torch.nn.functional.normalize(raw[:, : deep.out_features], dim=1)
    s = torch.nn.functional.normalize(z, dim=1)
    expected = ((d @ d[:2].T) + (s @ s[:2].T)) / 2
    np.testing.assert_allclose((emb @ emb[:2].T).numpy(), expected.numpy(), atol=1e-5)
    # The deep block is not centred: only the spectral one depends on the reference.
    np.testing.assert_allclose(both.center.numpy(), spec.mean(0).numpy(), rtol=1e-5)
    assert both.center.shape == (spectral.out_features,)


class _TinyDeep(torch.nn.Module):
    """A stand-in deep block: channel means and maxima (non-negative, like pooled ReLUs)."""

    out_features = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)


def test_example_tiles_rank_high_on_osbs(
    features: SimilarityFeatures,
    profile: Profile,
    osbs: Scene,
    examples: np.ndarray,
    osbs_labels_path: Path,
) -> None:
    """Measured: the tiles holding the 5 examples rank 0, 2, 3, 6 and 36 of 64."""
    model = SimilarityModel(features, torch.from_numpy(examples))
    scores = screen_scene(model, profile, osbs, OPTS)
    assert scores.embeddings is not None
    similarity = scores.scores
    np.testing.assert_allclose(
        similarity, similarity_scores(scores.embeddings.astype(np.float32), examples), atol=2e-3
    )
    assert similarity.shape == (64,) and np.all(np.abs(similarity) <= 1 + 1e-5)
    rank = np.empty(64, dtype=int)
    rank[np.argsort(-similarity, kind="stable")] = np.arange(64)
    centres = load_labels(osbs_labels_path, osbs).centres()[EXAMPLE_ROWS]
    best = [int(rank[tiles_containing(scores.grid, c[None])].min()) for c in centres]
    assert min(best) == 0, f"the most similar tile holds an example (ranks: {best})"
    assert float(np.median(best)) <= 8, f"ranks of the example tiles among 64: {best}"


def test_similarity_finds_crowns_at_another_site(
    features: SimilarityFeatures,
    profile: Profile,
    examples: np.ndarray,
    yell_path: Path,
    yell_labels_path: Path,
) -> None:
    """OSBS examples rank YELL tiles with crowns above those without.

    Measured: AP 0.786 against a positive rate of 0.593, mean similarity 0.702 for
    tiles with crowns and 0.567 without (the last layer alone, as until session 23: AP
    0.760).
    """
    scene = open_scene(yell_path, sensor="rgb")
    scores = screen_scene(
        SimilarityModel(features, torch.from_numpy(examples)), profile, scene, OPTS
    )
    truth = tiles_containing(scores.grid, load_labels(yell_labels_path, scene).centres())
    ap, rate = average_precision(scores.scores, truth), float(truth.mean())
    with_crowns, without = float(scores.scores[truth].mean()), float(scores.scores[~truth].mean())
    summary = f"AP {ap:.3f}, positive rate {rate:.3f}, mean {with_crowns:.3f} vs {without:.3f}"
    assert ap >= rate + 0.12, summary
    assert with_crowns > without + 0.05, summary


@pytest.fixture(scope="module")
def water() -> tuple[Profile, Scene, gpd.GeoDataFrame]:
    profile = load_profile(WATER)
    scene = open_scene(sample_path("s2_t33uuu"), sensor=profile.imagery.sensor)
    return profile, scene, gpd.read_file(sample_path("s2_t33uuu_points"))


def test_sentinel2_water_from_examples_in_the_west_ranks_the_east(
    water: tuple[Profile, Scene, gpd.GeoDataFrame], tmp_path: Path
) -> None:
    """Eight water points of the west half as examples; the east half's water and forest
    points are scored at their tiles. 13 bands: the spectral block joins the deep one,
    standardised by tiles of the scene.

    Measured: AP 0.989 against a positive rate of 0.653; the last layer alone, as until
    session 23, 0.755 (``benchmarks/similarity.py`` has both).
    """
    profile, scene, points = water
    assert beyond_visible(profile, scene)
    features = similarity_features(profile, scene)
    assert features.blocks == ["deep", "spectral"]
    utm = points.to_crs(scene.crs)
    middle = (scene.bounds[0] + scene.bounds[2]) / 2
    west = (utm.geometry.x < middle).to_numpy()
    is_water = (points["label"] == "water").to_numpy()
    chosen = np.flatnonzero(west & is_water)[:: max(1, int((west & is_water).sum()) // 8)][:8]
    examples = points.iloc[chosen][["label", "geometry"]]
    path = tmp_path / "water.geojson"
    examples.to_file(path)
    emb = embed_examples(features, profile, [scene], path)
    assert emb.shape == (8, features.deep_width + features.spectral.out_features)  # type: ignore[union-attr]
    scores = screen_scene(SimilarityModel(features, torch.from_numpy(emb)), profile, scene, OPTS)
    grid = scores.grid
    half = grid.tile_size / 2
    cols, rows = ~scene.transform * (utm.geometry.x.to_numpy(), utm.geometry.y.to_numpy())
    cc, rr = grid.cols * grid.stride + half, grid.rows * grid.stride + half
    at = np.array(
        [np.argmin((cc - c) ** 2 + (rr - r) ** 2) for c, r in zip(cols, rows, strict=True)]
    )
    east = ~west
    ap = average_precision(scores.scores[at[east]], is_water[east])
    rate = float(is_water[east].mean())
    assert ap >= 0.95 and ap >= rate + 0.2, f"AP {ap:.3f} at a positive rate of {rate:.3f}"


def test_the_spectral_reference_is_tiles_of_the_examples_scene(
    water: tuple[Profile, Scene, gpd.GeoDataFrame],
) -> None:
    profile, scene, _ = water
    chips = reference_chips(profile, scene, REFERENCE_TILES)
    assert len(chips) == REFERENCE_TILES and len({(c.row_off, c.col_off) for c in chips}) == 512
    again = reference_chips(profile, scene, REFERENCE_TILES)
    assert chips == again  # seeded: the same draw each time
    every = reference_chips(profile, scene, 10**6)
    assert len(every) == 2048  # all the scene's tiles with data when it has fewer


def test_without_pretrained_weights_only_the_spectral_block(
    profile: Profile, osbs: Scene, caplog: pytest.LogCaptureFixture
) -> None:
    model = profile.model.model_copy(update={"weights": None, "weights_sha256": None})
    bare = profile.model_copy(update={"model": model})
    with caplog.at_level(logging.WARNING, logger="geoscreen.vision.embeddings"):
        features = similarity_features(bare, osbs)
    assert features.blocks == ["spectral"]
    assert "no pretrained weights" in caplog.text


def test_a_trained_models_features(profile: Profile, osbs: Scene) -> None:
    """``--model``: a fine-tuned CNN's features as trained (no enlarging, no stages); a
    spectral learner has no backbone, so its profile's spectral block alone."""
    spec = backbone_spec(profile, osbs)
    mean, std = input_stats(spec)
    cnn = TileClassifier(build_backbone(spec), mean, std).eval()
    features = similarity_features(profile, osbs, cnn)
    assert features.blocks == ["deep"]
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(features.raw(x), cnn.features(x))
    spectral = SpectralContext(3, 64)
    learner = FeatureScorer(LinearHead(spectral.out_features), PlattCalibrator(), spectral=spectral)
    assert similarity_features(profile, osbs, learner).blocks == ["spectral"]


def test_examples_need_only_lie_in_one_scene(
    features: SimilarityFeatures,
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
    both = embed_examples(features, profile, [elsewhere, osbs, pixel_space], examples_path)
    np.testing.assert_allclose(both, examples, atol=1e-6)
    with pytest.raises(InputError, match="no example falls inside the given imagery"):
        embed_examples(features, profile, [elsewhere, pixel_space], examples_path)


def test_negative_rows_are_not_examples(
    features: SimilarityFeatures,
    profile: Profile,
    osbs: Scene,
    osbs_labels_path: Path,
    tmp_path: Path,
) -> None:
    boxes = load_labels(osbs_labels_path, osbs).boxes_px()[:4]
    path = write_examples(
        osbs, boxes, tmp_path / "mixed.geojson", ["positive", "negative", "positive", "negative"]
    )
    assert len(example_chips(profile, osbs, path)) == 2
    assert embed_examples(features, profile, [osbs], path).shape[0] == 2
