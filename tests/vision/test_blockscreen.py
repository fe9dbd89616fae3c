"""Block screening: the same scores as reading tile by tile, and used only where valid."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.ensemble import HistGradientBoostingClassifier

from geoscreen.imagery.preprocess import NormalizationConfig, PreprocessConfig
from geoscreen.imagery.scene import Scene, open_scene
from geoscreen.imagery.tiling import TileGrid
from geoscreen.profiles import ModelSpec, Profile, TilingConfig
from geoscreen.samples import make_synthetic_scene
from geoscreen.vision.backbones import BackboneSpec, build_backbone
from geoscreen.vision.blockscreen import block_path_applies, grid_blocks, score_blocks
from geoscreen.vision.classifier import TileClassifier
from geoscreen.vision.infer import ScreenOptions, prepare_scene, score_grid, screen_scene
from geoscreen.vision.learners import GBM_PARAMS
from geoscreen.vision.scoremap import ScoreMap
from geoscreen.vision.scorer import DeepFeatures, FeatureScorer
from geoscreen.vision.tabular import LinearHead, PlattCalibrator, TreeEnsembleHead
from geoscreen.vision.tilefeatures import SpectralContext

BANDS = 4
TILE = 16
CPU = ScreenOptions(device="cpu", num_workers=0, precision="fp32")


def profile(overlap: int, method: str = "percentile") -> Profile:
    return Profile(
        name="block_test",
        version="0.0.0",
        description="Block screening test profile.",
        tiling=TilingConfig(tile_size=TILE, overlap=overlap),
        preprocess=PreprocessConfig(normalization=NormalizationConfig(method=method)),
        model=ModelSpec(backbone="resnet18"),
    )


@pytest.fixture(scope="module")
def scene_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4-band uint16, 157 x 83 px (no tile multiple), nodata 0 on a 37 px left/top
    band (tiles wholly inside it are empty), 32 px file blocks, EPSG:32633."""
    return make_synthetic_scene(
        tmp_path_factory.mktemp("block") / "scene.tif", 157, 83, count=BANDS,
        dtype="uint16", crs="EPSG:32633", nodata=0, nodata_margin=37, structures=5,
        blocksize=32,
    )  # fmt: skip


def gbm_scorer(channels: int = BANDS, seed: int = 0) -> FeatureScorer:
    """Spectral context -> trees of the shipped depth/count, fitted on random features
    whose scale matches real tiles', so that many splits fall among screened values."""
    spectral = SpectralContext(channels, TILE, relative=True)
    rng = np.random.default_rng(seed)
    x = spectral(
        torch.rand(600, channels, TILE, TILE)
        * torch.from_numpy(rng.uniform(0.2, 1.0, (600, 1, 1, 1)))
    )
    y = rng.integers(0, 2, 600)
    gbm = HistGradientBoostingClassifier(**{**GBM_PARAMS, "random_state": seed}).fit(x.numpy(), y)
    head = TreeEnsembleHead.from_sklearn(gbm)
    return FeatureScorer(head, PlattCalibrator(1.3, -0.2), spectral=spectral).eval()


def both_ways(
    model: FeatureScorer, prof: Profile, scene: Scene, opts: ScreenOptions
) -> tuple[ScoreMap, ScoreMap]:
    """Screened block by block (the default for this model), and tile by tile."""
    blocks = screen_scene(model, prof, scene, opts)
    tiles = screen_scene(model, prof, scene, replace(opts, block_reads=False))
    return blocks, tiles


@pytest.mark.parametrize("overlap", [0, 4, 9])
@pytest.mark.parametrize("drop_empty", [True, False])
def test_blocks_score_every_tile_as_tile_reads_do(
    scene_path: Path, overlap: int, drop_empty: bool
) -> None:
    scene = open_scene(scene_path)
    model = gbm_scorer()
    opts = replace(CPU, drop_empty=drop_empty, embeddings=True)
    blocks, tiles = both_ways(model, profile(overlap), scene, opts)
    grid = blocks.grid
    assert np.array_equal(grid.flat_indexes(), tiles.grid.flat_indexes())
    # Edge tiles reach past the scene on the right and bottom; with drop_empty=False
    # wholly empty tiles (inside the nodata band) are scored too.
    assert int(grid.cols.max()) * grid.stride + TILE > scene.width
    assert int(grid.rows.max()) * grid.stride + TILE > scene.height
    assert (tiles.valid_fraction == 0).any() == (not drop_empty)
    assert ((tiles.valid_fraction > 0) & (tiles.valid_fraction < 1)).any()
    np.testing.assert_array_equal(blocks.valid_fraction, tiles.valid_fraction)
    np.testing.assert_allclose(blocks.scores, tiles.scores, rtol=0, atol=1e-5)
    assert blocks.embeddings is not None and tiles.embeddings is not None
    np.testing.assert_array_equal(blocks.embeddings, tiles.embeddings)
    assert len(np.unique(tiles.scores)) > len(tiles.scores) // 4, "trees split the tiles"
    raster_b, transform_b, cell_b = blocks.raster()
    raster_t, transform_t, cell_t = tiles.raster()
    assert (transform_b, cell_b) == (transform_t, cell_t)
    np.testing.assert_allclose(raster_b, raster_t, rtol=0, atol=1e-5)
    frame_b, frame_t = blocks.to_geodataframe(), tiles.to_geodataframe()
    assert list(frame_b["tile_id"]) == list(frame_t["tile_id"])


