"""Which review order teaches the model fastest? Simulated analysts on real NEON crowns.

Usage::

    python benchmarks/active_learning.py [--seeds 5] [--rounds 25] [--plot al.png]
                                         [--json results.json]
    python benchmarks/active_learning.py --hard-negatives [--seeds 10] [--rounds 5]
                                         [--weights 2 4 8] [--learners spectral_lr]

Data (real labels only): the bundled NEON OSBS_029 (61 crowns) and YELL crop (279
crowns), chips cut by :func:`geoscreen.vision.train.collect_chips` (crown-centred
positives; random background chips that hold no crown, 8 per crown asked), described by
the spectral-context features (:class:`geoscreen.vision.tilefeatures.SpectralContext`)
and fitted with the ``spectral_lr`` learner (:func:`geoscreen.vision.learners.fit`).

Split: in each scene the chips whose centre lies in the right-most 30% of the width are
the **held-out block**; the rest is the pool an analyst reviews. A simulated analyst
answers from the ground truth. Each seed starts from 10 random pool labels (at least 2
of each class), then rounds of 20 reviews in one queue order:

- ``diverse``: k-means (20 clusters) on the features of the unreviewed pool, the most
  uncertain chip of each cluster (:func:`geoscreen.review.queue.diverse_order`);
- ``uncertainty``: the 20 with the smallest |logit|;
- ``score``: the 20 highest scores (the default review queue);
- ``random``.

After each round the learner is refitted on every label so far and its AP on the held-out
block is recorded; the table averages over seeds. The reference is the AP of training on
the whole pool. Prints the table and the two targets of issue 14; asserts nothing.

``--hard-negatives`` measures instead what weighting rejections does
(``TrainOptions.hard_negative_weight``), as ``train --from-store`` trains: the start labels,
then rounds of 20 reviews in score order (the review queue's default: analysts see the
highest scores, and the negatives among them are the rejections, the hard negatives), plus
random background chips that nobody reviewed (4 per positive, as ``collect_chips`` draws
them). Each weight runs its own loop (its model picks its next reviews); the learner fits
with the hard negatives weighing ``w`` (:func:`geoscreen.vision.learners.fit`). Prints the
held-out AP per weight and round, and per weight the mean paired difference from weight 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import print_table

from geoscreen.profiles import load_profile
from geoscreen.ranking import average_precision
from geoscreen.review.queue import diverse_order
from geoscreen.samples import sample_path
from geoscreen.vision.learners import CANDIDATES, fit
from geoscreen.vision.tilefeatures import SpectralContext
from geoscreen.vision.train import TrainOptions, collect_chips

PROFILE = Path(__file__).resolve().parents[1] / "geoscreen" / "configs" / "tree_crowns_neon.yaml"
SCENES = (("neon_osbs", "neon_osbs_labels"), ("neon_yell", "neon_yell_labels"))
LEARNER = CANDIDATES["spectral_lr"]
START, ROUND = 10, 20
HELD_OUT_FROM = 0.7  # chips centred right of this fraction of the width are held out
ORDERS = ("diverse", "uncertainty", "score", "random")


def load_data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, labels and held-out mask of every chip of both scenes."""
    profile = load_profile(PROFILE)
    xs, ys, held = [], [], []
    for scene_name, labels_name in SCENES:
        data = collect_chips(profile, [sample_path(labels_name)], [sample_path(scene_name)],
                             TrainOptions(background_per_positive=8.0))  # fmt: skip
        width = data.scenes[0].width
        spectral = SpectralContext(len(profile.preprocess.bands or []), profile.tiling.tile_size)
        parts = []
        with torch.inference_mode():
            for batch in DataLoader(data.dataset(), batch_size=64, shuffle=False):
                parts.append(spectral(batch["image"]).double())
        xs.append(torch.cat(parts).numpy())
        ys.append(data.labels.astype(bool))
        held.append(np.array([c.col_off + c.size / 2 > HELD_OUT_FROM * width for c in data.chips]))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(held)


def next_batch(
    order: str, raw: np.ndarray, x: np.ndarray, rng: np.random.Generator, seed: int
) -> np.ndarray:
    """Positions (into the unreviewed rows) of the next round's reviews."""
    n = min(ROUND, len(raw))
    if order == "random":
        return rng.choice(len(raw), size=n, replace=False)
    if order == "score":
        return np.argsort(-raw, kind="stable")[:n]
    if order == "uncertainty":
        return np.argsort(np.abs(raw), kind="stable")[:n]
    return diverse_order(x, -np.abs(raw), round_size=n, seed=seed)[:n]


