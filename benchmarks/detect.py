"""Object detection: throughput, training time, and honest cross-site numbers on NEON crowns.

Usage::

    python benchmarks/detect.py [--size 2048] [--workdir DIR]          # speed
    python benchmarks/detect.py --quality --out DIR [--ablation] [--combined]

Speed (profile ``geoscreen/configs/tree_crowns_detect_neon.yaml``: RetinaNet on
EfficientNet-Lite0, 256 px tiles overlapping by 64), tiles per second of

  (m) the detector alone: random (8, 3, 256, 256) batches under ``torch.inference_mode``,
  (e) end-to-end ``detect_scene`` + ``sites.detections.objects_to_sites`` on a synthetic 0.1 m scene
      (grid, empty-tile check, reading, preprocessing, detector, cross-tile merging,
      site table), num_workers 0 and 1,

and e/m per round, median over interleaved rounds (issue target >= 0.9). The
heads are untrained with every score kept (``score_threshold`` 0, 300 boxes per
tile): the most post-processing a tile can cause. Then seconds per training epoch
on the NEON OSBS chips (128 px) and YELL chips (256 px).

Quality: train on NEON OSBS_029 (61 crowns) and evaluate on the YELL crop (279
crowns), and the reverse; precision/recall/F1 (score >= the profile threshold) and
AP at IoU 0.4 and 0.5, recorded in each model's card. Prints numbers; asserts nothing.
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
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table

from geoscreen.evaluate.metrics import Criterion, evaluate_sites
from geoscreen.evaluate.truth import load_truth
from geoscreen.imagery.scene import open_scene
from geoscreen.profiles import Profile, load_profile
from geoscreen.samples import make_synthetic_scene, sample_path
from geoscreen.sites.detections import objects_to_sites
from geoscreen.vision.detect_card import record_evaluation
from geoscreen.vision.detect_infer import DetectOptions, detect_scene
from geoscreen.vision.detect_train import (
    DEFAULT_CHIP_PX,
    DetectTrainOptions,
    detector_config,
    fitted_config,
    load_detection_data,
    new_model,
    run_training,
    train_detector,
)
from geoscreen.vision.detector import LoadedDetector, build_detector, load_detector
from geoscreen.vision.runtime import tune_malloc

CONFIGS = Path(__file__).resolve().parents[1] / "geoscreen" / "configs"
PROFILE = CONFIGS / "tree_crowns_detect_neon.yaml"
BATCH = 8
NEON = {"osbs": ("neon_osbs", "neon_osbs_labels"), "yell": ("neon_yell", "neon_yell_labels")}
METRICS = ("precision", "recall", "f1", "average_precision")
ABLATION: dict[str, dict[str, Any]] = {
    "recipe (default)": {},
    "no copy-paste": {"copy_paste": 0},
    "no scale/colour jitter": {"scale_jitter": 1.0, "colour_jitter": 0.0},
    "one anchor size (object_size_m)": {"fit_anchors": False},
    "no refit (selection model)": {"refit": False},
}


def untrained(profile: Profile, scene_path: Path) -> LoadedDetector:
    """The profile's detector with ImageNet backbone and random heads, every score kept."""
    torch.manual_seed(0)
    scene = open_scene(scene_path, sensor=profile.imagery.sensor)
    config = replace(detector_config(profile, scene, 0.1), score_threshold=0.0)
    model = build_detector(config).eval()
    card = {"profile": {"name": profile.name}, "detector": config.to_card(),
            "preprocess": profile.preprocess.model_dump(mode="json"),
            "tiling": profile.tiling.model_dump(mode="json"),
            "backbone": {"in_channels": 3}}  # fmt: skip
    return LoadedDetector(model, card, "untrained", Path("untrained"))


@torch.inference_mode()
def model_only(loaded: LoadedDetector, n_tiles: int, size: int) -> int:
    """``n_tiles`` random tiles through the detector in batches of BATCH (the last partial,
    as in a scene); returns ``n_tiles``."""
    x = torch.rand(BATCH, 3, size, size)
    for start in range(0, n_tiles, BATCH):
        loaded.model(x[: min(BATCH, n_tiles - start)])
    return n_tiles


