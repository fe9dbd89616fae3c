"""Random background chips as negatives, when the labels already sample what does not match.

    python benchmarks/background.py [--seeds 0,1,2] [--settings auto,4]

Real data only: the bundled Sentinel-2 L1C scene (13 bands, 20 m, Brandenburg) and its
866 reference points of water and forest (``geoscreen/configs/open_water_s2.yaml``).
The profile is trained on the points of the west half, as ``geoscreen train`` does by
default, with each background setting (``auto``: none here, since the labels give
more negatives than positives; a number: that many random chips per positive, 4 being
the old default), and screens the whole scene. Printed per seed and setting:

- the learner chosen and its out-of-fold AP (with the background chips among the
  negatives when there are any: a different question from the next two);
- AP at the east half's labelled points, read from the score raster as an analyst
  would (``scores.tif``, as the profile's ``tiling.raster`` says), against the
  per-pixel logistic regression on the raw band values at the same points (the
  "five-line baseline");
- how the whole scene's tiles rank against an NDWI water map (green against
  near-infrared, NDWI > 0; a tile is water when over half its pixels are): AP, and
  precision and recall at the profile's threshold. NDWI is not ground truth, but it
  is independent of the labels and agrees with them at the reference points (printed):
  it shows what the points alone cannot, whether the lakes nobody labelled are found.
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
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parent))

from geoscreen.imagery.scene import open_scene
from geoscreen.profiles import load_profile
from geoscreen.ranking import average_precision
from geoscreen.samples import sentinel2_water_forest
from geoscreen.vision.classifier import load_model
from geoscreen.vision.infer import ScreenOptions, screen_scene
from geoscreen.vision.train import TrainOptions, train_classifier

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "geoscreen" / "configs" / "open_water_s2.yaml"
GREEN, NIR = 2, 7  # B03, B08 of the 13-band stack


def ndwi_water(image: np.ndarray) -> np.ndarray:
    green, nir = image[GREEN].astype(np.float64), image[NIR].astype(np.float64)
    return (green - nir) / np.maximum(green + nir, 1e-9) > 0.0


def sample_at(
    raster: np.ndarray, transform: rasterio.Affine, points: gpd.GeoDataFrame
) -> np.ndarray:
    cols, rows = ~transform * (points.geometry.x.to_numpy(), points.geometry.y.to_numpy())
    return raster[np.floor(rows).astype(int), np.floor(cols).astype(int)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--settings", default="auto,4")
    args = parser.parse_args()
    sample = sentinel2_water_forest()
    profile = load_profile(PROFILE)
    points = gpd.read_file(sample.points)
    with rasterio.open(sample.image) as src:
        image, transform, crs = src.read(), src.transform, src.crs
    points = points.to_crs(crs)
    middle = float(np.median(points.geometry.x))
    west, east = points[points.geometry.x < middle], points[points.geometry.x >= middle]
    is_water = east["label"].to_numpy() == "water"
    water = ndwi_water(image)
    agree = sample_at(water, transform, points) == (points["label"].to_numpy() == "water")
    print(f"NDWI > 0 agrees with the reference label at {agree.mean():.1%} of the 866 points; "
          f"{water.mean():.1%} of the scene's pixels")  # fmt: skip
    pixels = lambda frame: sample_at(np.moveaxis(image, 0, -1), transform, frame)  # noqa: E731
    baseline = LogisticRegression(max_iter=5000).fit(pixels(west), west["label"] == "water")
    base_ap = average_precision(baseline.decision_function(pixels(east)), is_water)
    print(f"per-pixel logistic regression on the raw bands, east points: AP {base_ap:.3f} "
          f"(positive rate {is_water.mean():.3f})\n")  # fmt: skip
    scene = open_scene(sample.image)
    header = ("seed", "background", "random chips", "chips", "chosen", "OOF AP", "east points AP",
              "scene vs NDWI: AP", "P@thr", "R@thr", "tiles >= thr", "train s")  # fmt: skip
    print("  ".join(header))
    with tempfile.TemporaryDirectory() as tmp:
        labels = Path(tmp) / "west.geojson"
        west.to_file(labels)
        for seed in (int(s) for s in args.seeds.split(",")):
            for setting in args.settings.split(","):
                per_positive = None if setting == "auto" else float(setting)
                out = Path(tmp) / f"m_{seed}_{setting}"
                started = time.perf_counter()
                card = train_classifier(profile, [labels], [sample.image], out, TrainOptions(
                    device="cpu", seed=seed, background_per_positive=per_positive))  # fmt: skip
                seconds = time.perf_counter() - started
                result = screen_scene(load_model(out).model.eval(), profile, scene,
                                      ScreenOptions(num_workers=0, device="cpu"))  # fmt: skip
                raster, cell_transform, _ = result.raster(profile.tiling.raster)
                at_points = sample_at(raster, cell_transform, east)
                grid, scores = result.grid, result.scores.astype(np.float64)
                stride, size = grid.stride, grid.tile_size
                truth = np.array([water[r * stride : r * stride + size,
                                        c * stride : c * stride + size].mean() > 0.5
                                  for r, c in zip(grid.rows, grid.cols, strict=True)])  # fmt: skip
                flagged = scores >= profile.threshold
                precision = truth[flagged].mean() if flagged.any() else float("nan")
                assert card.selection is not None and card.data.background_chips is not None
                chips = sum(card.split.test_chips_per_fold or []) if card.split else 0
                oof = card.metrics["val_average_precision"]
                row = (seed, setting, card.data.background_chips, chips,
                       card.selection.chosen, f"{oof:.3f}",
                       f"{average_precision(at_points, is_water):.3f}",
                       f"{average_precision(scores, truth):.3f}", f"{precision:.2f}",
                       f"{flagged[truth].mean():.2f}", f"{flagged.mean():.3f}",
                       f"{seconds:.0f}")  # fmt: skip
                print("  ".join(str(v) for v in row), flush=True)
    print(f"\n(NDWI water tiles: {truth.mean():.3f} of {truth.size}; threshold "
          f"{profile.threshold})")  # fmt: skip


if __name__ == "__main__":
    main()