def run_order(
    order: str, x: np.ndarray, y: np.ndarray, test: np.ndarray, pool: np.ndarray,
    seed: int, rounds: int,
) -> list[tuple[int, float]]:  # fmt: skip
    """(labels, held-out AP) after the start and after each round."""
    rng = np.random.default_rng(seed)
    pos, neg = pool[y[pool]], pool[~y[pool]]
    start = [*rng.choice(pos, 2, replace=False), *rng.choice(neg, 2, replace=False)]
    rest = np.setdiff1d(pool, start)
    labelled = [*start, *rng.choice(rest, START - len(start), replace=False)]
    curve = []
    for r in range(rounds + 1):
        idx = np.array(labelled)
        fitted = fit(LEARNER, x[idx], y[idx].astype(np.int64), seed)
        curve.append((len(idx), average_precision(fitted.raw(x[test]), y[test])))
        if r == rounds:
            break
        left = np.setdiff1d(pool, idx)
        if len(left) == 0:
            break
        picked = next_batch(order, fitted.raw(x[left]), x[left], rng, seed + r)
        labelled += [int(i) for i in left[picked]]
    return curve


BACKGROUND_PER_POSITIVE = 4  # what collect_chips draws per positive when the only negatives are
# rejections (hard negatives, not a sample of the scene: geoscreen.vision.train.background_count)


def run_hard_negatives(
    weight: float, learner: str, x: np.ndarray, y: np.ndarray, test: np.ndarray,
    pool: np.ndarray, seed: int, rounds: int,
) -> list[tuple[int, float]]:  # fmt: skip
    """(rejections so far, held-out AP) after the start and after each round of
    score-order reviews, the rejections weighing ``weight``."""
    rng = np.random.default_rng(seed)
    pos, neg = pool[y[pool]], pool[~y[pool]]
    start = [*rng.choice(pos, 2, replace=False), *rng.choice(neg, 2, replace=False)]
    rest = np.setdiff1d(pool, start)
    labelled = [*start, *rng.choice(rest, START - len(start), replace=False)]
    reviewed: list[int] = []
    curve = []
    for r in range(rounds + 1):
        known = np.array(labelled + reviewed)
        positives = int(y[known].sum())
        unseen_neg = np.setdiff1d(neg, known)
        n_bg = min(len(unseen_neg), BACKGROUND_PER_POSITIVE * positives)
        background = rng.choice(unseen_neg, n_bg, replace=False)
        rows = np.concatenate([known, background])
        hard = np.isin(rows, reviewed) & ~y[rows]
        w = np.where(hard, weight, 1.0)
        fitted = fit(CANDIDATES[learner], x[rows], y[rows].astype(np.int64), seed, w)
        curve.append((int(hard.sum()), average_precision(fitted.raw(x[test]), y[test])))
        if r == rounds:
            break
        left = np.setdiff1d(pool, rows)
        picked = next_batch("score", fitted.raw(x[left]), x[left], rng, seed + r)
        reviewed += [int(i) for i in left[picked]]
    return curve


