"""Which simple cue marks the crowns at each NEON site, and does a training site's cue
transfer? A diagnosis of the detector's cross-site misses.

Usage::

    python benchmarks/detect_cues.py [--sites osbs yell ...] [--cases osbs->yell ...]

A *cue* is one map of the scene as the detector sees it (each scene stretched by its own
2-98% percentiles, the profile's preprocessing): a band, the mean of the bands, or the
normalised difference of two bands, each with both signs. Crowns are found in a cue as
scale-space blobs (:mod:`geoscreen.vision.blobs`, the *scale-space blobs* baseline of
every detector card), which fits three things on labels: the cue, the size range and
the box width.

Three tables, AP at IoU 0.4:

- per site, the blobs fitted on the site's own labels (hindsight): every cue's AP there;
- per case, the blobs fitted on the training sites' labels, scored on the test site
  (AP, and F1 at the best threshold in hindsight), next to the blobs fitted on the test
  site's own labels;
- per case, the blobs fitted on the training sites (size range and box width) with the
  cue swapped for each other one, on the test site: whether it is the cue or the sizes
  that fail to carry over (the three best cues).

Asserts nothing; prints tables (README, "Why the detector misses"; docs/detector.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table
from detect import CASES, PROFILE, neon_data

from geoscreen.profiles import load_profile
from geoscreen.vision.blobs import ScaleSpaceBlobs
from geoscreen.vision.detect_data import SceneView
from geoscreen.vision.detect_metrics import best_threshold, detection_metrics

IOU = 0.4


def scored(blobs: ScaleSpaceBlobs, views: Sequence[SceneView]) -> tuple[float, float]:
    """AP and the best F1 (over the card thresholds) of fitted blobs on ``views``."""
    found = [blobs.predict(v) for v in views]
    truths = [v.boxes for v in views]
    ap = detection_metrics(found, truths, IOU, 1.0)["average_precision"]
    return float(ap), best_threshold(found, truths, IOU)[1]


def every_cue(blobs: ScaleSpaceBlobs, views: Sequence[SceneView]) -> list[tuple[str, float]]:
    """(cue, AP) on ``views`` of fitted blobs with their cue swapped for each one, best
    first (blob strength ranks: the calibration was fitted for the chosen cue only)."""
    aps = {}
    for name in blobs.cue_ap:
        found = [blobs.found(v, name) for v in views]
        aps[name] = float(detection_metrics(found, [v.boxes for v in views], IOU, np.inf)[
            "average_precision"])  # fmt: skip
    return sorted(aps.items(), key=lambda kv: -kv[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sites", nargs="*", default=["osbs", "yell", "yell2", "soap"])
    parser.add_argument("--cases", nargs="*", default=["osbs->yell", "yell->osbs"],
                        choices=list(CASES))  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(1)
    profile = load_profile(PROFILE)
    views = {
        s: neon_data(profile, [s]).views
        for s in {*args.sites, *(n for c in args.cases for part in CASES[c] for n in part)}
    }
    fits: dict[tuple[str, ...], ScaleSpaceBlobs] = {}

    def fitted(sites: Sequence[str]) -> ScaleSpaceBlobs:
        if tuple(sites) not in fits:
            chosen = [v for s in sites for v in views[s]]
            fits[tuple(sites)] = ScaleSpaceBlobs(bands=profile.imagery.bands, iou=IOU).fit(chosen)
        return fits[tuple(sites)]

    if args.sites:
        columns = {s: fitted([s]) for s in args.sites}
        names = sorted(columns[args.sites[0]].cue_ap,
                       key=lambda n: -max(c.cue_ap[n] for c in columns.values()))  # fmt: skip
        print(f"\nAP at IoU {IOU} of each cue's blobs on each site's own labels (hindsight):")
        print_table(["cue", *args.sites],
                    [[n, *(f"{columns[s].cue_ap[n]:.3f}" for s in args.sites)] for n in names]
                    + [["(chosen: cue, width k)",
                        *(f"{c.cue}, {c.width:g}" for c in columns.values())]])  # fmt: skip
    rows, swapped = [], []
    for case in args.cases:
        train, test = CASES[case]
        start = time.perf_counter()
        blobs = fitted(train)
        seconds = time.perf_counter() - start
        test_views = [v for s in test for v in views[s]]
        ap, f1 = scored(blobs, test_views)
        own = fitted(test)
        own_ap, own_f1 = scored(own, test_views)
        rows.append([case, f"{blobs.cue}, {blobs.width:g}", f"{blobs.fit_ap:.3f}", f"{ap:.3f}",
                     f"{f1:.3f}", f"{own.cue}, {own.width:g}", f"{own_ap:.3f}", f"{own_f1:.3f}",
                     round(seconds)])  # fmt: skip
        swapped.append([case, *(f"{name} {cue_ap:.3f}"
                                for name, cue_ap in every_cue(blobs, test_views)[:3])])  # fmt: skip
    if rows:
        print(f"\nBlobs fitted on the training sites, scored on the test site (IoU {IOU}):")
        print_table(["case", "cue, k (training labels)", "training AP", "test AP",
                     "test F1 (hindsight thr)", "cue, k (test's own labels)", "its AP",
                     "its F1", "fit s"], rows)  # fmt: skip
        print(
            "\nThe same blobs (the training sites' size range and k), every cue, AP on the "
            "test site:"
        )
        print_table(["case", "best cue", "second", "third"], swapped)


if __name__ == "__main__":
    main()