def end_to_end(loaded: LoadedDetector, profile: Profile, scene_path: Path, workers: int) -> int:
    scene = open_scene(scene_path, sensor=profile.imagery.sensor)
    opts = DetectOptions(batch_size=BATCH, device="cpu", num_workers=workers)
    objects = detect_scene(loaded, profile, scene, opts)
    objects_to_sites(objects, scene, profile)
    return int(objects.meta["tiles"])


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
    loaded = untrained(profile, scene_path)
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
    epochs = {}
    for name in ("osbs", "yell"):
        epochs[name] = epoch_seconds(profile, name, args.train_epochs)
    print("\nTraining seconds per epoch on the CPU (default recipe, chips of the NEON scenes):")
    print_table(
        ["scene", "chip px", "chips/epoch", "s/epoch (median)"],
        [[k, DEFAULT_CHIP_PX, v["chips"], v["seconds"]] for k, v in epochs.items()],
    )
    return {"tiles": grid_tiles, "tiles_per_s": rates, "epochs": epochs}


def epoch_seconds(profile: Profile, name: str, epochs: int) -> dict[str, Any]:
    image, labels = (sample_path(n) for n in NEON[name])
    opts = DetectTrainOptions(device="cpu", chip_size=DEFAULT_CHIP_PX)
    data = load_detection_data(profile, [labels], [image])
    config = fitted_config(detector_config(profile, data.scenes[0], 0.1), data.views, 0.1, True)
    model = new_model(config, opts, torch.device("cpu"))
    history = run_training(model, data.views, opts, torch.device("cpu"), epochs)
    seconds = statistics.median(e["seconds"] for e in history["epochs"])
    return {"chips": int(history["epochs"][0]["chips"]), "seconds": seconds}


def cross_site(profile: Profile, train_name: str, test_name: str, opts: DetectTrainOptions,
               model_dir: Path, reuse: bool, n_boot: int) -> list[dict[str, Any]]:  # fmt: skip
    """Train on one site (or reuse the model), detect and score on the other."""
    image, labels = (sample_path(n) for n in NEON[train_name])
    load_before = os.getloadavg()[0]
    started, cpu = time.perf_counter(), time.process_time()
    if reuse and (model_dir / "model.yaml").is_file():
        card = load_detector(model_dir).card
        train_s = float(card["training"]["seconds"])
    else:
        card = train_detector(profile, [labels], [image], model_dir, opts, progress=print)
        train_s = time.perf_counter() - started
    cpu_s = card["training"].get("cpu_seconds", time.process_time() - cpu)
    loaded = load_detector(model_dir)
    test_image, test_labels = (sample_path(n) for n in NEON[test_name])
    scene = open_scene(test_image, sensor=profile.imagery.sensor)
    started = time.perf_counter()
    objects = detect_scene(loaded, profile, scene, DetectOptions(device="cpu", num_workers=0))
    sites = objects_to_sites(objects, scene, profile, model_sha256=loaded.sha256)
    detect_s = time.perf_counter() - started
    truth = load_truth(test_labels, scene)
    threshold = float(card["threshold"])
    epochs = card["training"]["epochs"]
    entries = []
    for iou in (0.4, 0.5):
        ev = evaluate_sites(sites, truth, Criterion(iou=iou), score_threshold=threshold,
                            n_boot=n_boot, seed=0)  # fmt: skip
        m = ev.metrics
        entries.append({
            "imagery": f"{Path(test_image).name} (trained on {Path(image).name})",
            "direction": f"{train_name.upper()} -> {test_name.upper()}",
            "objects": int(m["truth"]), "detections": int(m["predicted"]),
            "iou": iou, "threshold": threshold,
            "precision": float(m["precision"]), "recall": float(m["recall"]),
            "f1": float(m["f1"]), "average_precision": float(m["average_precision"]),
            "ap_95ci": ev.intervals.get("average_precision"),
            "train_seconds": round(train_s, 1), "train_cpu_seconds": cpu_s,
            "detect_seconds": round(detect_s, 1),
            "s_per_epoch": round(statistics.median(e["seconds"] for e in epochs), 1),
            "epochs": f"{card['training']['best_epoch']}/{card['training']['epochs_run']}"
                      f"+{len(card['training'].get('refit_epochs', []))}",
            "load_avg_1min": round((load_before + os.getloadavg()[0]) / 2, 1),  # while run
            "val_f1@0.4": card["metrics"]["val_f1@0.4"],
        })  # fmt: skip
    record_evaluation(model_dir, entries, replace=True)
    return entries