def hard_negative_study(
    x: np.ndarray, y: np.ndarray, test: np.ndarray, pool: np.ndarray, args: argparse.Namespace
) -> dict[str, Any]:
    """Held-out AP per learner, weight and round; paired differences from weight 1."""
    out: dict[str, Any] = {}
    for learner in args.learners:
        runs = {
            w: [run_hard_negatives(w, learner, x, y, test, pool, s, args.rounds)
                for s in range(args.seeds)]
            for w in args.weights
        }  # fmt: skip
        ap = {w: np.array([[a for _, a in run] for run in r]) for w, r in runs.items()}
        hard = np.array([[n for n, _ in run] for run in runs[1.0]]).mean(axis=0)
        header = ["round", "rejections (w=1)", *(f"w={w:g}" for w in args.weights)]
        rows = [[r, f"{hard[r]:.1f}", *(f"{ap[w][:, r].mean():.3f}" for w in args.weights)]
                for r in range(args.rounds + 1)]  # fmt: skip
        print(f"\n{learner}: held-out AP, mean of {args.seeds} seeds")
        print_table(header, rows)
        summary = {}
        for w in args.weights:
            diff = ap[w][:, 1:] - ap[1.0][:, 1:]  # after the reviews (round 0 has none)
            summary[w] = {"mean_diff": float(diff.mean()), "last_diff": float(diff[:, -1].mean()),
                          "wins_last": int((diff[:, -1] > 0).sum())}  # fmt: skip
            print(f"  w={w:g}: {diff.mean():+.3f} AP over rounds 1-{args.rounds} against w=1 "
                  f"(after round {args.rounds}: {diff[:, -1].mean():+.3f}, better in "
                  f"{summary[w]['wins_last']} of {args.seeds} seeds)")  # fmt: skip
        out[learner] = {"ap": {str(w): a.tolist() for w, a in ap.items()},
                        "summary": {str(w): v for w, v in summary.items()}}  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--plot", type=Path, default=Path("active_learning.png"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--hard-negatives", action="store_true",
                        help="measure hard-negative weights instead of queue orders")  # fmt: skip
    parser.add_argument("--weights", type=float, nargs="+", default=[1.0, 2.0, 4.0, 8.0])
    parser.add_argument("--learners", nargs="+", default=["spectral_lr", "spectral_gbm"])
    args = parser.parse_args(argv)
    started = time.perf_counter()
    x, y, held = load_data()
    test, pool = np.flatnonzero(held), np.flatnonzero(~held)
    if args.hard_negatives:
        args.weights = sorted({1.0, *args.weights})
        result = hard_negative_study(x, y, test, pool, args)
        print(f"{time.perf_counter() - started:.0f} s in all")
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
        return 0
    print(f"{len(y)} chips ({int(y.sum())} crowns): pool {len(pool)} "
          f"({int(y[pool].sum())} crowns), held-out block {len(test)} ({int(y[test].sum())} "
          f"crowns, positive rate {y[test].mean():.3f}); features in "
          f"{time.perf_counter() - started:.0f} s")  # fmt: skip
    full = fit(LEARNER, x[pool], y[pool].astype(np.int64), 0)
    full_ap = average_precision(full.raw(x[test]), y[test])
    curves: dict[str, np.ndarray] = {}
    counts: list[int] = []
    for order in ORDERS:
        runs = [run_order(order, x, y, test, pool, s, args.rounds) for s in range(args.seeds)]
        counts = [n for n, _ in runs[0]]
        curves[order] = np.array([[ap for _, ap in run] for run in runs]).mean(axis=0)
    header = ["round", "labels", *ORDERS]
    rows = [[r, counts[r], *(f"{curves[o][r]:.3f}" for o in ORDERS)] for r in range(len(counts))]
    print_table(header, rows)
    print(f"all {len(pool)} pool labels: AP {full_ap:.3f}")
    report = _targets(curves, counts, full_ap, len(pool))
    print("\n".join(report["lines"]))
    _plot(curves, counts, full_ap, args.plot, args.seeds)
    print(f"plot: {args.plot}; {time.perf_counter() - started:.0f} s in all")
    if args.json:
        args.json.write_text(json.dumps({
            "labels": counts, "full_ap": full_ap, "pool": len(pool),
            "curves": {o: c.tolist() for o, c in curves.items()}, **report,
        }, indent=2))  # fmt: skip
    return 0


def _targets(
    curves: dict[str, np.ndarray], counts: list[int], full_ap: float, pool: int
) -> dict[str, Any]:
    """Issue 14's targets: full-label AP within 0.02 at <= half the labels; +0.05 AP
    over random after three rounds."""
    lines, reached = [], {}
    for order, curve in curves.items():
        hit = [counts[r] for r in range(len(counts)) if curve[r] >= full_ap - 0.02]
        reached[order] = hit[0] if hit else None
        where = f"at {hit[0]} labels ({hit[0] / pool:.0%} of the pool)" if hit else "never"
        lines.append(f"{order}: within 0.02 of the all-labels AP {where}")
    best = max(curves, key=lambda o: curves[o][min(3, len(counts) - 1)])
    gain = curves[best][3] - curves["random"][3] if len(counts) > 3 else float("nan")
    half = [o for o, n in reached.items() if n is not None and n <= pool / 2]
    lines.append(f"target 1 (all-labels AP within 0.02 with <= half the labels): "
                 f"{'met by ' + ', '.join(half) if half else 'NOT met'}")  # fmt: skip
    lines.append(f"target 2 (best order beats random by >= 0.05 AP after 3 rounds): best "
                 f"after 3 rounds is {best}, {gain:+.3f} AP over random: "
                 f"{'met' if gain >= 0.05 else 'NOT met'}")  # fmt: skip
    return {"lines": lines, "reached": reached, "best_after_3": best, "gain_after_3": gain}


def _plot(
    curves: dict[str, np.ndarray], counts: list[int], full_ap: float, path: Path, seeds: int
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for order, curve in curves.items():
        ax.plot(counts, curve, marker="o", markersize=3, label=order)
    ax.axhline(full_ap, color="black", linestyle="--", linewidth=1, label="all pool labels")
    ax.set_xlabel("labels (10 to start, then rounds of 20 reviews)")
    ax.set_ylabel("AP on the held-out block")
    ax.set_title(f"NEON OSBS + YELL crowns, spectral_lr, mean of {seeds} seeds")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
