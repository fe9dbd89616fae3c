"""bf16 against fp32 at screening, on the real NEON cases: AP and the site set in force.

Usage::

    python benchmarks/precision.py classify [--cases osbs_yell,osbs+yell2+soap_yell]
        [--low bf16|int8] [--backbone resnet18]
    python benchmarks/precision.py detect --model-dir DIR [DIR ...] --test yell

``classify``: trains the tree-crown profile on the training scenes (``train --mode auto``
selection, seed 0), refits every learner that runs a backbone (``deep_lr``,
``combined_lr``) and the chosen one, and screens the test scene three times: fp32, bf16
throughout, and bf16 checked (tiles scoring within ``BF16_CHECK_MARGIN`` of the
profile's threshold scored again in fp32: what ``--precision auto`` runs on a CPU with
bf16 hardware): AP of each against "the tile holds a labelled crown centre", the
largest score change, how many tiles cross the profile's threshold, how many the check
scored again, and the speed against fp32.
``--low int8 --backbone resnet18``: the same with int8 (``--precision int8``, for ResNet
trunks) in place of bf16, the profile's backbone replaced by a ResNet without pretrained
weights (none ships offline: the learners are fitted on random-init features, so their
AP says how int8 moves scores, not how good the model is).
``detect``: detects with trained detector folders (``benchmarks/detect.py --quality
--out DIR``) on the test scene twice: AP and F1 at IoU 0.4 at the card's threshold, and
the bf16 site set against the fp32 one (a bf16 site counts as the same when it overlaps
an fp32 site at IoU 0.5 or more).

The issue's rule: bf16 is on by default only where AP stays within 0.01 of fp32 and the
site set at the threshold in force is the same. bf16 needs hardware (AMX or
AVX512-BF16) to be fast; without it the numbers hold but the time does not. Prints
tables; asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table
from quality import NEON, NEON_CLASSES, ROOT

from geoscreen.evaluate.metrics import Criterion, evaluate_sites
from geoscreen.evaluate.tile_truth import tiles_containing
from geoscreen.evaluate.truth import load_truth
from geoscreen.imagery.scene import open_scene
from geoscreen.labels import load_labels
from geoscreen.profiles import Profile, load_profile
from geoscreen.ranking import average_precision
from geoscreen.samples import sample_path
from geoscreen.sites.detections import objects_to_sites
from geoscreen.vision.detect_infer import DetectOptions, detect_scene
from geoscreen.vision.detector import load_detector
from geoscreen.vision.infer import ScreenOptions, screen_scene
from geoscreen.vision.quantize import INT8_BACKBONES, INT8_CHECK_MARGIN, cpu_has_fast_int8
from geoscreen.vision.runtime import BF16_CHECK_MARGIN, cpu_has_fast_bf16
from geoscreen.vision.select_train import compare_learners
from geoscreen.vision.train import TrainOptions, collect_chips

PRECISIONS = ("fp32", "bf16")
MARGINS = {"bf16": BF16_CHECK_MARGIN, "int8": INT8_CHECK_MARGIN}


def modes(low: str) -> dict[str, tuple[str, float]]:
    """classify: (precision, check margin) of each way of screening, ``low`` being bf16
    or int8; "bf16 checked" is what --precision auto runs on a CPU with bf16 hardware,
    "int8 checked" what --precision int8 runs."""
    return {"fp32": ("fp32", 0.0), low: (low, 0.0), f"{low} checked": (low, MARGINS[low])}


def with_backbone(profile: Profile, backbone: str | None) -> Profile:
    """``profile`` with another backbone, without pretrained weights (random init: no
    other ImageNet weights ship offline), or ``profile`` itself."""
    if backbone is None:
        return profile
    model = profile.model.model_copy(
        update={"backbone": backbone, "weights": None, "weights_sha256": None}
    )
    return profile.model_copy(update={"model": model})


def quiet(_message: str) -> None:
    """Training's messages, not printed."""


