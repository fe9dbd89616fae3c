"""A detector at a new site, before and after an analyst reviews some of its candidates.

Usage::

    python benchmarks/detect_review.py --model DIR --out OUT [--budget K] [--seed S]
        [--order score|diverse|random] [--scene-balance] [--blobs-only]
    python benchmarks/detect_review.py --model DIR --out OUT --all-labels [--scene-balance]
        [--blobs-only]

``--model``: a crown detector trained on YELL (``python benchmarks/detect.py --quality
--cases "yell->osbs" --out D`` leaves one in ``D/recipe/yell_to_osbs``). OSBS_029 (the
one georeferenced NEON scene, so the one a review store takes) is cut in two. The model
scans the **west half**, as a scene of its own, with the shipped profile at
``--review-threshold`` into a new SQLite store; a simulated analyst reviews the
``--budget`` highest-scored candidates, answering from the ground truth: confirmed where
at least half of the outline lies on one labelled crown, rejected otherwise (the rule of
``tests/batch/test_retrain_detect.py``). ``geoscreen train --from-store`` then trains a
new model (the profile's recipe, a pair) on YELL's labels plus those decisions:
confirmed outlines are boxes, rejected ones background, the rest of the west half
background too. Both models are scored on the **east half**, whose pixels and crowns
the new model never saw: precision, recall and F1 at IoU 0.4 at each card's threshold,
AP, and the best F1 in hindsight. ``--all-labels`` instead trains on YELL plus the west
half with every labelled crown in it (an analyst who outlined them all): what reviews
could reach at most. ``--order``: which candidates the analyst reviews (the queue's
first in that order); ``--scene-balance``: train with as many chips of the west half per
epoch as of YELL (``detection.scene_balance``), not a share in proportion to its area.

Beside the models, the scale-space blobs (the baseline every detector card shows: a
cue, a size range and a box width fitted on labels, no training) are fitted twice and
scored on the east half too: on YELL's labels, as the scanning model's card fits them,
and on the new site's confirmed outlines alone (every west crown with
``--all-labels``): whether a few reviews tell which cue marks the new site's crowns.
``--blobs-only`` scans, reviews and scores the blobs, without retraining. Since session
28 the blobs are also a model a profile can ask for (``detection.architecture: blobs``,
:mod:`geoscreen.vision.blob_detector`): the row "blob model (new site)" is that model,
fitted by ``train --from-store`` on the store alone (``train`` on the west half's labels
with ``--all-labels``) and scored through ``screen``'s tiles at its card's threshold.

This measures the loop an analyst has for a site the labels did not cover; it is not
the cross-site number of issue 13 (the new model has seen the new site).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import sys
import time
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from detect import POSITIVE_CLASSES, detected, hindsight_f1, neon_file

from geoscreen.batch.retrain import train_from_store
from geoscreen.cli.app import main as cli
from geoscreen.errors import InputError
from geoscreen.evaluate.metrics import Criterion, evaluate_sites
from geoscreen.imagery.scene import Scene, open_scene
from geoscreen.labels import load_labels
from geoscreen.profiles import Profile, load_profile
from geoscreen.review.store import open_store
from geoscreen.review.users import add_user
from geoscreen.review.workflow import set_status
from geoscreen.vision.blobs import ScaleSpaceBlobs
from geoscreen.vision.boxes import boxes_to_map
from geoscreen.vision.detect_data import SceneView
from geoscreen.vision.detect_infer import decision_threshold
from geoscreen.vision.detect_metrics import best_threshold, detection_metrics
from geoscreen.vision.detect_scenes import load_detection_data
from geoscreen.vision.detect_train import DetectTrainOptions, train_detector
from geoscreen.vision.detector import load_detector
from geoscreen.vision.modelcard import DetectCard

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "geoscreen" / "configs" / "tree_crowns_detect_neon.yaml"
OSBS, OSBS_LABELS = neon_file("neon_osbs"), neon_file("neon_osbs_labels")
YELL, YELL_LABELS = neon_file("neon_yell"), neon_file("neon_yell_labels")
ON_CROWN = 0.5  # share of a candidate's outline on one labelled crown for "confirmed"


@lru_cache(maxsize=1)
def osbs() -> Scene:
    return open_scene(OSBS)


def crowns() -> gpd.GeoSeries:
    """OSBS's labelled crowns as map boxes in the scene's CRS."""
    scene = osbs()
    return boxes_to_map(load_labels(OSBS_LABELS, scene).boxes_px(), scene, scene.crs)


def east_of_middle(frame: gpd.GeoDataFrame | gpd.GeoSeries) -> np.ndarray:
    """True where the centre lies in the east half of OSBS (the half nobody reviews)."""
    scene = osbs()
    left, _, right, _ = scene.bounds
    x = frame.to_crs(scene.crs).geometry.centroid.x.to_numpy()
    return np.asarray(x >= (left + right) / 2)


def scan_and_review(
    model: Path, work: Path, budget: int, review_threshold: float, order: str, seed: int
) -> tuple[Path, Path, Path | None]:
    """Scan OSBS's west half into a new store, then review ``budget`` candidates, the
    first of the queue in ``order``: the store, the west half's image, and a label file
    of the confirmed outlines (None when nothing was confirmed), for the blobs."""
    data = yaml.safe_load(PROFILE.read_text(encoding="utf-8"))
    data["threshold"] = review_threshold  # the queue the analyst works through
    profile_file = work / "review_profile.yaml"
    profile_file.write_text(yaml.safe_dump(data), encoding="utf-8")
    incoming = work / "incoming"
    incoming.mkdir(parents=True)
    image, _ = west_half(work)  # the east half stays unseen: neither labels nor pixels
    image = Path(shutil.move(image, incoming / image.name))
    db = work / "review.sqlite"
    with contextlib.redirect_stderr(io.StringIO()):
        code = cli(["scan", str(profile_file), str(incoming), "--model", str(model),
                    "--db", str(db), "--work", str(work / "scan")])  # fmt: skip
    assert code == 0, f"scan exited {code}"
    truth = crowns()
    with open_store(db) as store:
        add_user(store, "analyst", "analyst", actor="benchmark")
        found = store.candidates(order="id" if order == "random" else order)
        if order == "random":
            found = [found[i] for i in np.random.default_rng(seed).permutation(len(found))]
        queued, found = len(found), found[:budget]  # the analyst reviews the queue's first
        outlines = gpd.GeoSeries(shapely.from_wkb([c.geom_wkb for c in found]), crs=4326)
        outlines = outlines.to_crs(truth.crs)
        yes = [truth.intersection(o).area.max() / o.area >= ON_CROWN for o in outlines]
        for candidate, ok in zip(found, yes, strict=True):
            set_status(store, candidate.id, "confirmed" if ok else "rejected",
                       user="analyst", reason="ground truth", claim=True)  # fmt: skip
    confirmed = int(np.sum(yes))
    print(f"queue: {queued} candidates in the west half; reviewed {len(found)} "
          f"in {order} order: "
          f"{confirmed} confirmed, {len(found) - confirmed} rejected")  # fmt: skip
    labels = None
    if confirmed:  # the confirmed outlines as a label file (map coordinates)
        labels = work / "confirmed.geojson"
        kept = outlines[np.asarray(yes, bool)].reset_index(drop=True)
        gpd.GeoDataFrame({"label": ["Tree"] * confirmed}, geometry=kept).to_file(labels)
    return db, image, labels


def west_half(work: Path) -> tuple[Path, Path]:
    """OSBS_029's west half as its own GeoTIFF, with every crown whose centre lies there
    (boxes cut at the edge): a scene labelled whole, as an analyst who outlined every
    crown of it would give. (The whole scene with only these labels would teach the east
    half's crowns as background.)"""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(OSBS) as src:
        half = src.width // 2
        window = Window(0, 0, half, src.height)
        meta = {**src.profile, "width": half, "transform": src.window_transform(window)}
        image = work / "OSBS_029_west.tif"
        with rasterio.open(image, "w", **meta) as dst:
            dst.write(src.read(window=window))
    table = pd.read_csv(OSBS_LABELS)
    west = table[(table.xmin + table.xmax) / 2 < half].assign(image_path=image.name)
    west["xmax"] = west["xmax"].clip(upper=half)
    labels = work / "OSBS_029_west.csv"
    west.to_csv(labels, index=False)
    print(f"west half: {len(west)} of {len(table)} labelled crowns")
    return image, labels


def east_scores(model: Path, profile: Profile) -> dict[str, Any]:
    """The model on OSBS's east half: P/R/F1@0.4 at its card's threshold, AP, hindsight F1."""
    loaded = load_detector(model)
    threshold = decision_threshold(profile, loaded.card, False)[0]
    sites, truth = detected(loaded, profile, OSBS, OSBS_LABELS)
    sites, truth = sites[east_of_middle(sites)], truth[east_of_middle(truth)]
    m = evaluate_sites(sites, truth, Criterion(iou=0.4), score_threshold=threshold, n_boot=0)
    best, at = hindsight_f1([(sites, truth)], 0.4)
    return {"threshold": threshold, "truth": len(truth), "precision": m.metrics["precision"],
            "recall": m.metrics["recall"], "f1": m.metrics["f1"],
            "ap": m.metrics["average_precision"], "hindsight_f1": best,
            "hindsight_threshold": at}  # fmt: skip


def east_blob_scores(profile: Profile, labels: Sequence[Path], imagery: Sequence[Path],
                     whole: SceneView) -> dict[str, Any]:  # fmt: skip
    """Scale-space blobs (the detector card's baseline) fitted on ``labels`` over
    ``imagery``, scored on OSBS's east half (``whole``: OSBS as training reads it): AP
    and the best F1 in hindsight at IoU 0.4.

    Only those two: the blobs' calibrated scores carry no threshold fitted for the east
    half (fitted on reviews, the crowns nobody reviewed counted as misses)."""
    views = load_detection_data(profile, list(labels), list(imagery), list(POSITIVE_CLASSES)).views
    blobs = ScaleSpaceBlobs(bands=profile.imagery.bands, iou=0.4).fit(views)
    boxes, scores = blobs.predict(whole)
    middle = whole.image.shape[2] / 2
    east = (boxes[:, 0] + boxes[:, 2]) / 2 >= middle
    truth = whole.boxes[(whole.boxes[:, 0] + whole.boxes[:, 2]) / 2 >= middle]
    found = [(boxes[east], scores[east])]
    ap = detection_metrics(found, [truth], 0.4, np.inf)["average_precision"]
    at, best = best_threshold(found, [truth], 0.4)
    return {"cue": blobs.cue, "truth": len(truth), "ap": float(ap), "hindsight_f1": best,
            "hindsight_threshold": at}  # fmt: skip


def as_blobs(profile: Profile) -> Profile:
    """``profile`` with scale-space blobs as its model (``detection.architecture: blobs``)."""
    assert profile.detection is not None
    detection = profile.detection.model_copy(
        update={"architecture": "blobs", "paired_colour_rotation": 0.0}
    )
    return profile.model_copy(update={"detection": detection})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, type=Path, help="a detector trained on YELL")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--budget", type=int, default=20, help="candidates reviewed")
    parser.add_argument("--review-threshold", type=float, default=0.15,
                        help="the scan's threshold: the queue the analyst reviews")  # fmt: skip
    parser.add_argument("--all-labels", action="store_true",
                        help="train on every west crown's label instead of reviews")  # fmt: skip
    parser.add_argument("--order", choices=("score", "diverse", "random"), default="score",
                        help="which candidates the analyst reviews: the queue's first in "
                        "this order (score: highest first, the review list's default; "
                        "diverse: the review store's order, spread over place, size and "
                        "score, least sure first)")  # fmt: skip
    parser.add_argument("--scene-balance", action="store_true",
                        help="as many training chips of each scene as of the largest "
                        "(the profile's detection.scene_balance; off by default)")  # fmt: skip
    parser.add_argument("--blobs-only", action="store_true",
                        help="scan and review, then score the scale-space blobs fitted on the "
                        "reviews (or labels); no retraining (seconds)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    profile = load_profile(PROFILE)
    order = "" if args.order == "score" else f"_{args.order}"
    name = "all_west_labels" if args.all_labels else f"review_{args.budget}{order}"
    balance = True if args.scene_balance else None  # None: the profile's (off)
    name += "_balanced" if args.scene_balance else ""
    work = args.out / f"{name}_seed{args.seed}"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    opts = DetectTrainOptions(device="cpu", seed=args.seed, scene_balance=balance,
                              positive_classes=list(POSITIVE_CLASSES))  # fmt: skip
    started = time.perf_counter()
    if args.all_labels:
        image, labels = west_half(work)
        if not args.blobs_only:
            train_detector(profile, [YELL_LABELS, labels], [YELL, image], work / "model", opts)
    else:
        db, image, labels = scan_and_review(
            args.model, work, args.budget, args.review_threshold, args.order, args.seed
        )
        if not args.blobs_only:
            train_from_store(profile, str(db), work / "model", labels=[YELL_LABELS],
                             imagery=[YELL], opts=opts)  # fmt: skip
    seconds = time.perf_counter() - started
    rows = {"YELL only (before)": east_scores(args.model, profile)}
    if not args.blobs_only:
        rows[name] = east_scores(work / "model", profile)
    if labels is not None:  # the blobs as the model: fitted on the new site's labels alone
        blob_profile = as_blobs(profile)
        try:
            with contextlib.redirect_stderr(io.StringIO()):
                if args.all_labels:
                    card = train_detector(blob_profile, [labels], [image], work / "blobs", opts)
                else:
                    card = train_from_store(blob_profile, str(db), work / "blobs", opts=opts)
        except InputError as exc:  # e.g. too few reviews to train on
            print(f"blob model (new site): not trained: {exc.message}")
        else:
            assert isinstance(card, DetectCard) and card.detector.blobs is not None
            rows["blob model (new site)"] = {**east_scores(work / "blobs", blob_profile),
                                             "cue": card.detector.blobs.cue}  # fmt: skip
    for label, r in rows.items():
        print(f"{label:<22} east half ({r['truth']} crowns) at {r['threshold']:.2f}: "
              f"P {r['precision']:.3f} R {r['recall']:.3f} F1@0.4 {r['f1']:.3f}, "
              f"AP {r['ap']:.3f}, hindsight F1 {r['hindsight_f1']:.3f} "
              f"({r['hindsight_threshold']:.2f})")  # fmt: skip
    if not args.blobs_only:
        print(f"trained in {seconds:.0f} s")
    # The card's blob baseline, fitted where the model's labels are, and the same fitted
    # on the new site's confirmed outlines alone (no training: a cue and a size range).
    whole = load_detection_data(profile, [OSBS_LABELS], [OSBS], list(POSITIVE_CLASSES)).views[0]
    blobs = {"blobs fitted on YELL": east_blob_scores(profile, [YELL_LABELS], [YELL], whole)}
    if labels is not None:  # nothing confirmed: nothing to fit on
        new = "labels" if args.all_labels else "reviews"
        blobs[f"blobs fitted on the new site's {new}"] = east_blob_scores(
            profile, [labels], [image], whole
        )
    for label, r in blobs.items():
        print(f"{label:<40} east half ({r['truth']} crowns), cue {r['cue']}: AP {r['ap']:.3f}, "
              f"hindsight F1 {r['hindsight_f1']:.3f} ({r['hindsight_threshold']:.2f})")  # fmt: skip
    result = {"seed": args.seed, "budget": args.budget, "seconds": seconds, "rows": rows,
              "blobs": blobs}  # fmt: skip
    (work / "result.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
