"""Detection on the test scene as it is and with its colours matched to the training scene's.

Usage::

    python benchmarks/detect_colour_match.py --model-dir DIR [DIR ...] --train osbs --test yell

Trained detector folders (``benchmarks/detect.py --quality --out DIR``) detect on the
test scene three ways: as it is; after mapping each band's histogram onto the training
scene's (257 quantiles, ``hist``); after matching each band's mean and spread
(``meanstd``). No retraining: this asks whether a colour shift between sites is what
the detector misses. F1 at the card's threshold, AP and the best F1 in hindsight, IoU
0.4, fp32. Measured, not shipped (docs/detector.md). Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table
from detect import NEON, PROFILE, detected, hindsight_f1

from geoscreen.evaluate.metrics import Criterion, evaluate_sites
from geoscreen.profiles import load_profile
from geoscreen.samples import sample_path
from geoscreen.vision.detector import load_detector

HOW = ("as is", "hist", "meanstd")


def read(name: str) -> tuple[np.ndarray, dict]:
    with rasterio.open(sample_path(NEON[name][0])) as src:
        return src.read(), dict(src.profile)


def matched(test: np.ndarray, train: np.ndarray, how: str) -> np.ndarray:
    """``test`` with each band's values mapped onto ``train``'s distribution (uint8)."""
    out = np.empty_like(test)
    q = np.linspace(0, 100, 257)
    for b in range(test.shape[0]):
        x, y = test[b].astype(np.float64), train[b].astype(np.float64)
        if how == "hist":
            mapped = np.interp(x, np.percentile(x, q), np.percentile(y, q))
        else:
            mapped = (x - x.mean()) / x.std() * y.std() + y.mean()
        out[b] = np.clip(mapped, 0, 255).round()
    return out


def score(model_dir: Path, image: Path, test: str) -> tuple[float, float, float]:
    """F1 at the card's threshold, AP and hindsight F1 at IoU 0.4, as ``detect.py``."""
    loaded = load_detector(model_dir)
    per_image = [detected(loaded, load_profile(PROFILE), image, sample_path(NEON[test][1]))]
    sites, truth = per_image[0]
    m = evaluate_sites(sites, truth, Criterion(iou=0.4), score_threshold=loaded.card.threshold,
                       n_boot=0).metrics  # fmt: skip
    return float(m["f1"]), float(m["average_precision"]), hindsight_f1(per_image, 0.4)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", type=Path, nargs="+", required=True)
    parser.add_argument("--train", required=True, choices=sorted(NEON))
    parser.add_argument("--test", required=True, choices=sorted(NEON))
    args = parser.parse_args()
    test, meta = read(args.test)
    train, _ = read(args.train)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        images = {"as is": Path(sample_path(NEON[args.test][0]))}
        for how in HOW[1:]:
            # The label file names the image it was drawn on: keep the file name.
            images[how] = Path(tmp) / how / images["as is"].name
            images[how].parent.mkdir()
            with rasterio.open(images[how], "w", **meta) as dst:
                dst.write(matched(test, train, how))
        for folder in args.model_dir:
            for how in HOW:
                f1, ap, best = score(folder, images[how], args.test)
                rows.append(["/".join(folder.parts[-3:]), how, f"{f1:.3f}", f"{ap:.3f}",
                             f"{best:.3f}"])  # fmt: skip
    print_table(["model", "test scene colours", "F1@0.4", "AP@0.4", "hindsight F1"], rows)


if __name__ == "__main__":
    main()
