"""Object detection: throughput, training time, and honest cross-site numbers on NEON crowns.

Usage::

    python benchmarks/detect.py [--size 2048] [--workdir DIR]          # speed
    python benchmarks/detect.py --quality --out DIR [--epochs 40]       # cross-site quality

Speed (profile ``configs/tree_crowns_detect_neon.yaml``: RetinaNet on
EfficientNet-Lite0, 256 px tiles overlapping by 64), tiles per second of

  (m) the detector alone: random (8, 3, 256, 256) batches under ``torch.inference_mode``,
  (e) end-to-end ``detect_scene`` + ``objects_to_sites`` on a synthetic 0.1 m scene
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
from geoscreen.vision.detect_card import record_evaluation
from geoscreen.vision.detect_infer import DetectOptions, detect_scene, objects_to_sites
from geoscreen.vision.detect_train import (
    DetectTrainOptions,
    collect_detection_chips,
    detector_config,
    fit_detector,
    train_detector,
)
from geoscreen.vision.detector import LoadedDetector, build_detector, load_detector
from geoscreen.vision.runtime import tune_malloc
from geoscreen.vision.split import blocked_split

PROFILE = Path(__file__).resolve().parents[1] / "configs" / "tree_crowns_detect_neon.yaml"
BATCH = 8
NEON = {"osbs": ("neon_osbs", "neon_osbs_labels"), "yell": ("neon_yell", "neon_yell_labels")}
CHIPS = {"osbs": 128, "yell": 256}


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
    print("\nTraining seconds per epoch on the CPU (chips of the NEON scenes):")
    print_table(
        ["scene", "chip px", "train chips", "s/epoch (median)"],
        [[k, CHIPS[k], v["chips"], v["seconds"]] for k, v in epochs.items()],
    )
    return {"tiles": grid_tiles, "tiles_per_s": rates, "epochs": epochs}


def epoch_seconds(profile: Profile, name: str, epochs: int) -> dict[str, Any]:
    image, labels = (sample_path(n) for n in NEON[name])
    opts = DetectTrainOptions(device="cpu", chip_size=CHIPS[name], max_epochs=epochs,
                              patience=epochs)  # fmt: skip
    data = collect_detection_chips(profile, [labels], [image], opts, CHIPS[name])
    split = blocked_split(data.chips, data.groups, block_px=CHIPS[name], val_fraction=0.25)
    config = detector_config(profile, data.scenes[0], 0.1)
    model = build_detector(config)
    history = fit_detector(model, data, split, torch.device("cpu"), opts, 0.3, lambda _: None)
    seconds = statistics.median(e["seconds"] for e in history["epochs"])
    return {"chips": int(split.train.size), "seconds": seconds}


def quality(args: argparse.Namespace, profile: Profile) -> list[dict[str, Any]]:
    out = Path(args.out)
    rows: list[dict[str, Any]] = []
    for train_name, test_name in (("osbs", "yell"), ("yell", "osbs")):
        image, labels = (sample_path(n) for n in NEON[train_name])
        model_dir = out / f"trained_on_{train_name}"
        epochs = args.epochs if train_name == "osbs" else args.epochs_yell
        opts = DetectTrainOptions(device="cpu", chip_size=CHIPS[train_name], max_epochs=epochs,
                                  patience=args.patience, seed=args.seed)  # fmt: skip
        started = time.perf_counter()
        if args.reuse and (model_dir / "model.yaml").is_file():
            card = load_detector(model_dir).card
            train_s = float(card["training"]["seconds"])
        else:
            card = train_detector(profile, [labels], [image], model_dir, opts, progress=print)
            train_s = time.perf_counter() - started
        loaded = load_detector(model_dir)
        test_image, test_labels = (sample_path(n) for n in NEON[test_name])
        scene = open_scene(test_image, sensor=profile.imagery.sensor)
        started = time.perf_counter()
        objects = detect_scene(loaded, profile, scene, DetectOptions(device="cpu", num_workers=0))
        sites = objects_to_sites(objects, scene, profile, model_sha256=loaded.sha256)
        detect_s = time.perf_counter() - started
        truth = load_truth(test_labels, scene)
        entries = []
        for iou in (0.4, 0.5):
            ev = evaluate_sites(sites, truth, Criterion(iou=iou), score_threshold=profile.threshold,
                                n_boot=1000, seed=0)  # fmt: skip
            m = ev.metrics
            entry = {
                "imagery": f"{Path(test_image).name} (trained on {Path(image).name})",
                "objects": int(m["truth"]), "detections": int(m["predicted"]),
                "iou": iou, "threshold": profile.threshold,
                "precision": float(m["precision"]), "recall": float(m["recall"]),
                "f1": float(m["f1"]), "average_precision": float(m["average_precision"]),
                "ap_95ci": ev.intervals.get("average_precision"),
                "train_seconds": round(train_s, 1), "detect_seconds": round(detect_s, 1),
                "train_cpu_seconds": card["training"].get("cpu_seconds"),
                "epochs_run": card["training"]["epochs_run"],
                "best_epoch": card["training"]["best_epoch"],
                "val_ap@0.5": card["metrics"]["val_average_precision@0.5"],
            }  # fmt: skip
            entries.append(entry)
        record_evaluation(model_dir, entries, replace=True)
        rows += entries
    print_table(
        ["train -> test", "IoU", "P", "R", "F1", "AP", "AP 95% CI", "train s", "epochs"],
        [[r["imagery"], r["iou"], r["precision"], r["recall"], r["f1"], r["average_precision"],
          str([round(v, 3) for v in r["ap_95ci"] or []]), r["train_seconds"],
          f"{r['best_epoch']}/{r['epochs_run']}"] for r in rows],
    )  # fmt: skip
    (out / "quality.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=2048, help="synthetic scene side (px)")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-epochs", type=int, default=2, help="epochs timed per scene")
    parser.add_argument("--quality", action="store_true", help="cross-site training run")
    parser.add_argument("--out", default="detect_quality", help="model folders (--quality)")
    parser.add_argument("--epochs", type=int, default=40, help="max epochs, OSBS (--quality)")
    parser.add_argument("--epochs-yell", type=int, default=15, help="max epochs, YELL")
    parser.add_argument("--patience", type=int, default=10)
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
