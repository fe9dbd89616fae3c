"""Object detection: throughput, training time, and honest cross-site numbers on NEON crowns.

Usage::

    python benchmarks/detect.py [--size 2048] [--workdir DIR] [--model-dir DIR]   # speed
    python benchmarks/detect.py --quality --out DIR [--cases ...] [--variant ROW]
        [--combined] [--threads 1] [--reuse] [--tta] [--pixel-m 0.2]
    python benchmarks/detect.py --ablation-table --out DIR
    python benchmarks/detect.py --baselines [--cases ...]
    python benchmarks/detect.py --curve --threads 1 [--cases ...] [--epochs 24]

Speed (profile ``geoscreen/configs/tree_crowns_detect_neon.yaml``: its detector (FCOS
since issue 13) on EfficientNet-Lite0, and its tiles: 400 px overlapping by 96), tiles per second of

  (m) the detector alone: random (8, 3, 256, 256) batches under ``torch.inference_mode``,
  (e) end-to-end ``detect_scene`` + ``sites.detections.objects_to_sites`` on a synthetic 0.1 m scene
      (grid, empty-tile check, reading, preprocessing, detector, cross-tile merging,
      site table), num_workers 0 and 1,

and e/m per round, median over interleaved rounds (issue target >= 0.9), then the seconds
of the steps after detection (cross-tile merging, site table), timed on the raw
detections of one pass (median of ``--repeats``). The
heads are untrained with every score kept (``score_threshold`` 0, 300 boxes per
tile): the most post-processing a tile can cause; ``--model-dir`` times a trained
detector instead (its profile must be the shipped one). Then seconds per training epoch
on the NEON OSBS chips (128 px) and YELL chips (256 px).

Quality (``--quality``): train on some NEON sites and evaluate on another
(:data:`CASES`): the issue's OSBS_029 (61 crowns) -> YELL crop (279) and the reverse,
then leave one crop out: YELL+YELL2+SOAP -> OSBS, OSBS+SOAP+YELL2 -> YELL, and since
session 31 OSBS+YELL+SOAP -> YELL2 and OSBS+YELL+YELL2 -> SOAP (every crop held out once),
and YELL2 -> YELL (the same site, another crop: what an analyst screening more imagery of
the same kind sees). Per case and IoU 0.4/0.5:
precision/recall/F1 at the card's threshold, pooled over the test images and averaged
per image (one test image per case today, so both agree), AP, the best F1 in hindsight
(the test's own best threshold: tells a calibration failure from a ranking failure),
training wall and CPU time and the load average. ``--combined``: the profile run on
OSBS+YELL (340 crowns) with its held-out strip metrics and wall time. ``--variant``
trains one ablation row (:data:`ABLATION`) into its own folder; ``--ablation-table``
prints the rows already run. Every case also scores the three baselines of
:mod:`geoscreen.vision.detect_baselines` (pixel peaks and scale-space blobs fitted on the
training sites, random boxes at their density) on the test site; ``--baselines`` prints
only those (no training). ``--curve``: the test site's AP after every epoch of a run on
all training labels (:func:`learning_curve`, a diagnosis). ``--pixel-m``: every case on the crops
resampled to another pixel size (:mod:`_resampled`). Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, with_backbone, with_normalization
from _resampled import NATIVE_M, resampled_neon, resampled_profile

from geoscreen.evaluate.metrics import Criterion, align, evaluate_sites
from geoscreen.evaluate.truth import load_truth
from geoscreen.imagery.scene import open_scene
from geoscreen.labels import load_labels
from geoscreen.profiles import Profile, load_profile
from geoscreen.samples import make_synthetic_scene, sample_path
from geoscreen.sites.detections import objects_to_sites
from geoscreen.vision.detect_baselines import baseline_table, random_boxes
from geoscreen.vision.detect_card import record_evaluation
from geoscreen.vision.detect_infer import (
    DetectOptions,
    RawDetections,
    decision_threshold,
    detect_grid,
    detect_scene,
    merge_across_tiles,
)
from geoscreen.vision.detect_metrics import THRESHOLDS
from geoscreen.vision.detect_scenes import DetectionData, detector_config, load_detection_data
from geoscreen.vision.detect_train import (
    DEFAULT_CHIP_PX,
    DetectTrainOptions,
    fitted_config,
    new_model,
    run_training,
    train_detector,
)
from geoscreen.vision.detector import LoadedDetector, build_detector, load_detector
from geoscreen.vision.fold import folded_for_inference
from geoscreen.vision.infer import prepare_scene
from geoscreen.vision.modelcard import BackboneRecord, DetectCard, DetectorRecord, ProfileRecord
from geoscreen.vision.runtime import tune_malloc

CONFIGS = Path(__file__).resolve().parents[1] / "geoscreen" / "configs"
PROFILE = CONFIGS / "tree_crowns_detect_neon.yaml"
BATCH = 8
BASELINES = ("pixel_peaks", "scale_space_blobs", "random_boxes")  # as baseline_table names them
NEON = {
    "osbs": ("neon_osbs", "neon_osbs_labels"),  # OSBS_029, Florida: 61 crowns, 400 px
    "yell": ("neon_yell", "neon_yell_labels"),  # Yellowstone conifers: 279 crowns
    "yell2": ("neon_yell2", "neon_yell2_labels"),  # second YELL crop, open meadow: 574
    "soap": ("neon_soap", "neon_soap_labels"),  # SOAP_061, Sierra Nevada: 37 (Dead/Alive)
}
POSITIVE_CLASSES = ("Tree", "Dead", "Alive")
# The two directions, then leave one site out (YELL2 is another YELL crop, so the
# second one holds out the YELL image, not the YELL site).
CASES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "osbs->yell": (("osbs",), ("yell",)),
    "yell->osbs": (("yell",), ("osbs",)),
    "yell+yell2+soap->osbs": (("yell", "yell2", "soap"), ("osbs",)),
    "osbs+soap+yell2->yell": (("osbs", "soap", "yell2"), ("yell",)),
    "osbs+yell+soap->yell2": (("osbs", "yell", "soap"), ("yell2",)),  # session 31
    "osbs+yell+yell2->soap": (("osbs", "yell", "yell2"), ("soap",)),  # session 31
    "yell2->yell": (("yell2",), ("yell",)),  # the same site, another crop 13 km away
    # the profile's own training set (its --combined run), scored on the two other crops
    "osbs+yell->yell2+soap": (("osbs", "yell"), ("yell2", "soap")),
}
# The rows before session 20 changed one model, the default until then; they keep it.
ONE: dict[str, Any] = {"paired_colour_rotation": 0.0}
ABLATION: dict[str, dict[str, Any]] = {
    # since session 20 the profile's pair: two models, the second colour-rotated, fused
    "recipe (default)": {},
    "one model (the default until session 20)": ONE,
    "fcos": {**ONE, "architecture": "fcos"},
    "retinanet": {**ONE, "architecture": "retinanet"},
    "wider scale jitter (x2)": {**ONE, "scale_jitter": 2.0},
    "stronger colour jitter (x2)": {**ONE, "colour_jitter": 2.0},
    # the profile's detection.colour_rotation (off by default): docs/detector.md, session 15
    "random colour rotation (half the chips)": {**ONE, "colour_rotation": 0.5},
    "random colour rotation (a quarter of the chips)": {**ONE, "colour_rotation": 0.25},
    # session 16: a second model with colour rotation, the two models' boxes fused
    "a pair: default + colour rotation (half the chips), boxes fused": {
        "paired_colour_rotation": 0.5
    },
    # session 17: the second model's colours turned on every chip
    "a pair: default + colour rotation (every chip), boxes fused": {"paired_colour_rotation": 1.0},
    # session 16: a moving average of the weights, validated and kept (off by default)
    "moving average of the weights (decay 0.99)": {**ONE, "weight_average": 0.99},
    "6 frozen blocks": {**ONE, "freeze_blocks": 6},
    "16 frozen blocks (every MBConv block)": {**ONE, "freeze_blocks": 16},
    "wider feature pyramid and heads (128 channels)": {**ONE, "fpn_channels": 128},
    "no copy-paste": {**ONE, "copy_paste": 0},
    "dense copy-paste (up to 12 per chip)": {**ONE, "copy_paste": 12},
    "no scale/colour jitter": {**ONE, "scale_jitter": 1.0, "colour_jitter": 0.0},
    "fixed uint8 range (before session 12)": {**ONE, "normalization": "dtype_range"},
    # The same stages frozen (through the 112/120-channel stage): 15 of 21 blocks.
    "EfficientNet-Lite1 backbone": {**ONE, "backbone": "efficientnet_lite1", "freeze_blocks": 15},
    "EfficientNet-Lite2 backbone": {**ONE, "backbone": "efficientnet_lite2", "freeze_blocks": 15},
    "one anchor size (object_size_m)": {**ONE, "fit_anchors": False},
    "no refit (selection model)": {**ONE, "refit": False},
    # session 26: each scene as many chips per epoch as the largest (off by default)
    "scene balance: every scene as many chips as the largest": {"scene_balance": True},
    "epochs by the held-out strips (best 3-epoch mean, patience 6)": {
        **ONE,
        "epoch_choice": "held_out",
    },
    "12 epochs, constant rate, best single epoch (before)": {
        **ONE,
        "epoch_choice": "held_out",
        "max_epochs": 12,
        "patience": 4,
        "lr_schedule": "constant",
        "smooth_epochs": 1,
    },
}


def untrained(profile: Profile, scene_path: Path) -> LoadedDetector:
    """The profile's detector with ImageNet backbone and random heads, every score kept."""
    torch.manual_seed(0)
    scene = open_scene(scene_path, sensor=profile.imagery.sensor)
    config = replace(detector_config(profile, scene, 0.1), score_threshold=0.0)
    model = build_detector(config).eval()
    card = DetectCard(
        profile=ProfileRecord(name=profile.name, version=profile.version),
        detector=DetectorRecord.model_validate(config.to_card()),
        preprocess=profile.preprocess, tiling=profile.tiling,
        backbone=BackboneRecord(name=config.backbone.name, in_channels=3),
    )  # fmt: skip
    return LoadedDetector(model, card, "untrained", Path("untrained"))


