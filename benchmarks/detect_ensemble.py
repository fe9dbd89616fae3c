"""Cross-site quality of detectors fused: the boxes of several trained models merged.

Usage::

    python benchmarks/detect_ensemble.py --test osbs --members DIR_A DIR_B

``DIR_A``, ``DIR_B``: model folders that ``benchmarks/detect.py --quality --out DIR``
trained (e.g. the default recipe and ``--variant "random colour rotation (half the
chips)"``, same seed and case). Each model screens the ``--test`` NEON scene as
``screen`` does; their sites are fused by weighted box fusion as ``screen`` fuses a
trained pair's objects (:func:`geoscreen.vision.detect_infer.fuse_objects`, IoU 0.55: a box is the
score-weighted mean of the boxes that overlap it, its score the members' mean, so a box
that one member of two finds keeps half its score). The fused boxes are scored at the
mean of the members' card thresholds (no held-out strips of the fused model exist to
choose one: a first measure of what an ensemble would give, not a trained ensemble).
Rows: each member, then the fusion; F1, precision and recall at IoU 0.4, AP, and the
hindsight F1 (the test's own best threshold). Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table
from detect import NEON, detected, hindsight_f1, neon_file

from geoscreen.evaluate.metrics import Criterion, evaluate_sites
from geoscreen.profiles import load_profile
from geoscreen.vision.detect_infer import Objects, fuse_objects
from geoscreen.vision.detector import FUSION_IOU, load_detector

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "geoscreen" / "configs" / "tree_crowns_detect_neon.yaml"


def fused(members: list[gpd.GeoDataFrame]) -> gpd.GeoDataFrame:
    """The members' sites fused as ``screen`` fuses a pair's objects (:func:`fuse_objects`)."""
    objects = [
        Objects(
            np.array([g.bounds for g in m.geometry]).reshape(-1, 4),
            m["score_max"].to_numpy(np.float64),
            m["score_mean"].to_numpy(np.float64),
            m["tile_count"].to_numpy(np.int64),
        )
        for m in members
    ]
    out = fuse_objects(objects, FUSION_IOU)
    return gpd.GeoDataFrame(
        {"score_max": out.score_max, "score_mean": out.score_mean},
        geometry=[shapely.box(*b) for b in out.boxes],
        crs=members[0].crs,
    )


def row(name: str, sites: gpd.GeoDataFrame, truth: gpd.GeoDataFrame, threshold: float
        ) -> list[object]:  # fmt: skip
    m = evaluate_sites(sites, truth, Criterion(iou=0.4), score_threshold=threshold,
                       n_boot=0).metrics  # fmt: skip
    best, at = hindsight_f1([(sites, truth)], 0.4)
    keys = ("precision", "recall", "f1", "average_precision")
    return [name, f"{threshold:g}", *(f"{m[k]:.3f}" for k in keys), f"{best:.3f} ({at:g})"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test", required=True, choices=sorted(NEON))
    parser.add_argument("--members", nargs="+", required=True, type=Path)
    args = parser.parse_args()
    profile = load_profile(PROFILE)
    image, labels = neon_file(NEON[args.test][0]), neon_file(NEON[args.test][1])
    sites, thresholds, rows = [], [], []
    truth = None
    for folder in args.members:
        loaded = load_detector(folder)
        assert loaded.card.threshold is not None
        found, truth = detected(loaded, profile, image, labels)
        sites.append(found)
        thresholds.append(float(loaded.card.threshold))
        rows.append(row(str(folder), found, truth, thresholds[-1]))
    assert truth is not None
    rows.append(row("fused", fused(sites), truth, float(np.mean(thresholds))))
    print(f"\ndetected on {args.test.upper()}, IoU 0.4:")
    print_table(["model", "thr", "P", "R", "F1", "AP", "hindsight F1 (thr)"], rows)


if __name__ == "__main__":
    main()
