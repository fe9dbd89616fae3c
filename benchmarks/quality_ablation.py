"""Ablation of tile-classifier learners on the real cases of ``quality.py``, from cached features.

Usage::

    python benchmarks/quality_ablation.py features --cases neon_osbs_yell,... [--cache DIR]
    python benchmarks/quality_ablation.py evaluate --cases ... [--cache DIR]

``features`` computes, once per case, the training chips' features (spectral context;
backbone features of the last layer and pooled from every stage, under the 8
flips/rotations) with the folds ``geoscreen train`` builds, and the same features of
every tile of the held-out scene (the screening grid, the screening preprocessing).
``--deep-min-size`` enlarges the tiles to that size before the backbone (the shipped
:data:`~geoscreen.vision.scorer.DEEP_MIN_SIZE` is 64: NEON's 64 px tiles go in as they
are). ``evaluate`` then fits variants from those arrays: each is scored out of fold on the
same folds (what selection would see) and, refitted on all chips, on the held-out
tiles. Exploration only: the shipped numbers come from ``quality.py``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table
from quality import NEON, NEON_CLASSES, ROOT

from geoscreen.evaluate.tile_truth import tiles_containing
from geoscreen.imagery.dataset import TileDataset, collate
from geoscreen.imagery.scene import open_scene
from geoscreen.labels import load_labels
from geoscreen.profiles import load_profile
from geoscreen.ranking import average_precision
from geoscreen.samples import sample_path
from geoscreen.vision.augment import DIHEDRAL, dihedral
from geoscreen.vision.infer import prepare_scene
from geoscreen.vision.learners import Candidate, fit
from geoscreen.vision.scorer import DeepFeatures
from geoscreen.vision.select_train import compare_learners
from geoscreen.vision.train import TrainOptions, collect_chips


class Stages:
    """The last layer's pooled features and every trunk stage's, from one pass."""

    def __init__(self, deep: DeepFeatures) -> None:
        mean, std = deep.norm.mean.flatten().tolist(), deep.norm.std.flatten().tolist()
        self.staged = DeepFeatures(deep.backbone, mean, std, deep.min_size, stages=True)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        both = self.staged(x).float()
        n = self.staged.stage_channels
        return both[:, n:], both[:, :n]


@torch.inference_mode()
def views_of(images: Any, stages: Stages) -> tuple[np.ndarray, np.ndarray]:
    """(8, N, F) last-layer and (8, N, S) stage features of every batch in ``images``."""
    last, multi = [], []
    for image in images:
        outs = [stages(dihedral(image, k)) for k in range(DIHEDRAL)]
        last.append(torch.stack([o[0] for o in outs]))
        multi.append(torch.stack([o[1] for o in outs]))
    return torch.cat(last, 1).numpy(), torch.cat(multi, 1).numpy()


def features(case: str, cache: Path, seed: int, min_size: int | None = None) -> None:
    _, train, test = case.split("_")
    sites = train.split("+")
    profile = load_profile(ROOT / "geoscreen" / "configs" / "tree_crowns_neon.yaml")
    classes = ["Tree", *(c for s in sites for c in NEON_CLASSES.get(s, []))]
    # The shipped deep features with stages are the cached "multi" set; "deep" is the
    # last layer alone.
    opts = TrainOptions(device="cpu", seed=seed, positive_classes=classes, deep_stages=False)
    data = collect_chips(
        profile,
        [sample_path(NEON[s][1]) for s in sites],
        [sample_path(NEON[s][0]) for s in sites],
        opts,
    )
    comp = compare_learners(profile, data, opts, lambda m: print(" ", m, flush=True))
    assert comp.deep is not None
    if min_size is not None:  # tiles enlarged to this size before the backbone
        comp.deep.min_size = min_size
    stages = Stages(comp.deep.eval())
    loader = DataLoader(data.dataset(), batch_size=64, shuffle=False)
    train_last, train_multi = views_of((b["image"] for b in loader), stages)
    image, labels = NEON[test]
    scene = open_scene(sample_path(image), sensor="rgb")
    every = ["Tree", *NEON_CLASSES.get(test, [])]
    centres = load_labels(sample_path(labels), scene, positive_classes=every).centres()
    _, grid, pre = prepare_scene(profile, scene, "cpu")
    tiles = DataLoader(TileDataset(grid, pre), batch_size=64, shuffle=False, collate_fn=collate)
    batches = [b["image"] for b in tiles]
    with torch.inference_mode():
        test_spec = torch.cat([comp.spectral(b) for b in batches]).numpy().astype(np.float64)
    test_last, test_multi = views_of(batches, stages)
    splits = comp.folds.splits
    np.savez(
        cache / f"{case}.npz",
        y=comp.y,
        spectral=comp.features.spectral,
        train_last=train_last,
        train_multi=train_multi,
        splits_train=np.array([t for t, _ in splits], dtype=object),
        splits_test=np.array([t for _, t in splits], dtype=object),
        test_spec=test_spec,
        test_last=test_last,
        test_multi=test_multi,
        truth=tiles_containing(grid, centres),
    )
    print(f"  cached {case}: {comp.y.size} chips, {len(grid)} test tiles", flush=True)


# ------------------------------------------------------------------------------ evaluate
@dataclass(frozen=True)
class Variant:
    """Which features and estimator; which views it fits on and which it scores.

    ``fit_views``/``test_views``: ``(0,)`` the chip as it is; a tuple of dihedral views
    (fit: each view a row; test: the mean of the views' features); ``"mean"`` (fit on the
    mean over all 8). ``c``: the logistic regression's C (None: ``LR_C``).
    """

    which: str
    estimator: str = "lr"
    fit_views: tuple[int, ...] | str = (0,)
    test_views: tuple[int, ...] = (0,)
    c: float | None = None


ALL = tuple(range(DIHEDRAL))
VARIANTS: dict[str, Variant] = {
    "pixel_lr": Variant("pixel"),
    "spectral_lr": Variant("spectral"),
    "spectral_gbm": Variant("spectral", "gbm"),
    "deep_lr (1 view, before)": Variant("deep"),
    "combined_lr": Variant("combined"),
    "deep_lr C=0.001": Variant("deep", c=0.001),
    "deep_lr C=0.003": Variant("deep", c=0.003),
    "deep_lr C=0.03": Variant("deep", c=0.03),
    "deep_lr fit 8 / test 1 (GPU)": Variant("deep", fit_views=ALL),
    "deep_lr fit 8 / test mean 8": Variant("deep", fit_views=ALL, test_views=ALL),
    "deep_lr fit mean / test mean": Variant("deep", fit_views="mean", test_views=ALL),
    "deep_lr 4 rotations": Variant("deep", fit_views=(0, 1, 2, 3), test_views=(0, 1, 2, 3)),
    "deep_lr 4 (0,2,4,6)": Variant("deep", fit_views=(0, 2, 4, 6), test_views=(0, 2, 4, 6)),
    "multi_lr": Variant("multi"),
    "stages_lr": Variant("stages"),
    "multi_combined_lr": Variant("multi_combined"),
    "multi_lr fit 8 / test mean 8": Variant("multi", fit_views=ALL, test_views=ALL),
    "stages_lr fit 8 / test mean 8": Variant("stages", fit_views=ALL, test_views=ALL),
    "combined_lr fit 8 / test mean 8": Variant("combined", fit_views=ALL, test_views=ALL),
    "combined_lr fit mean / test mean": Variant("combined", fit_views="mean", test_views=ALL),
    "multi_lr C=0.003 fit 8 / test mean 8": Variant(
        "multi", c=0.003, fit_views=ALL, test_views=ALL
    ),
    "multi_lr C=0.03 fit 8 / test mean 8": Variant("multi", c=0.03, fit_views=ALL, test_views=ALL),
}
# Candidate sets selection chooses from by out-of-fold AP (the baseline always in).
BEFORE = ["pixel_lr", "spectral_lr", "spectral_gbm", "deep_lr (1 view, before)", "combined_lr"]
AFTER = ["pixel_lr", "spectral_lr", "spectral_gbm", "deep_lr fit 8 / test mean 8", "combined_lr"]
# The learners `geoscreen train` compares now (deep features with every stage).
SHIPPED = [*AFTER[:3], "multi_lr fit 8 / test mean 8", "multi_combined_lr"]
SELECTIONS: dict[str, list[str]] = {
    "before": BEFORE,
    "before + ensemble": [*BEFORE, "ensemble(rank)"],
    "after (deep_lr 8 views)": AFTER,
    "after + ensemble": [*AFTER, "ensemble8(rank)"],
    "deep and combined 8 views": [*AFTER[:4], "combined_lr fit 8 / test mean 8"],
    "stages in deep_lr": [*AFTER[:3], "multi_lr fit 8 / test mean 8", "combined_lr"],
    "stages in deep_lr and combined_lr": [
        *AFTER[:3],
        "multi_lr fit 8 / test mean 8",
        "multi_combined_lr",
    ],
    "shipped (stages)": SHIPPED,
    "shipped + ensemble": [*SHIPPED, "ensemble shipped(rank)"],
    "shipped + ensemble (Platt)": [*SHIPPED, "ensemble shipped(platt)"],
}


def matrix(a: dict[str, Any], which: str, part: str, views: tuple[int, ...] | None) -> np.ndarray:
    """Features ``which`` of the training chips or held-out tiles (``part``), of one view
    or the mean over ``views`` (None: all 8)."""
    spec = a["spectral"] if part == "train" else a["test_spec"]
    chosen = list(views) if views is not None else list(ALL)
    last = a[f"{part}_last"][chosen].mean(axis=0).astype(np.float64)
    multi = a[f"{part}_multi"][chosen].mean(axis=0).astype(np.float64)
    return {
        "spectral": spec,
        "pixel": spec[:, :3],
        "deep": last,
        "multi": np.concatenate([multi, last], axis=1),
        "stages": multi,
        "combined": np.concatenate([last, spec], axis=1),
        "multi_combined": np.concatenate([multi, last, spec], axis=1),
    }[which]


def run_variant(a: dict[str, Any], v: Variant, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold raw scores (the cached folds) and held-out raw scores of ``v``."""
    from geoscreen.vision import learners

    feats = v.which if v.which in ("pixel", "spectral") else "deep"
    candidate = Candidate(feats, v.estimator)  # type: ignore[arg-type]
    y = a["y"]

    def rows_of(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if v.fit_views == "mean":
            return matrix(a, v.which, "train", None)[rows], y[rows]
        assert not isinstance(v.fit_views, str)
        views = v.fit_views if feats == "deep" else (0,)
        x = np.concatenate([matrix(a, v.which, "train", (k,))[rows] for k in views])
        return x, np.tile(y[rows], len(views))

    saved = dict(learners.LR_C)
    if v.c is not None:
        learners.LR_C[feats] = v.c
    try:
        scored = matrix(a, v.which, "train", v.test_views)
        oof = np.full(y.size, np.nan)
        for train, test in zip(a["splits_train"], a["splits_test"], strict=True):
            oof[test] = fit(candidate, *rows_of(train), seed).raw(scored[test])
        final = fit(candidate, *rows_of(np.arange(y.size)), seed)
        return oof, final.raw(matrix(a, v.which, "test", v.test_views))
    finally:
        learners.LR_C.clear()
        learners.LR_C.update(saved)


def cdf(reference: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Where ``s`` falls among the out-of-fold scores ``reference`` (0..1, ties halved): a
    fixed map a scorer could store, not the ranks of the held-out tiles among themselves."""
    ref = np.sort(reference)
    return (np.searchsorted(ref, s, "left") + np.searchsorted(ref, s, "right")) / (2 * ref.size)


def ensemble(
    out: dict[str, tuple[np.ndarray, np.ndarray]], members: list[str], y: np.ndarray, how: str
) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the members' normalised scores. Each member's out-of-fold score of a chip
    comes from its model of that chip's fold, so the ensemble's does too."""
    from geoscreen.vision.tabular import fit_platt

    parts = []
    for m in members:
        oof, held = out[m]
        if how == "rank":
            parts.append((cdf(oof, oof), cdf(oof, held)))
        elif how == "z":
            parts.append(((oof - oof.mean()) / oof.std(), (held - oof.mean()) / oof.std()))
        else:  # Platt logits (the calibration sees the labels of every chip)
            p = fit_platt(oof, y)
            parts.append((float(p.a) * oof + float(p.b), float(p.a) * held + float(p.b)))
    return np.mean([p[0] for p in parts], 0), np.mean([p[1] for p in parts], 0)


def evaluate(cases: list[str], cache: Path, seed: int, only: list[str]) -> None:
    for case in cases:
        a = dict(np.load(cache / f"{case}.npz", allow_pickle=True))
        y, truth = a["y"].astype(bool), a["truth"].astype(bool)
        print(f"\n== {case}: positive rate in-site {y.mean():.3f}, held-out {truth.mean():.3f}")
        names = [n for n in VARIANTS if not only or n in only]
        out = {n: run_variant(a, VARIANTS[n], seed) for n in names}
        if not only:
            members = ["spectral_lr", "spectral_gbm", "deep_lr (1 view, before)", "combined_lr"]
            eight = [*members[:2], "deep_lr fit 8 / test mean 8", "combined_lr"]
            cv = {n: average_precision(out[n][0], y) for n in members}
            top3 = sorted(members, key=lambda n: -cv[n])[:3]
            for how in ("rank", "z", "platt"):
                out[f"ensemble shipped({how})"] = ensemble(out, SHIPPED[1:], y, how)
                out[f"ensemble({how})"] = ensemble(out, members, y, how)
                out[f"ensemble top 3({how})"] = ensemble(out, top3, y, how)
                out[f"ensemble8({how})"] = ensemble(out, eight, y, how)
        rows = [
            [n, f"{average_precision(o, y):.3f}", f"{average_precision(h, truth):.3f}"]
            for n, (o, h) in out.items()
        ]
        print_table(["variant", "CV AP", "held-out AP"], rows)
        for label, names in SELECTIONS.items():
            if all(n in out for n in names):
                best = max(names, key=lambda n: average_precision(out[n][0], y))
                held = average_precision(out[best][1], truth)
                print(f"  selection {label:<28} chooses {best:<28} held-out AP {held:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("step", choices=("features", "evaluate"))
    parser.add_argument(
        "--cases",
        default="neon_osbs_yell,neon_yell_osbs,neon_osbs+yell2+soap_yell,neon_osbs+yell+soap_yell2",
    )
    parser.add_argument("--cache", type=Path, default=Path("/tmp/quality_ablation"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="", help="variant names, separated by ';'")
    parser.add_argument(
        "--deep-min-size", type=int, default=None,
        help="features: enlarge tiles smaller than this before the backbone (default: "
        "the shipped DEEP_MIN_SIZE)",
    )  # fmt: skip
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    cases = args.cases.split(",")
    if args.step == "features":
        for case in cases:
            print(f"== {case}", flush=True)
            features(case, args.cache, args.seed, args.deep_min_size)
    else:
        evaluate(cases, args.cache, args.seed, [v for v in args.only.split(";") if v])


if __name__ == "__main__":
    main()