@torch.inference_mode()
def model_only(loaded: LoadedDetector, n_tiles: int, size: int) -> int:
    """``n_tiles`` random tiles through the detector in batches of BATCH (the last partial,
    as in a scene); returns ``n_tiles``."""
    x = torch.rand(BATCH, 3, size, size)
    model = folded_for_inference(loaded.model)  # as detection runs it
    for start in range(0, n_tiles, BATCH):
        model(x[: min(BATCH, n_tiles - start)])
    return n_tiles


def end_to_end(loaded: LoadedDetector, profile: Profile, scene_path: Path, workers: int) -> int:
    scene = open_scene(scene_path, sensor=profile.imagery.sensor)
    opts = DetectOptions(batch_size=BATCH, device="cpu", num_workers=workers)
    objects = detect_scene(loaded, profile, scene, opts)
    objects_to_sites(objects, scene, profile)
    return int(objects.meta["tiles"])


def post_processing(
    loaded: LoadedDetector, profile: Profile, scene_path: Path, repeats: int
) -> dict[str, float]:
    """Median seconds of cross-tile merging and of making the site table, on the raw
    detections of one pass over the scene, as ``detect_scene`` runs them."""
    scene = open_scene(scene_path, sensor=profile.imagery.sensor)
    opts = DetectOptions(batch_size=BATCH, device="cpu", num_workers=0)
    device, grid, preprocessor = prepare_scene(profile, scene, "cpu", None)
    raw: RawDetections = detect_grid(loaded.model, grid, preprocessor, opts, device)
    merge_s, sites_s = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        objects = merge_across_tiles(raw, loaded.model.config.nms_iou)
        merge_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        objects_to_sites(objects, scene, profile)
        sites_s.append(time.perf_counter() - start)
    return {
        "raw": len(raw.scores),
        "objects": len(objects),
        "merge_s": statistics.median(merge_s),
        "sites_s": statistics.median(sites_s),
    }


