"""A similarity search kept as a model: saved, loaded and screened like a trained one.

Real imagery: NEON OSBS crowns (RGB, the deep block alone) and the bundled Sentinel-2
scene (13 bands: the deep block and the spectral one, whose reference statistics must
travel with the model).
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from geoscreen.errors import ConfigError
from geoscreen.imagery.scene import Scene, open_scene
from geoscreen.labels import load_labels
from geoscreen.profiles import Profile, load_profile
from geoscreen.samples import sample_path
from geoscreen.vision.classifier import load_model
from geoscreen.vision.embeddings import (
    ExampleSet,
    SimilarityModel,
    example_set,
    similarity_features,
)
from geoscreen.vision.infer import ScreenOptions, screen_scene, screening_precision
from geoscreen.vision.modeldir import CARD_FILE, CARD_MARKDOWN, WEIGHTS_FILE
from geoscreen.vision.similarity_model import (
    THRESHOLD_SOURCE,
    blocked_leave_one_out,
    keep_search,
    leave_one_out,
    scene_comparison,
)
from geoscreen.vision.task import ClassifyTask
from geoscreen.vision.testing import untrained_model_dir

CONFIGS = Path(__file__).resolve().parents[2] / "geoscreen" / "configs"
OPTS = ScreenOptions(num_workers=0, device="cpu", precision="fp32")
CPU = torch.device("cpu")


def search(profile: Profile, scene: Scene, examples: Path) -> tuple[SimilarityModel, ExampleSet]:
    features = similarity_features(profile, scene)
    found = example_set(features, profile, [scene], examples)
    return SimilarityModel(features, torch.from_numpy(found.embeddings)), found


@pytest.fixture(scope="module")
def crowns(
    osbs_path: Path, osbs_labels_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Profile, Scene, Path]:
    """The tree-crown profile, OSBS and six of its labelled crowns as examples."""
    profile = load_profile(CONFIGS / "tree_crowns_neon.yaml")
    scene = open_scene(osbs_path, sensor="rgb")
    path = tmp_path_factory.mktemp("examples") / "crowns.csv"
    pd.read_csv(osbs_labels_path).iloc[[0, 10, 20, 30, 40, 50]].to_csv(path, index=False)
    assert len(load_labels(path, scene)) == 6
    return profile, scene, path


@pytest.fixture(scope="module")
def water(tmp_path_factory: pytest.TempPathFactory) -> tuple[Profile, Scene, Path]:
    """The Sentinel-2 water profile, its scene and eight water points as examples."""
    profile = load_profile(CONFIGS / "open_water_s2.yaml")
    scene = open_scene(sample_path("s2_t33uuu"), sensor=profile.imagery.sensor)
    points = gpd.read_file(sample_path("s2_t33uuu_points"))
    water = points[points["label"] == "water"]
    path = tmp_path_factory.mktemp("water") / "water.geojson"
    water.iloc[:: len(water) // 8][:8].to_file(path)
    return profile, scene, path


def test_leave_one_out_is_each_examples_best_match_among_the_others() -> None:
    e = np.array([[1, 0], [0.8, 0.6], [0, 1]], dtype=np.float32)
    np.testing.assert_allclose(leave_one_out(e), [0.8, 0.8, 0.6], rtol=1e-6)
    assert np.isnan(leave_one_out(e[:1])).all()  # one example: nothing to leave out
    # each example as a tile sees it, against the others' (view-averaged) embeddings
    tiles = np.array([[0, 1], [1, 0], [0.6, 0.8]], dtype=np.float32)
    np.testing.assert_allclose(leave_one_out(e, tiles), [1.0, 1.0, 0.96], rtol=1e-6)
    # blocked: the first two lie 3 px apart in one scene, the third in another scene
    places = np.array([[0, 10, 10], [0, 12, 13], [1, 10, 10]], dtype=np.float64)
    np.testing.assert_allclose(leave_one_out(e, None, places, 5.0), [0.0, 0.6, 0.6], atol=1e-6)
    alone = leave_one_out(e[:2], None, places[:2], 5.0)  # nothing far enough: NaN
    assert np.isnan(alone).all()


def test_a_left_out_example_scores_as_a_tile_would(crowns: tuple[Profile, Scene, Path]) -> None:
    """Averaged over 8 views, examples are smoother and more alike than tiles: each
    example is left out as one view, which scores lower than its averaged embedding."""
    profile, scene, examples = crowns
    _, found = search(profile, scene, examples)
    as_tiles = leave_one_out(found.embeddings, found.as_tiles)
    averaged = leave_one_out(found.embeddings)
    assert np.median(as_tiles) < np.median(averaged) - 0.02


@pytest.mark.parametrize("case", ["crowns", "water"])
def test_a_saved_search_screens_as_the_search_did(
    case: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Saved, loaded and screened, the model gives the scores ``similar`` gave, the
    spectral block's reference statistics included (Sentinel-2)."""
    profile, scene, examples = request.getfixturevalue(case)
    model, found = search(profile, scene, examples)
    keep_search(model, profile, found, 0.9, tmp_path / "m", CPU, options={"examples": "x"})
    assert {p.name for p in (tmp_path / "m").iterdir()} == {CARD_FILE, CARD_MARKDOWN, WEIGHTS_FILE}
    loaded = load_model(tmp_path / "m")
    assert isinstance(loaded.model, SimilarityModel)
    assert loaded.model.embed.blocks == model.embed.blocks
    assert model.embed.blocks == (["deep"] if case == "crowns" else ["deep", "spectral"])
    if model.embed.spectral is not None:  # not the identity: set by the scene's tiles
        assert not torch.equal(loaded.model.embed.scale, torch.ones_like(model.embed.scale))
        torch.testing.assert_close(loaded.model.embed.scale, model.embed.scale)
    before = screen_scene(model, profile, scene, OPTS).scores
    after = screen_scene(loaded.model, profile, scene, OPTS).scores
    np.testing.assert_allclose(after, before, atol=1e-5)
    card = loaded.card
    assert card.similarity and card.threshold == 0.9 and card.threshold_source == THRESHOLD_SOURCE
    assert card.learner is not None and card.learner.estimator.startswith("highest cosine")
    assert card.region is not None and card.data.labels[0].positives == len(found.embeddings)
    page = (tmp_path / "m" / CARD_MARKDOWN).read_text()
    assert "not a probability" in page and "## What the threshold means" in page