def quality(args: argparse.Namespace, profile: Profile) -> list[dict[str, Any]]:
    out = Path(args.out)
    base: dict[str, Any] = {"device": "cpu", "seed": args.seed}
    if args.epochs:
        base["max_epochs"] = args.epochs
    rows: list[dict[str, Any]] = []
    for train_name, test_name in (("osbs", "yell"), ("yell", "osbs")):
        opts = DetectTrainOptions(**base)
        rows += cross_site(profile, train_name, test_name, opts,
                           out / f"trained_on_{train_name}", args.reuse, 1000)  # fmt: skip
    print_table(
        ["train -> test", "IoU", "thr", "P", "R", "F1", "AP", "AP 95% CI", "train s", "CPU s",
         "s/epoch", "epochs", "load"],
        [[r["direction"], r["iou"], str(r["threshold"]), *(f"{r[k]:.3f}" for k in METRICS),
          str([round(v, 3) for v in r["ap_95ci"] or []]), round(r["train_seconds"]),
          r["train_cpu_seconds"], r["s_per_epoch"], r["epochs"], r["load_avg_1min"]]
         for r in rows],
    )  # fmt: skip
    result: dict[str, Any] = {"cross_site": rows}
    if args.combined:
        card = train_detector(profile, [sample_path(NEON[n][1]) for n in NEON],
                              [sample_path(NEON[n][0]) for n in NEON], out / "trained_on_both",
                              DetectTrainOptions(**base), progress=print)  # fmt: skip
        m = card["metrics"]
        print("\nOSBS+YELL, held-out strips (selection model, card threshold "
              f"{card['threshold']}):")  # fmt: skip
        print_table(["IoU", "P", "R", "F1", "AP"], [[iou, m[f"val_precision@{iou}"],
                    m[f"val_recall@{iou}"], m[f"val_f1@{iou}"],
                    m[f"val_average_precision@{iou}"]] for iou in ("0.4", "0.5")])  # fmt: skip
        result["combined"] = m
    if args.ablation:
        table = []
        for name, change in ABLATION.items():
            f1 = {}
            for train_name, test_name in (("osbs", "yell"), ("yell", "osbs")):
                folder = out / "ablation" / name.split(" (")[0].replace(" ", "_").replace("/", "_")
                entries = cross_site(profile, train_name, test_name,
                                     DetectTrainOptions(**{**base, **change}),
                                     folder / train_name, args.reuse, 0)  # fmt: skip
                f1[train_name] = entries[0]
            table.append([name, *(f"{f1[n][k]:.3f}" for n in ("osbs", "yell")
                                  for k in ("f1", "average_precision")),
                          round(f1["osbs"]["train_seconds"]),
                          round(f1["yell"]["train_seconds"])])  # fmt: skip
        print("\nAblation (IoU 0.4, card thresholds):")
        print_table(["variant", "OSBS->YELL F1", "AP", "YELL->OSBS F1", "AP", "train s O",
                     "train s Y"], table)  # fmt: skip
        result["ablation"] = table
    (out / "quality.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    return rows


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
    parser.add_argument("--ablation", action="store_true", help="retrain without each step")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse", action="store_true", help="evaluate models already in --out")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(f"python {platform.python_version()}, torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}")  # fmt: skip
    profile = load_profile(PROFILE)
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