def timed(fn: Any) -> tuple[int, float]:
    start = time.perf_counter()
    n = fn()
    return n, n / (time.perf_counter() - start)


def speed(args: argparse.Namespace, profile: Profile, workdir: Path) -> dict[str, Any]:
    tune_malloc()
    scene_path = workdir / f"crowns_{args.size}.tif"
    if not scene_path.exists():
        make_synthetic_scene(scene_path, args.size, args.size, crs="EPSG:32617",
                             resolution=0.1, structures=200)  # fmt: skip
    loaded = load_detector(args.model_dir) if args.model_dir else untrained(profile, scene_path)
    grid_tiles = end_to_end(loaded, profile, scene_path, 0)  # warm-up, and the tile count
    size = profile.tiling.tile_size
    names = ("(m) model only", "(e) 0 workers", "(e) 1 worker")
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.repeats):  # interleaved, so load from other processes hits all alike
        for name, fn in zip(names, (
            lambda: model_only(loaded, grid_tiles, size),
            lambda: end_to_end(loaded, profile, scene_path, 0),
            lambda: end_to_end(loaded, profile, scene_path, 1),
        ), strict=True):  # fmt: skip
            n, rate = timed(fn)
            seconds[name].append(n / rate)
    model = seconds[names[0]]
    rows = [
        [name, grid_tiles / statistics.median(v),
         f"{statistics.median(m / e for m, e in zip(model, v, strict=True)):.2f}"]
        for name, v in seconds.items()
    ]  # fmt: skip
    rates = {row[0]: row[1] for row in rows}
    print(f"\nDetection, {grid_tiles} tiles of {size} px, batch {BATCH}, CPU threads "
          f"{torch.get_num_threads()} (medians of {args.repeats} interleaved rounds)")  # fmt: skip
    print_table(["path", "tiles/s", "x model (median of rounds)"], rows)
    post = post_processing(loaded, profile, scene_path, max(args.repeats, 5))
    print(f"after detection: merging {post['raw']:,} raw boxes into {post['objects']:,} objects "
          f"{post['merge_s']:.3f} s, their sites {post['sites_s']:.3f} s (medians)")  # fmt: skip
    epochs = {}
    for name in ("osbs", "yell"):
        epochs[name] = epoch_seconds(profile, name, args.train_epochs)
    print("\nTraining seconds per epoch on the CPU (default recipe, chips of the NEON scenes):")
    print_table(
        ["scene", "chip px", "chips/epoch", "s/epoch (median)"],
        [[k, DEFAULT_CHIP_PX, v["chips"], v["seconds"]] for k, v in epochs.items()],
    )
    return {"tiles": grid_tiles, "tiles_per_s": rates, "post_processing": post, "epochs": epochs}