def test_the_card_says_what_the_threshold_means(
    crowns: tuple[Profile, Scene, Path], tmp_path: Path
) -> None:
    """Examples each left out (with those within two tile widths), and random tiles of
    their scene, at the threshold: the higher it is, the fewer of either."""
    profile, scene, examples = crowns
    model, found = search(profile, scene, examples)
    shares = []
    for t in (0.5, 0.8, 0.95):
        keep_search(model, profile, found, t, tmp_path / str(t), CPU)
        m = load_model(tmp_path / str(t)).card.metrics
        assert m["examples"] == 6 and m["reference_tiles"] == 64  # OSBS has 64 tiles
        shares.append((m["examples_at_threshold_left_out"], m["reference_share_at_threshold"]))
    left_out = blocked_leave_one_out(found, profile.tiling.tile_size)
    assert np.isfinite(left_out).sum() == m["examples_left_out"] >= 4
    expected = [np.mean(left_out >= t) for t in (0.5, 0.8, 0.95)]
    assert [s[0] for s in shares] == pytest.approx(expected, abs=1e-4)  # the card rounds
    assert shares[0][1] >= shares[1][1] >= shares[2][1] and shares[0][1] > shares[2][1]


def test_its_threshold_is_in_force_and_its_scores_stay_fp32(
    crowns: tuple[Profile, Scene, Path], tmp_path: Path
) -> None:
    """The card's threshold, not the profile's (a probability, on another scale), even
    when the profile sets one; bf16 asked for, fp32 given."""
    profile, scene, examples = crowns
    model, found = search(profile, scene, examples)
    keep_search(model, profile, found, 0.87, tmp_path / "m", CPU)
    loaded = load_model(tmp_path / "m")
    assert "threshold" in profile.model_fields_set or profile.threshold != 0.87
    assert ClassifyTask().threshold(loaded, profile) == (0.87, THRESHOLD_SOURCE)
    assert screening_precision(loaded.model, "bf16", CPU, checked=True) == "fp32"


def test_weights_that_do_not_fit_the_card_are_refused(
    crowns: tuple[Profile, Scene, Path], tmp_path: Path
) -> None:
    """A card saying spectral features over weights saved with deep ones: refused with
    the card named, no traceback."""
    profile, scene, examples = crowns
    model, found = search(profile, scene, examples)
    keep_search(model, profile, found, 0.9, tmp_path / "m", CPU)
    card_path = tmp_path / "m" / CARD_FILE
    card = yaml.safe_load(card_path.read_text())
    card["learner"]["features"] = "spectral"
    card_path.write_text(yaml.safe_dump(card))
    with pytest.raises(ConfigError, match=r"model\.pt does not match"):
        load_model(tmp_path / "m")


def test_a_trained_cnns_features_kept(crowns: tuple[Profile, Scene, Path], tmp_path: Path) -> None:
    """``similar --model CNN --save-model``: the card keeps the CNN's backbone record and
    the features as the CNN computes them (no enlarging, no stages), so the kept model
    screens as the search did."""
    profile, scene, examples = crowns
    cnn = load_model(untrained_model_dir(profile, scene, tmp_path / "cnn"))
    features = similarity_features(profile, scene, cnn.model)
    found = example_set(features, profile, [scene], examples)
    model = SimilarityModel(features, torch.from_numpy(found.embeddings))
    keep_search(model, profile, found, 0.9, tmp_path / "m", CPU, source=cnn)
    loaded = load_model(tmp_path / "m")
    learner = loaded.card.learner
    assert learner is not None and learner.deep_min_size == 1 and not learner.deep_stages
    assert loaded.card.backbone == cnn.card.backbone
    assert loaded.card.training is not None
    assert loaded.card.training.options["model"]["model_sha256"] == cnn.sha256
    page = (tmp_path / "m" / CARD_MARKDOWN).read_text()
    assert f"features as the trained model `{cnn.path}` computes them" in page
    before = screen_scene(model, profile, scene, OPTS).scores
    np.testing.assert_allclose(screen_scene(loaded.model, profile, scene, OPTS).scores, before,
                               atol=1e-5)  # fmt: skip


def test_screened_scenes_are_compared_with_the_examples_scene(
    crowns: tuple[Profile, Scene, Path], tmp_path: Path
) -> None:
    """The share at the threshold and the top 1% of a scene's scores, beside the card's
    numbers for random tiles of the examples' scene."""
    profile, scene, examples = crowns
    model, found = search(profile, scene, examples)
    keep_search(model, profile, found, 0.9, tmp_path / "m", CPU)
    card = load_model(tmp_path / "m").card
    scores = np.array([0.95, 0.5, 0.2, 0.1])
    line = scene_comparison(card, scores)
    assert line is not None and line.startswith("25.0% of tiles score at least 0.9")
    ref = card.metrics["reference_share_at_threshold"]
    assert f"random tiles of the examples' scene: {ref:.1%}" in line
    assert scene_comparison(card, np.zeros(0)) is None
