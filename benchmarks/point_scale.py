"""What the score raster says about single pixels: tile scores against a per-pixel model.

    python benchmarks/point_scale.py [--overlaps 0,4,15] [--learners auto,spectral_lr,spectral_gbm]

Real data only: the bundled Sentinel-2 scene and its reference points (as
``background.py``). The water profile (16 px tiles) is trained on the west half's
points with each tile overlap asked (0: none, a stride of 16 px; 4: the profile's,
12 px; 15: 1 px) and each learner asked (``auto``: the one cross-validation chooses; a
name: that one, as ``train --learner`` keeps it), and screens the scene. At random
pixels of the east half, both score rasters (``tiling.raster``: ``footprint``, tiles
averaged over their footprints; ``centre``, each tile's score at its centre pixel,
interpolated between centres) are ranked against an NDWI water map (NDWI > 0 at that
pixel), over all the pixels and over those within 3 px of a shore, next to a per-pixel
logistic regression on the raw bands fitted on the same west points and read at the
pixel itself. Land cover labelled by points at 10-30 m (the issue's "developed land")
asks this of the raster. Prints AP, the number of tiles and the screening time.

``--neon``: the same two rasters for objects, the tree-crown profile trained on OSBS
(61 crowns) and YELL screened at the profile's tiling: AP at random YELL pixels of
whether each lies inside a labelled crown box.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
from scipy import ndimage
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parent))
from background import ndwi_water, sample_at

from geoscreen.imagery.scene import open_scene
from geoscreen.labels import load_labels
from geoscreen.profiles import Profile, load_profile
from geoscreen.ranking import average_precision
from geoscreen.samples import sample_path, sentinel2_water_forest
from geoscreen.vision.classifier import load_model
from geoscreen.vision.infer import ScreenOptions, screen_scene
from geoscreen.vision.train import TrainOptions, train_classifier

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "geoscreen" / "configs" / "open_water_s2.yaml"
SHORE_PX = 3


def with_overlap(profile: Profile, overlap: int) -> Profile:
    tiling = profile.tiling.model_copy(update={"overlap": overlap})
    return profile.model_copy(update={"tiling": tiling})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--overlaps", default="0,4,15")
    parser.add_argument("--learners", default="auto,spectral_lr,spectral_gbm")
    parser.add_argument("--points", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--neon", action="store_true", help="crowns on YELL instead")
    args = parser.parse_args()
    if args.neon:
        neon_crowns(args)
        return
    sample = sentinel2_water_forest()
    points = gpd.read_file(sample.points)
    with rasterio.open(sample.image) as src:
        image, transform, crs = src.read(), src.transform, src.crs
    points = points.to_crs(crs)
    west = points[points.geometry.x < float(np.median(points.geometry.x))]
    water = ndwi_water(image)
    shore = ndimage.binary_dilation(water, iterations=SHORE_PX) & ndimage.binary_dilation(
        ~water, iterations=SHORE_PX
    )
    rng = np.random.default_rng(args.seed)
    height, width = water.shape
    rows = rng.integers(0, height, args.points)
    cols = rng.integers(width // 2, width, args.points)
    truth, near_shore = water[rows, cols], shore[rows, cols]
    print(f"{args.points} random pixels of the east half: {truth.mean():.1%} water by NDWI; "
          f"{near_shore.mean():.1%} within {SHORE_PX} px of a shore "
          f"({truth[near_shore].mean():.1%} water there)")  # fmt: skip
    bands = sample_at(np.moveaxis(image, 0, -1), transform, west)
    pixel = LogisticRegression(max_iter=5000).fit(bands, west["label"] == "water")
    at_pixel = pixel.decision_function(image[:, rows, cols].T.astype(np.float64))
    ap_all = average_precision(at_pixel, truth)
    ap_shore = average_precision(at_pixel[near_shore], truth[near_shore])
    print(f"per-pixel logistic regression, read at the pixel: AP {ap_all:.3f}, "
          f"near a shore {ap_shore:.3f}\n")  # fmt: skip
    scene = open_scene(sample.image)
    print("overlap  stride  tiles  learner       footprint AP (shore)  centre AP (shore)  screen s")
    with tempfile.TemporaryDirectory() as tmp:
        labels = Path(tmp) / "west.geojson"
        west.to_file(labels)
        for overlap in (int(v) for v in args.overlaps.split(",")):
            for learner in args.learners.split(","):
                profile = with_overlap(load_profile(PROFILE), overlap)
                out = Path(tmp) / f"m{overlap}{learner}"
                named = None if learner == "auto" else learner
                card = train_classifier(profile, [labels], [sample.image], out,
                                        TrainOptions(device="cpu", seed=args.seed,
                                                     learner=named))  # fmt: skip
                started = time.perf_counter()
                result = screen_scene(load_model(out).model.eval(), profile, scene,
                                      ScreenOptions(num_workers=0, device="cpu"))  # fmt: skip
                seconds = time.perf_counter() - started
                chosen = card.selection.chosen if card.selection else "?"
                cells = []
                for mode in ("footprint", "centre"):
                    raster, grid, _ = result.raster(mode)
                    xs, ys = rasterio.transform.xy(transform, rows, cols)
                    r, c = rasterio.transform.rowcol(grid, xs, ys)
                    scores = raster[np.clip(r, 0, raster.shape[0] - 1),
                                    np.clip(c, 0, raster.shape[1] - 1)]  # fmt: skip
                    ok = np.isfinite(scores)
                    shore = ok & near_shore
                    every = average_precision(scores[ok], truth[ok])
                    cells.append(
                        f"{every:.3f} ({average_precision(scores[shore], truth[shore]):.3f})"
                    )
                name = chosen if named else f"auto: {chosen}"
                print(f"{overlap:7d}  {result.grid.stride:6d}  {len(result.grid):6d}  {name:<12}  "
                      f"{cells[0]:>20}  {cells[1]:>17}  {seconds:8.1f}", flush=True)  # fmt: skip


def neon_crowns(args: argparse.Namespace) -> None:
    profile = load_profile(ROOT / "geoscreen" / "configs" / "tree_crowns_neon.yaml")
    scene = open_scene(sample_path("neon_yell"), sensor="rgb")
    inside = np.zeros((scene.height, scene.width), dtype=bool)
    boxes = load_labels(sample_path("neon_yell_labels"), scene).boxes_px()
    for x0, y0, x1, y1 in np.rint(boxes).astype(int):
        inside[y0:y1, x0:x1] = True
    rng = np.random.default_rng(args.seed)
    rows = rng.integers(0, scene.height, args.points)
    cols = rng.integers(0, scene.width, args.points)
    truth = inside[rows, cols]
    print(f"{args.points} random YELL pixels, {truth.mean():.1%} inside a crown box")
    print("learner       footprint AP  centre AP")
    with tempfile.TemporaryDirectory() as tmp:
        for learner in args.learners.split(","):
            out = Path(tmp) / learner
            named = None if learner == "auto" else learner
            opts = TrainOptions(device="cpu", seed=args.seed, learner=named)
            card = train_classifier(profile, [sample_path("neon_osbs_labels")],
                                    [sample_path("neon_osbs")], out, opts)  # fmt: skip
            result = screen_scene(load_model(out).model.eval(), profile, scene,
                                  ScreenOptions(num_workers=0, device="cpu"))  # fmt: skip
            aps = []
            for mode in ("footprint", "centre"):
                raster, _, cell = result.raster(mode)
                scores = raster[np.clip(rows // cell, 0, raster.shape[0] - 1),
                                np.clip(cols // cell, 0, raster.shape[1] - 1)]  # fmt: skip
                aps.append(average_precision(scores, truth))
            chosen = card.selection.chosen if card.selection else "?"
            name = chosen if named else f"auto: {chosen}"
            print(f"{name:<20}  {aps[0]:.3f}  {aps[1]:.3f}", flush=True)


if __name__ == "__main__":
    main()