def classify(case: str, low: str = "bf16", backbone: str | None = None) -> list[list[object]]:
    train, test = case.split("_")
    sites = train.split("+")
    shipped = load_profile(ROOT / "geoscreen" / "configs" / "tree_crowns_neon.yaml")
    profile = with_backbone(shipped, backbone)
    ways = modes(low)
    torch.manual_seed(0)  # the backbone's random init, where it has no weights
    classes = ["Tree", *(c for s in sites for c in NEON_CLASSES.get(s, []))]
    opts = TrainOptions(device="cpu", seed=0, positive_classes=classes)
    data = collect_chips(
        profile,
        [sample_path(NEON[s][1]) for s in sites],
        [sample_path(NEON[s][0]) for s in sites],
        opts,
    )
    if backbone is None:
        comparison = compare_learners(profile, data, opts, quiet)
        chosen = comparison.chosen.candidate.name
        learners = {name: comparison for name in ("deep_lr", "combined_lr", chosen)}
    else:  # without weights `auto` compares spectral learners only: ask for the deep ones
        learners = {
            name: compare_learners(profile, data, opts.model_copy(update={"mode": mode}), quiet)
            for name, mode in (("deep_lr", "linear_probe"), ("combined_lr", "combined"))
        }
        chosen = ""
    scene = open_scene(sample_path(NEON[test][0]), sensor="rgb")
    every = ["Tree", *NEON_CLASSES.get(test, [])]
    centres = load_labels(sample_path(NEON[test][1]), scene, positive_classes=every).centres()
    rows: list[list[object]] = []
    for learner, comparison in learners.items():
        scorer, _ = comparison.refit(learner, opts.seed)
        scores, seconds = {}, {}
        for mode, (precision, margin) in ways.items():
            started = time.perf_counter()
            result = screen_scene(
                scorer, profile, scene, ScreenOptions(num_workers=0, device="cpu",
                                                      precision=precision, check_margin=margin),
            )  # fmt: skip
            seconds[mode] = time.perf_counter() - started
            scores[mode] = result.scores.astype(np.float64)
        truth = tiles_containing(result.grid, centres)  # the same grid in every mode
        ap = {m: average_precision(scores[m], truth) for m in ways}
        above = {m: scores[m] >= profile.threshold for m in ways}
        near = np.abs(scores[low] - profile.threshold) <= MARGINS[low]
        if np.array_equal(scores[low], scores["fp32"]):  # no bf16/int8 arithmetic (spectral)
            near[:] = False
        rows.append([
            f"{train.upper()} -> {test.upper()}",
            learner + (" (chosen)" if learner == chosen else ""),
            " / ".join(f"{ap[m]:.4f}" for m in ways),
            f"{np.abs(scores[low] - scores['fp32']).max():.4f}",
            " / ".join(str(int(above[m].sum())) for m in ways),
            f"{int((above['fp32'] != above[low]).sum())} / "
            f"{int((above['fp32'] != above[f'{low} checked']).sum())}",
            f"{int(near.sum())} of {truth.size}",
            " / ".join(f"{seconds['fp32'] / seconds[m]:.2f}" for m in (low, f"{low} checked")),
        ])  # fmt: skip
    return rows


def detect(model_dirs: list[Path], test: str) -> list[list[object]]:
    profile = load_profile(ROOT / "geoscreen" / "configs" / "tree_crowns_detect_neon.yaml")
    scene = open_scene(sample_path(NEON[test][0]), sensor=profile.imagery.sensor)
    truth = load_truth(sample_path(NEON[test][1]), scene)
    rows: list[list[object]] = []
    for folder in model_dirs:
        loaded = load_detector(folder)
        threshold = loaded.card.threshold
        assert threshold is not None
        sites, metrics, seconds = {}, {}, {}
        for precision in PRECISIONS:
            started = time.perf_counter()
            objects = detect_scene(
                loaded, profile, scene,
                DetectOptions(device="cpu", num_workers=0, precision=precision),
            )  # fmt: skip
            seconds[precision] = time.perf_counter() - started
            sites[precision] = objects_to_sites(objects, scene, profile, model_sha256=loaded.sha256)
            metrics[precision] = evaluate_sites(
                sites[precision], truth, Criterion(iou=0.4), score_threshold=threshold, n_boot=0
            ).metrics
        kept = {p: sites[p][sites[p]["score_max"] >= threshold] for p in PRECISIONS}
        same = evaluate_sites(
            kept["bf16"], kept["fp32"], Criterion(iou=0.5), score_threshold=threshold, n_boot=0
        ).metrics
        rows.append([
            "/".join(folder.parts[-3:]), f"{metrics['fp32']['average_precision']:.4f}",
            f"{metrics['bf16']['average_precision']:.4f}",
            f"{metrics['bf16']['average_precision'] - metrics['fp32']['average_precision']:+.4f}",
            f"{metrics['fp32']['f1']:.3f} / {metrics['bf16']['f1']:.3f}",
            f"{len(kept['fp32'])} / {len(kept['bf16'])}",
            int(same["fn"]), int(same["fp"]),
            f"{seconds['fp32'] / seconds['bf16']:.2f}",
        ])  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("task", choices=("classify", "detect"))
    parser.add_argument("--cases", default="osbs_yell,osbs+yell2+soap_yell")
    parser.add_argument("--model-dir", type=Path, nargs="*", default=[])
    parser.add_argument("--test", default="yell")
    parser.add_argument("--low", choices=("bf16", "int8"), default="bf16",
                        help="classify: the arithmetic compared with fp32")  # fmt: skip
    parser.add_argument("--backbone", default=None,
                        help="classify: the profile's backbone instead, random init")  # fmt: skip
    args = parser.parse_args()
    if args.task == "classify" and args.low == "int8" and args.backbone not in INT8_BACKBONES:
        parser.error(f"--low int8 needs --backbone one of {', '.join(sorted(INT8_BACKBONES))}")
    print(f"hardware bf16 (AMX or AVX512-BF16): {cpu_has_fast_bf16()}; "
          f"int8 dot products (VNNI): {cpu_has_fast_int8()}")  # fmt: skip
    if args.task == "classify":
        low = args.low
        rows = [row for case in args.cases.split(",")
                for row in classify(case, low, args.backbone)]  # fmt: skip
        print_table(
            ["case", "learner", f"AP fp32 / {low} / checked", f"max |{low} - fp32|",
             f"tiles >= thr fp32 / {low} / checked", f"crossing {low} / checked",
             "scored again (checked)", f"speed {low} / checked vs fp32"],
            rows,
        )  # fmt: skip
    else:
        rows = detect(args.model_dir, args.test)
        print_table(
            ["model", "AP@0.4 fp32", "AP@0.4 bf16", "delta", "F1@0.4 fp32 / bf16",
             "sites >= thr fp32 / bf16", "fp32 sites lost", "bf16 sites new", "speed bf16/fp32"],
            rows,
        )  # fmt: skip


if __name__ == "__main__":
    main()