def epoch_seconds(profile: Profile, name: str, epochs: int) -> dict[str, Any]:
    image, labels = (neon_file(n) for n in NEON[name])
    opts = DetectTrainOptions(device="cpu", chip_size=DEFAULT_CHIP_PX)
    data = load_detection_data(profile, [labels], [image])
    config = fitted_config(detector_config(profile, data.scenes[0], 0.1), data.views, 0.1, True)
    model = new_model(config, opts, torch.device("cpu"))
    history = run_training(model, data.views, opts, torch.device("cpu"), epochs)
    seconds = statistics.median(e["seconds"] for e in history["epochs"])
    return {"chips": int(history["epochs"][0]["chips"]), "seconds": seconds}


# Sample name -> file, for ``--pixel-m`` (the resampled copies); empty: the bundled files.
_RESAMPLED: dict[str, Path] = {}


def neon_file(name: str) -> Path:
    """The NEON sample ``name``: its resampled copy under ``--pixel-m``, else the bundled
    file."""
    return _RESAMPLED.get(name) or sample_path(name)


def site_list(names: Sequence[str]) -> str:
    return "+".join(n.upper() for n in names)


def cross_site(profile: Profile, train: Sequence[str], test: Sequence[str],
               opts: DetectTrainOptions, model_dir: Path, reuse: bool, n_boot: int,
               tta: bool = False) -> list[dict[str, Any]]:  # fmt: skip
    """Train on the ``train`` sites (or reuse the model), detect and score on ``test``.

    Rows per IoU: P/R/F1 at the card's threshold pooled over the test images and
    averaged per image, AP, and the best F1 in hindsight (the test's own optimal
    threshold: a diagnosis of calibration, not a result)."""
    images = [neon_file(NEON[n][0]) for n in train]
    labels = [neon_file(NEON[n][1]) for n in train]
    load_before = os.getloadavg()[0]
    started, cpu = time.perf_counter(), time.process_time()
    if reuse and (model_dir / "model.yaml").is_file():
        card = load_detector(model_dir).card
        train_s = card.training.seconds if card.training else float("nan")
    else:
        card = train_detector(profile, labels, images, model_dir, opts, progress=print)
        train_s = time.perf_counter() - started
    load_after = os.getloadavg()[0]
    training = card.training
    assert training is not None and card.threshold is not None and card.split is not None
    cpu_s = training.cpu_seconds or time.process_time() - cpu
    loaded = load_detector(model_dir)
    threshold = decision_threshold(profile, card, tta)[0]  # what screen applies (--tta too)
    started = time.perf_counter()
    per_image = [detected(loaded, profile, neon_file(NEON[name][0]),
                          neon_file(NEON[name][1]), tta) for name in test]  # fmt: skip
    detect_s = time.perf_counter() - started
    epochs = training.epochs or []
    base = baselines(profile, train, test, opts.seed)
    entries = []
    # boxes near a crown, with the same for the baselines: in a dense scene random boxes
    # touch crowns too, so "found" means something only above them
    found = hindsight_f1(per_image, 0.1)
    found_chance = baselines(profile, train, test, opts.seed, iou=0.1)
    outlines = outline_errors(per_image, threshold)
    outlines_chance = chance_outlines(profile, train, test, opts.seed)
    for iou in (0.4, 0.5):
        crit = Criterion(iou=iou)
        pooled = [evaluate_sites(s, t, crit, score_threshold=threshold, n_boot=n_boot, seed=0)
                  for s, t in per_image]  # fmt: skip
        m = _pooled([ev.metrics for ev in pooled])
        hindsight = hindsight_f1(per_image, iou)
        entries.append({
            "direction": f"{site_list(train)} -> {site_list(test)}" + (" (TTA)" if tta else ""),
            "imagery": ", ".join(Path(neon_file(NEON[n][0])).name for n in test)
            + f" (trained on {site_list(train)})",
            "train_objects": card.split.objects,
            "objects": int(m["truth"]), "detections": int(m["predicted"]),
            "iou": iou, "threshold": threshold,
            "precision": m["precision"], "recall": m["recall"], "f1": m["f1"],
            "f1_per_image": statistics.mean(float(ev.metrics["f1"]) for ev in pooled),
            "average_precision": statistics.mean(
                float(ev.metrics["average_precision"]) for ev in pooled),
            "ap_95ci": pooled[0].intervals.get("average_precision") if len(pooled) == 1
            else None,
            "hindsight_f1": round(hindsight[0], 3), "hindsight_threshold": hindsight[1],
            "found_f1@0.1": round(found[0], 3),
            "pixel_peaks_found_f1@0.1": round(found_chance["pixel_peaks"]["best_f1"], 3),
            "random_boxes_found_f1@0.1": round(found_chance["random_boxes"]["best_f1"], 3),
            "outline_errors": {k: round(v, 3) for k, v in outlines.items()},
            "random_boxes_outline_errors": {k: round(v, 3) for k, v in outlines_chance.items()},
            "train_seconds": round(train_s, 1), "train_cpu_seconds": cpu_s,
            "detect_seconds": round(detect_s, 1),
            "s_per_epoch": round(statistics.median(e["seconds"] for e in epochs), 1),
            "epochs": f"{training.best_epoch}/{training.epochs_run}"
                      f"+{len(training.refit_epochs or [])}",
            "load_avg_1min": round((load_before + load_after) / 2, 1),  # while run
            "val_f1@0.4": card.metrics["val_f1@0.4"],
            "pixel_peaks_ap@0.4": base["pixel_peaks"]["ap"],
            "pixel_peaks_hindsight_f1@0.4": base["pixel_peaks"]["best_f1"],
            "scale_space_blobs_ap@0.4": base["scale_space_blobs"]["ap"],
            "scale_space_blobs_hindsight_f1@0.4": base["scale_space_blobs"]["best_f1"],
            "random_boxes_ap@0.4": base["random_boxes"]["ap"],
        })  # fmt: skip
    if not tta:
        record_evaluation(model_dir, entries, replace=True)
    return entries


