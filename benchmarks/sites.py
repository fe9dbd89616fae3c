"""Site extraction and matching vs screening time, at 1 million tiles and 50,000 existing sites.

Usage::

    python benchmarks/sites.py [--tiles 1000000] [--existing 50000] [--device auto] [--quick]

What is timed, for the tree-crown profile (EfficientNet-Lite0, 64 px tiles, 16 px
overlap, 0.1 m pixels, EPSG:32617):

  (s) screening throughput of that model, end to end (``screen_scene``: reading,
      preprocessing, model; batch 32, one reader process, the ``geoscreen screen``
      defaults) on the bundled NEON YELL image (572 tiles; OSBS, 81 tiles, with
      ``--quick``), in tiles per second. The head is untrained, which costs the
      same as a trained one. Screening time of the big scene = tiles / (s).
  (x) ``extract_sites`` on a score map of ``--tiles`` tiles (a 1000 x 1000 grid;
      scores from a smoothed random field, 5 % of tiles flagged in small blobs;
      no pixels are read, so the scene is a description only),
  (c) ``coverage_of`` that score map (the run's footprint for the history),
  (m) ``update_sites``: matching those sites against ``--existing`` sites of an
      earlier run of the same place (IoU >= 0.2) with a coverage history, so
      ``new_since`` is computed too.

Prints (x + c + m) / screening time; the issue's target is under 10 %. Also
prints the screening throughput at which the ratio would reach 10 %, so a GPU
measurement from ``benchmarks/screen.py`` can be compared. Evidence chips read
imagery and are timed separately (chips per second on a tiled GeoTIFF). Asserts nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from affine import Affine
from scipy.ndimage import gaussian_filter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import peak_rss_mib, print_table

from geoscreen.imagery.scene import Scene, open_scene
from geoscreen.imagery.tiling import TileGrid
from geoscreen.profiles import Profile, load_profile
from geoscreen.samples import make_synthetic_scene, sample_path
from geoscreen.sites.coverage import coverage_of
from geoscreen.sites.evidence import write_evidence
from geoscreen.sites.extract import extract_sites
from geoscreen.sites.match import MatchRule, update_sites
from geoscreen.vision.backbones import build_backbone, input_stats
from geoscreen.vision.classifier import TileClassifier
from geoscreen.vision.infer import ScreenOptions, screen_scene
from geoscreen.vision.inputs import backbone_spec
from geoscreen.vision.scoremap import ScoreMap

ROOT = Path(__file__).resolve().parents[1]
FLAGGED_SHARE = 0.05
SMOOTHING = 0.5  # tiles: about 34,000 sites from 50,000 flagged tiles


def screening_rate(profile: Profile, scene: Scene, device: str) -> tuple[int, float]:
    """(tiles, tiles per second) of end-to-end screening, after a warm-up pass."""
    spec = backbone_spec(profile, scene)
    mean, std = input_stats(spec)
    model = TileClassifier(build_backbone(spec), mean, std)
    opts = ScreenOptions(batch_size=32, device=device, num_workers=1)
    warm = dataclasses.replace(scene, width=min(scene.width, 160), height=min(scene.height, 160))
    screen_scene(model, profile, warm, opts)
    start = time.perf_counter()
    result = screen_scene(model, profile, scene, opts)
    return len(result.grid), len(result.grid) / (time.perf_counter() - start)


def big_scene(base: Scene, profile: Profile, tiles: int) -> Scene:
    """A description of a scene with ``tiles`` tiles on the profile's grid (no pixels)."""
    side = math.isqrt(tiles)
    size = profile.tiling.tile_size
    stride = size - profile.tiling.overlap
    px = (side - 1) * stride + size
    transform = Affine(0.1, 0.0, 400_000.0, 0.0, -0.1, 3_290_000.0)
    return dataclasses.replace(base, width=px, height=px, transform=transform, id="bench")


def field_scores(shape: tuple[int, int], seed: int, base: np.ndarray | None = None) -> np.ndarray:
    """Scores in [0, 1] from a smoothed random field; about FLAGGED_SHARE of them >= 0.5."""
    rng = np.random.default_rng(seed)
    field = gaussian_filter(rng.standard_normal(shape), sigma=SMOOTHING)
    field = (field - field.mean()) / field.std()
    if base is not None:
        field = 0.9 * base + 0.45 * field  # the same places, seen again with some change
    cut = np.quantile(field, 1 - FLAGGED_SHARE)
    return (1 / (1 + np.exp(-4 * (field - cut)))).astype(np.float32)


def score_map(scene: Scene, profile: Profile, scores: np.ndarray, run: str) -> ScoreMap:
    grid = TileGrid(scene, profile.tiling.tile_size, profile.tiling.overlap)
    valid = np.ones(len(grid), dtype=np.float32)
    meta = {"profile": profile.name, "run_id": run}
    return ScoreMap(grid, scores.reshape(-1), valid, None, meta)