def test_small_blocks_and_a_selection_score_as_tile_reads(scene_path: Path) -> None:
    """Many blocks (a tile or two each), a grid subset with holes (an AOI, a scan's
    chunk), a linear head and dtype_range inputs: still the tile-by-tile scores."""
    scene = open_scene(scene_path)
    prof = profile(5, "dtype_range")
    spectral = SpectralContext(BANDS, TILE)
    head = LinearHead(spectral.out_features)
    head.coef.copy_(torch.linspace(-1, 1, spectral.out_features))
    model = FeatureScorer(head, PlattCalibrator(), spectral=spectral).eval()
    device, grid, pre = prepare_scene(prof, scene, "cpu")
    keep = np.flatnonzero(np.arange(len(grid)) % 3 != 1)
    subset = TileGrid(scene, TILE, 5, selection=grid.flat_indexes()[keep])
    reference = score_grid(model, subset, pre, replace(CPU, block_reads=False), device)
    for block_px, batch in ((300, 1), (2_000, 3), (1 << 20, 2048)):
        scores, valid, _ = score_blocks(model, subset, pre, device, block_px=block_px,
                                        batch_tiles=batch)  # fmt: skip
        np.testing.assert_allclose(scores, reference.scores, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(valid, reference.valid_fraction)
    # Every selected tile is in exactly one block, and every block's window covers its tiles.
    seen = np.concatenate([b.members for b in grid_blocks(subset, 2_000)])
    assert np.array_equal(np.sort(seen), np.arange(len(subset)))


@pytest.mark.parametrize("tile", [16, 15])
def test_the_pixel_learner_reads_the_centre_pixel_alone(scene_path: Path, tile: int) -> None:
    """``pixel_lr`` (a head on the first columns, the 1 px window's means) scores from
    the centre pixel without the tile's statistics: the same scores as with them, and
    block screening without embeddings (which takes that shortcut) matches tile reads
    (which compute every feature, as embeddings need)."""
    spectral = SpectralContext(BANDS, tile, relative=True)
    head = LinearHead(BANDS)
    head.coef.copy_(torch.tensor([1.5, -2.0, 0.7, 0.3]))
    model = FeatureScorer(head, PlattCalibrator(1.2, -0.4), spectral=spectral,
                          head_columns=BANDS).eval()  # fmt: skip
    assert model.pixel_only
    tiles = torch.rand(64, BANDS, tile, tile)
    np.testing.assert_array_equal(model.score(tiles), model.score_and_embed(tiles)[0])
    prof = profile(tile - 1).model_copy(
        update={"tiling": TilingConfig(tile_size=tile, overlap=tile - 1)}
    )
    scene = open_scene(scene_path)
    blocks = screen_scene(model, prof, scene, CPU)
    embedded = screen_scene(model, prof, scene, replace(CPU, block_reads=False, embeddings=True))
    assert len(blocks.grid) == len(embedded.grid) > 5_000  # a tile per pixel
    np.testing.assert_allclose(blocks.scores, embedded.scores, rtol=0, atol=1e-6)
    # Any other head reads every feature
    wide = FeatureScorer(LinearHead(spectral.out_features), PlattCalibrator(), spectral=spectral)
    assert not wide.pixel_only


def test_block_path_only_for_spectral_scorers_on_unwarped_scenes(scene_path: Path) -> None:
    scene = open_scene(scene_path)
    grid = TileGrid(scene, TILE, 4)
    spectral = gbm_scorer()
    assert block_path_applies(spectral, grid)
    # Reprojected on the fly: a warped read of a block may resample pixels differently.
    assert not block_path_applies(spectral, TileGrid(scene.reproject("EPSG:3857"), TILE, 4))
    spec = BackboneSpec("resnet18", BANDS, band_roles=(None,) * BANDS)
    cnn = TileClassifier(build_backbone(spec), [0.5] * BANDS, [0.2] * BANDS)
    assert not block_path_applies(cnn, grid)
    deep = DeepFeatures(build_backbone(spec), [0.5] * BANDS, [0.2] * BANDS)
    combined = FeatureScorer(
        spectral.head, PlattCalibrator(), spectral=spectral.spectral, deep=deep
    )
    assert not block_path_applies(combined, grid)