def detected(loaded: LoadedDetector, profile: Profile, image: Path, labels: Path,
             tta: bool = False) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:  # fmt: skip
    """The sites ``loaded`` detects on ``image`` (fp32, as ``screen`` by default), and
    the truth of ``labels`` on it."""
    scene = open_scene(image, sensor=profile.imagery.sensor)
    opts = DetectOptions(device="cpu", num_workers=0, tta=tta, precision="fp32")
    objects = detect_scene(loaded, profile, scene, opts)
    sites = objects_to_sites(objects, scene, profile, model_sha256=loaded.sha256)
    # The crowns training counts: every class of POSITIVE_CLASSES the file names (SOAP's
    # Dead and Alive); the truth loader refuses a named class the file lacks.
    named = set(load_labels(labels, scene, positive_classes=list(POSITIVE_CLASSES)).frame["label"])
    crowns = [c for c in POSITIVE_CLASSES if c in named]
    return sites, load_truth(labels, scene, positive_classes=crowns)


def hindsight_f1(per_image: Sequence[tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]], iou: float
                 ) -> tuple[float, float]:  # fmt: skip
    """(F1, threshold): the best pooled F1 at ``iou`` over :data:`THRESHOLDS`, the test's
    own optimum (a diagnosis of calibration, not a result)."""
    crit = Criterion(iou=iou)
    return max(
        (_pooled([evaluate_sites(s, t, crit, score_threshold=th, n_boot=0).metrics
                  for s, t in per_image])["f1"], th)
        for th in THRESHOLDS
    )  # fmt: skip


def outline_errors(per_image: Sequence[tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]],
                   threshold: float) -> dict[str, float]:  # fmt: skip
    """How the boxes kept at ``threshold`` sit on the crowns they touch (IoU >= 0.1 with
    their best truth box): median centre offset across and down, signed and absolute,
    as a share of that crown's width / height, and median size ratio (square root of
    the areas). Tells a shifted or mis-sized outline from a missing one, once set
    against :func:`chance_outlines` (random boxes touch crowns too in a dense scene)."""
    pairs = []
    for sites, truth in per_image:
        kept, truth = align(sites[sites["score_max"] >= threshold], truth)[:2]  # one CRS
        if not (kept.empty or truth.empty):
            pairs.append((kept.geometry.bounds.to_numpy(), truth.geometry.bounds.to_numpy()))
    return _outline_stats(pairs)


def _outline_stats(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """:func:`outline_errors` of (predicted, truth) pixel or map box arrays per image."""
    rows = []
    for p, t in pairs:
        iw = np.clip(np.minimum(p[:, None, 2], t[None, :, 2])
                     - np.maximum(p[:, None, 0], t[None, :, 0]), 0, None)  # fmt: skip
        ih = np.clip(np.minimum(p[:, None, 3], t[None, :, 3])
                     - np.maximum(p[:, None, 1], t[None, :, 1]), 0, None)  # fmt: skip
        area_p, area_t = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) for b in (p, t))
        iou = iw * ih / (area_p[:, None] + area_t[None, :] - iw * ih)
        near = iou.max(axis=1) >= 0.1
        p, best = p[near], t[iou.argmax(axis=1)[near]]
        w, h = best[:, 2] - best[:, 0], best[:, 3] - best[:, 1]
        dx = ((p[:, 0] + p[:, 2]) - (best[:, 0] + best[:, 2])) / 2 / w
        dy = ((p[:, 1] + p[:, 3]) - (best[:, 1] + best[:, 3])) / 2 / h
        size = np.sqrt((p[:, 2] - p[:, 0]) * (p[:, 3] - p[:, 1]) / (w * h))
        rows.append(np.column_stack([dx, dy, size]))
    if not rows:
        return {}
    a = np.concatenate(rows)
    med = np.median(a, axis=0)
    return {"boxes": float(len(a)), "dx": float(med[0]), "dy": float(med[1]),
            "abs_dx": float(np.median(np.abs(a[:, 0]))),
            "abs_dy": float(np.median(np.abs(a[:, 1]))), "size_ratio": float(med[2])}  # fmt: skip