def existing_sites(
    scene: Scene, profile: Profile, field: np.ndarray, count: int, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``count`` sites of an earlier run (the same blobs, plus scattered single tiles)."""
    earlier = score_map(scene, profile, field, "earlier")
    before = pd.Timestamp("2023-01-01", tz="UTC").to_pydatetime()
    sites = extract_sites(earlier, profile, acquired=before)
    rng = np.random.default_rng(seed)
    scattered = np.zeros(field.size, dtype=np.float32)
    spare = max(0, count - len(sites))
    scattered[rng.choice(field.size, size=spare * 2, replace=False)] = 0.9
    extra = extract_sites(score_map(scene, profile, scattered.reshape(field.shape), "scattered"),
                          profile, acquired=before)  # fmt: skip
    both = pd.concat([sites, extra.iloc[:spare]], ignore_index=True).iloc[:count]
    coverage = coverage_of(earlier, run_id="earlier", profile=profile.name, acquired=before)
    return both, coverage


def chip_rate(profile: Profile, folder: Path) -> tuple[int, float]:
    """(chips, chips per second) for 200 scattered sites on a 4,096^2 tiled GeoTIFF."""
    path = make_synthetic_scene(folder / "chips.tif", 4096, 4096, resolution=0.1,
                                crs="EPSG:32617", origin=(400_000.0, 3_290_000.0))  # fmt: skip
    scene = open_scene(path, sensor="rgb")
    grid = TileGrid(scene, profile.tiling.tile_size, profile.tiling.overlap)
    scores = np.zeros(len(grid), dtype=np.float32)
    scores[:: len(grid) // 200] = 0.9
    sites = extract_sites(ScoreMap(grid, scores, np.ones_like(scores)), profile)
    start = time.perf_counter()
    write_evidence(sites, scene, folder / "chips")
    return len(sites), len(sites) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiles", type=int, default=1_000_000)
    parser.add_argument("--existing", type=int, default=50_000)
    parser.add_argument("--device", default="auto", help="device for the screening throughput")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="screen OSBS (81 tiles) only")
    args = parser.parse_args()
    logging.getLogger("geoscreen").setLevel(logging.ERROR)  # YELL has no georeference: known

    profile = load_profile(ROOT / "geoscreen" / "configs" / "tree_crowns_neon.yaml")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    sample = "neon_osbs" if args.quick else "neon_yell"
    screened, tiles_per_s = screening_rate(
        profile, open_scene(sample_path(sample), sensor="rgb"), args.device
    )

    base = open_scene(sample_path("neon_osbs"), sensor="rgb")
    scene = big_scene(base, profile, args.tiles)
    grid = TileGrid(scene, profile.tiling.tile_size, profile.tiling.overlap)
    shape = (grid.n_rows, grid.n_cols)
    earlier_field = field_scores(shape, args.seed)
    history, coverage = existing_sites(scene, profile, earlier_field, args.existing, args.seed)
    now_field = field_scores(shape, args.seed + 1, base=earlier_field)
    scores = score_map(scene, profile, now_field, "now")
    flagged = int((scores.scores >= profile.threshold).sum())

    start = time.perf_counter()
    sites = extract_sites(scores, profile, acquired=pd.Timestamp("2024-01-01", tz="UTC"))
    t_extract = time.perf_counter() - start
    start = time.perf_counter()
    footprint = coverage_of(scores, run_id="now", profile=profile.name, acquired=None)
    t_cover = time.perf_counter() - start
    start = time.perf_counter()
    update = update_sites(history, sites, MatchRule("iou", min_iou=0.2), coverage)
    t_match = time.perf_counter() - start
    total = t_extract + t_cover + t_match
    screen_s = len(grid) / tiles_per_s
    with tempfile.TemporaryDirectory() as tmp:
        chips, chips_per_s = chip_rate(profile, Path(tmp))

    print(f"python {platform.python_version()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {args.device}")  # fmt: skip
    print(f"score map: {len(grid):,} tiles ({shape[0]} x {shape[1]}), {flagged:,} flagged; "
          f"existing sites: {len(history):,}; footprint parts: "
          f"{len(getattr(footprint.geometry.iloc[0], 'geoms', [0])):,}")  # fmt: skip
    print_table(
        ["step", "seconds", "result"],
        [
            ["extract_sites", round(t_extract, 2), f"{len(sites):,} sites"],
            ["coverage_of", round(t_cover, 2), "1 footprint"],
            ["update_sites (match + new_since)", round(t_match, 2),
             f"{len(update.reseen):,} seen again, {len(update.added):,} new, "
             f"{int(update.sites['new_since'].notna().sum()):,} new_since"],
            ["total", round(total, 2), ""],
        ],
    )  # fmt: skip
    print(f"screening: {tiles_per_s:,.1f} tiles/s measured on {screened} {sample} tiles -> "
          f"{screen_s:,.0f} s for {len(grid):,} tiles")  # fmt: skip
    print(f"ratio (extract + coverage + match) / screening = {total / screen_s:.4%} "
          f"(target < 10%)")  # fmt: skip
    print(f"the ratio would reach 10% at a screening throughput of "
          f"{len(grid) / (10 * total):,.0f} tiles/s")  # fmt: skip
    print(f"evidence chips: {chips_per_s:,.1f} chips/s ({chips} chips, not in the ratio)")
    print(f"peak RSS {peak_rss_mib():,.0f} MiB")


if __name__ == "__main__":
    main()