def chance_outlines(profile: Profile, train: Sequence[str], test: Sequence[str], seed: int
                    ) -> dict[str, float]:  # fmt: skip
    """:func:`outline_errors` of random boxes (the training sites' median size and
    density) on ``test``: what "touching a crown" means by chance in that scene."""
    held = neon_data(profile, test).views
    boxes = random_boxes(neon_data(profile, train).views, held, seed)
    return _outline_stats([(b, v.boxes) for (b, _), v in zip(boxes, held, strict=True)])


def neon_data(profile: Profile, names: Sequence[str]) -> DetectionData:
    """The labelled NEON scenes ``names``, read into memory as training reads them."""
    return load_detection_data(profile, [neon_file(NEON[n][1]) for n in names],
                               [neon_file(NEON[n][0]) for n in names],
                               list(POSITIVE_CLASSES))  # fmt: skip


def _baselines_on(train: Sequence[Any], held_out: Sequence[Any], seed: int, iou: float = 0.4
                  ) -> dict[str, dict[str, float]]:  # fmt: skip
    """Pixel peaks (fitted on ``train`` views) and random boxes scored on ``held_out``."""
    empty = [(np.zeros((0, 4)), np.zeros(0)) for _ in held_out]
    table = baseline_table(train, held_out, empty, iou, seed)
    return {k: v for k, v in table.items() if k != "model"}


def baselines(profile: Profile, train: Sequence[str], test: Sequence[str], seed: int = 0,
              iou: float = 0.4) -> dict[str, dict[str, float]]:  # fmt: skip
    """Pixel peaks (fitted on the ``train`` sites) and random boxes scored on ``test``:
    AP and hindsight F1 at ``iou``."""
    return _baselines_on(neon_data(profile, train).views, neon_data(profile, test).views, seed,
                         iou)  # fmt: skip


def learning_curve(profile: Profile, cases: Sequence[str], seed: int, epochs: int) -> None:
    """Diagnosis, not selection: train on every label of the training sites (no held-out
    strip, no early stop) and score the *test* site after each epoch. Tells whether a
    case fails for the epoch count (the curve peaks elsewhere) or for what the model can
    learn from those sites (flat at the baselines' level)."""
    for case in cases:
        train, test = CASES[case]
        data, held = neon_data(profile, train), neon_data(profile, test)
        opts = DetectTrainOptions(device="cpu", seed=seed, patience=epochs,
                                  smooth_epochs=1, chip_size=DEFAULT_CHIP_PX,
                                  positive_classes=list(POSITIVE_CLASSES))  # fmt: skip
        config = fitted_config(detector_config(profile, data.scenes[0], 0.1), data.views, 0.1,
                               opts.fit_anchors)  # fmt: skip
        model = new_model(config, opts, torch.device("cpu"))
        history = run_training(model, data.views, opts, torch.device("cpu"), epochs,
                               val=held.views)  # fmt: skip
        aps = [e["val_ap"] for e in history["epochs"]]
        best = history["best"]
        print(f"\n{site_list(train)} -> {site_list(test)}: AP@0.4 on the test site per epoch "
              f"(seed {seed}); best {max(aps):.3f} at epoch {1 + int(np.argmax(aps))}, "
              f"last {aps[-1]:.3f}; hindsight F1 at the best epoch "
              f"{best['f1']:.3f} (threshold {best['threshold']})")  # fmt: skip
        print(" ".join(f"{ap:.3f}" for ap in aps))


def baseline_report(profile: Profile, cases: Sequence[str], seed: int) -> dict[str, Any]:
    """The baselines of each cross-site case (no training: seconds, not minutes)."""
    rows, found = [], {}
    for case in cases:
        train, test = CASES[case]
        table = baselines(profile, train, test, seed)
        found[case] = table
        rows.append([f"{site_list(train)} -> {site_list(test)}",
                     *(f"{table[k]['ap']:.3f} / {table[k]['best_f1']:.3f}"
                       for k in BASELINES)])  # fmt: skip
    # the profile run (--combined): the same held-out strips train_detector cuts
    kept, strips = neon_data(profile, ("osbs", "yell")).split(
        DetectTrainOptions().val_fraction, seed, 0.4
    )
    table = _baselines_on(kept, strips, seed)
    found["osbs+yell strips"] = table
    rows.append(["OSBS+YELL, held-out strips",
                 *(f"{table[k]['ap']:.3f} / {table[k]['best_f1']:.3f}"
                   for k in BASELINES)])  # fmt: skip
    print_table(["train -> test", "pixel peaks AP / hindsight F1 (IoU 0.4)",
                 "scale-space blobs AP / hindsight F1", "random boxes AP / hindsight F1"],
                rows)  # fmt: skip
    return found


def _pooled(metrics: Sequence[dict[str, Any]]) -> dict[str, float]:
    """P/R/F1 from summed true/false positives of several images (single: as given)."""
    if len(metrics) == 1:
        return {k: float(v) for k, v in metrics[0].items() if isinstance(v, (int, float))}
    tp, fp, fn = (sum(float(m[k]) for m in metrics) for k in ("tp", "fp", "fn"))
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    truth = tp + fn
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0,
            "truth": truth, "predicted": sum(float(m["predicted"]) for m in metrics)}  # fmt: skip


def variant(profile: Profile, change: dict[str, Any]) -> tuple[Profile, dict[str, Any]]:
    """The profile and training options of one ablation row (``architecture`` and
    ``normalization`` are the profile's; everything else an option)."""
    change = dict(change)
    detection_fields = {k: change.pop(k) for k in ("architecture", "fpn_channels") if k in change}
    if detection_fields and profile.detection is not None:
        detection = profile.detection.model_copy(update=detection_fields)
        profile = profile.model_copy(update={"detection": detection})
    method = change.pop("normalization", None)
    if method is not None:
        profile = with_normalization(profile, method)
    backbone = change.pop("backbone", None)
    if backbone is not None:
        profile = with_backbone(profile, backbone)
    return profile, change


def print_rows(rows: list[dict[str, Any]]) -> None:
    print_table(
        ["train -> test", "IoU", "thr", "P", "R", "F1", "F1/img", "AP", "hindsight F1 (thr)",
         "found: hindsight F1@0.1 (pixel peaks / random)", "train s", "CPU s", "s/epoch",
         "epochs", "load", "pixel peaks / blobs AP@0.4"],
        [[r["direction"], r["iou"], str(r["threshold"]), *(f"{r[k]:.3f}" for k in
          ("precision", "recall", "f1", "f1_per_image", "average_precision")),
          f"{r['hindsight_f1']:.3f} ({r['hindsight_threshold']})",
          f"{r.get('found_f1@0.1', float('nan')):.3f} "
          f"({r.get('pixel_peaks_found_f1@0.1', float('nan')):.3f} / "
          f"{r.get('random_boxes_found_f1@0.1', float('nan')):.3f})", round(r["train_seconds"]),
          r["train_cpu_seconds"], r["s_per_epoch"], r["epochs"], r["load_avg_1min"],
          f"{r.get('pixel_peaks_ap@0.4', float('nan')):.3f} / "
          f"{r.get('scale_space_blobs_ap@0.4', float('nan')):.3f}"]
         for r in rows],
    )  # fmt: skip


def quality(args: argparse.Namespace, profile: Profile) -> list[dict[str, Any]]:
    out = Path(args.out)
    base: dict[str, Any] = {"device": "cpu", "seed": args.seed,
                            "positive_classes": list(POSITIVE_CLASSES)}  # fmt: skip
    if args.epochs:
        base["max_epochs"] = args.epochs
    # --combined alone: only the profile run; no --cases: every case
    cases = [c for c in CASES if c in (args.cases or ([] if args.combined else CASES))]
    prof, change = variant(profile, ABLATION[args.variant])
    rows: list[dict[str, Any]] = []
    for case in cases:
        train, test = CASES[case]
        opts = DetectTrainOptions(**{**base, **change})
        folder = out / _slug(args.variant) / case.replace("->", "_to_").replace("+", "_")
        rows += cross_site(prof, train, test, opts, folder, args.reuse, 1000, args.tta)
        print_rows(rows)
        print(f"outlines at the card's threshold (shares of the crown's width/height): "
              f"{rows[-1]['outline_errors']}; random boxes: "
              f"{rows[-1]['random_boxes_outline_errors']}")  # fmt: skip
    result: dict[str, Any] = {"variant": args.variant, "cases": rows}
    if args.combined:
        names = ("osbs", "yell")
        load_before = os.getloadavg()[0]
        card = train_detector(prof, [neon_file(NEON[n][1]) for n in names],
                              [neon_file(NEON[n][0]) for n in names],
                              out / _slug(args.variant) / "osbs_yell",
                              DetectTrainOptions(**{**base, **change}), progress=print)  # fmt: skip
        m, split, training = card.metrics, card.split, card.training
        assert split is not None and training is not None
        load = round((load_before + os.getloadavg()[0]) / 2, 1)
        print(f"\nOSBS+YELL ({split.objects} objects), held-out strips (selection "
              f"model, card threshold {card.threshold}); trained in "
              f"{training.seconds:.0f} s wall, {training.cpu_seconds} "
              f"CPU-s, load {load}:")  # fmt: skip
        print_table(["IoU", "P", "R", "F1", "AP"], [[iou, *(f"{m[f'val_{k}@{iou}']:.3f}" for k in
                    ("precision", "recall", "f1", "average_precision"))]
                    for iou in ("0.4", "0.5")])  # fmt: skip
        result["combined"] = {**m, "train_seconds": training.seconds, "load": load}
    (out / _slug(args.variant)).mkdir(parents=True, exist_ok=True)
    path = out / _slug(args.variant) / ("quality_tta.json" if args.tta else "quality.json")
    if path.is_file():  # keep the cases other runs of this variant measured
        done = {r["direction"] for r in rows}
        kept = [r for r in json.loads(path.read_text())["cases"] if r["direction"] not in done]
        result["cases"] = kept + rows
    path.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return rows


def ablation_table(out: Path) -> None:
    """The variants already run into ``out`` (each row trained by its own ``--variant``)."""
    table = []
    for name in ABLATION:
        path = out / _slug(name) / "quality.json"
        if not path.is_file():
            continue
        found = {r["direction"]: r for r in json.loads(path.read_text())["cases"]
                 if r["iou"] == 0.4}  # fmt: skip
        table.append([name, *(f"{found[d]['f1']:.3f} / {found[d]['average_precision']:.3f}"
                              if d in found else "-" for d in _directions()),
                      max((round(r["train_seconds"]) for r in found.values()),
                          default=0)])  # fmt: skip
    print("\nAblation (IoU 0.4, F1 at the card threshold / AP; one seed):")
    print_table(["variant", *_directions(), "longest train s"], table)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.split(" (")[0]).strip("_")


def _directions() -> list[str]:
    return [f"{site_list(a)} -> {site_list(b)}" for a, b in CASES.values()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=2048, help="synthetic scene side (px)")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-epochs", type=int, default=2, help="epochs timed per scene")
    parser.add_argument("--quality", action="store_true", help="cross-site training run")
    parser.add_argument("--out", default="detect_quality", help="model folders (--quality)")
    parser.add_argument("--epochs", type=int, default=None, help="max epochs (default: recipe)")
    parser.add_argument("--combined", action="store_true", help="also OSBS+YELL, held-out strips")
    parser.add_argument(
        "--cases", nargs="+", choices=list(CASES), help="default: all (none with --combined)"
    )
    parser.add_argument(
        "--variant",
        choices=list(ABLATION),
        default="recipe (default)",
        help="one ablation row (one training per case; run rows one by one)",
    )
    parser.add_argument(
        "--ablation-table",
        action="store_true",
        help="print the table of the variants already run into --out",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tta", action="store_true", help="detect with the 8 flips/rotations")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (1 is several times faster when other processes share the cores)",
    )
    parser.add_argument("--reuse", action="store_true", help="evaluate models already in --out")
    parser.add_argument(
        "--pixel-m", type=float, default=None,
        help="quality: the NEON crops resampled to this pixel size (0.2: block means; 0.05: "
        "bilinear), tiles covering the same ground; models under OUT/pixel_<m>m",
    )  # fmt: skip
    parser.add_argument(
        "--model-dir", type=Path, default=None,
        help="speed: a trained detector folder instead of untrained heads keeping every box",
    )  # fmt: skip
    parser.add_argument(
        "--baselines", action="store_true", help="only the baselines of the cases (no training)"
    )
    parser.add_argument(
        "--curve", action="store_true",
        help="diagnosis: train on all labels, score the test site after each epoch",
    )  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads or max(1, torch.get_num_threads()))
    print(f"python {platform.python_version()}, torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"load {os.getloadavg()[0]:.1f}")  # fmt: skip
    profile = load_profile(PROFILE)
    if args.pixel_m is not None and abs(args.pixel_m - NATIVE_M) > 1e-9:
        args.out = str(Path(args.out) / f"pixel_{args.pixel_m:g}m")
        data = Path(args.out) / "data"
        _RESAMPLED.update(resampled_neon(args.pixel_m, data))
        profile = load_profile(resampled_profile(PROFILE, args.pixel_m, data))
        print(f"NEON crops resampled to {args.pixel_m:g} m in {data}")
    if args.ablation_table:
        ablation_table(Path(args.out))
        return
    if args.baselines:
        baseline_report(profile, args.cases or list(CASES), args.seed)
        return
    if args.curve:
        learning_curve(profile, args.cases or ["osbs->yell"], args.seed, args.epochs or 24)
        return
    if args.quality:
        quality(args, profile)
        return
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        result = speed(args, profile, workdir)
    print(json.dumps({k: v for k, v in result.items() if k != "epochs"}, default=float))


if __name__ == "__main__":
    main()
