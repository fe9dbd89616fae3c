"""Training by honest selection: several learners, one set of blocked folds, baselines.

``geoscreen train`` (modes ``auto``, ``spectral``, ``linear_probe``, ``combined``):

1. cut chips around every label (nothing is held back: see :mod:`geoscreen.vision.folds`);
2. compute the features each candidate needs once per chip (deep features under
   flips/rotations: all 8 for ``deep_lr``, which fits on them and scores their mean;
   for ``combined_lr`` alone all 8 on a GPU, none on a CPU, :func:`deep_views`);
3. score every candidate out of fold on the same spatially blocked folds, next to the
   two baselines: the positive rate and a per-pixel logistic regression;
4. keep the candidate with the best out-of-fold AP (the per-pixel model too, when
   nothing beats it), calibrate its scores (Platt, on the out-of-fold scores), refit
   it on all chips, and write the model directory with a card that shows every
   candidate, the baselines, and suggested thresholds.

When no learner beats the per-pixel baseline by a clear margin, ``train`` and the
card say so in plain words, with what to try.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from geoscreen.errors import InputError
from geoscreen.imagery.region import region_record
from geoscreen.profiles import Profile
from geoscreen.ranking import at_threshold
from geoscreen.vision.augment import DIHEDRAL, dihedral, jitter
from geoscreen.vision.backbones import BackboneSpec, build_backbone, input_stats
from geoscreen.vision.cards import HELD_OUT_LIMIT, model_card, training_record
from geoscreen.vision.folds import BlockedFolds, blocked_folds, scene_folds_fit
from geoscreen.vision.inputs import backbone_spec, band_roles
from geoscreen.vision.learners import (
    CANDIDATES,
    DEEP_VIEWS,
    PIXEL_BASELINE,
    Candidate,
    CVResult,
    Features,
    Fitted,
    build_scorer,
    cross_validate,
    fit,
    learner_record,
    summarise,
)
from geoscreen.vision.modelcard import ClassifyCard
from geoscreen.vision.modeldir import save_model_dir
from geoscreen.vision.runtime import pick_device
from geoscreen.vision.scorer import DeepFeatures, FeatureScorer
from geoscreen.vision.tabular import fit_platt
from geoscreen.vision.tilefeatures import SpectralContext, feature_names
from geoscreen.vision.train import TrainingData, TrainOptions

log = logging.getLogger(__name__)

# The chosen model should beat the per-pixel baseline's out-of-fold AP by this much.
CLEAR_MARGIN = 0.02
TARGET_RECALLS = (0.5, 0.8, 0.9)
MODE_CANDIDATES: dict[str, tuple[str, ...]] = {
    "auto": ("spectral_lr", "spectral_gbm", "deep_lr", "combined_lr"),
    "spectral": ("spectral_lr", "spectral_gbm"),
    "linear_probe": ("deep_lr",),
    "combined": ("combined_lr",),
}


# Colour jitter of the spectral learners' training views: brightness shift, contrast
# scale and a per-channel gain, in the units of [0, 1]-scaled inputs.
COLOUR_JITTER: dict[str, float] = {"brightness": 0.1, "contrast": 0.15, "gain": 0.0}


def candidates_for(mode: str, profile: Profile, say: Callable[[str], None]) -> list[Candidate]:
    """The baseline and the candidates a mode compares; no deep ones without weights."""
    names = list(MODE_CANDIDATES[mode])
    if profile.model.weights is None:
        deep = [n for n in names if not n.startswith("spectral")]
        if mode == "auto":
            names = [n for n in names if n not in deep]
            say(
                f"warning: profile {profile.name} names no pretrained weights "
                "(model.weights: null), so the deep-feature learners would use a randomly "
                "initialised backbone; comparing the spectral-context learners only"
            )
        elif deep:
            say(
                f"warning: profile {profile.name} names no pretrained weights; the "
                f"'{mode}' learner uses features of a randomly initialised backbone"
            )
    return [PIXEL_BASELINE, *(CANDIDATES[n] for n in names)]


def check_learner(name: str, mode: str, profile: Profile) -> None:
    """Refuse a ``--learner`` that the mode does not compare, naming those it does."""
    if mode == "finetune":
        raise InputError(
            f"--learner {name} keeps one learner of a comparison; mode finetune trains "
            "the whole network and compares none",
            where="geoscreen train",
            fix="Leave --learner out with --mode finetune, or use another --mode.",
        )
    names = [c.name for c in candidates_for(mode, profile, lambda _line: None)]
    if name not in names:
        raise InputError(
            f"--learner {name} is not one of the learners mode {mode} compares for "
            f"profile {profile.name}: {', '.join(names)}",
            where="geoscreen train",
            fix="Name one of them (train lists them in its comparison), or leave --learner out.",
        )


def deep_views(device: torch.device) -> tuple[int, ...]:
    """Flips/rotations ``combined_lr`` fits on.

    All 8 on a GPU; on a CPU the chip as it is: the backbone is most of training's
    time there (2,705 Sentinel-2 chips: 780 of 1,230 s under load with 2 views), and
    each more view costs as much again. ``deep_lr`` always uses all 8
    (:data:`~geoscreen.vision.learners.DEEP_VIEWS`), and so then does this.
    """
    return tuple(range(DIHEDRAL)) if device.type == "cuda" else (0,)


@torch.inference_mode()
def chip_features(
    data: TrainingData,
    spectral: SpectralContext,
    deep: DeepFeatures | None,
    device: torch.device,
    batch_size: int,
    colour_views: int = 0,
    seed: int = 0,
    clip: bool = True,
    views: Sequence[int] | None = None,
) -> Features:
    """Spectral features of every chip, and of ``colour_views`` colour-jittered copies
    (:data:`COLOUR_JITTER`; values kept in [0, 1] with ``clip``); deep features under
    the flips/rotations ``views`` (None: :func:`deep_views`) when ``deep``."""
    loader = DataLoader(data.dataset(), batch_size=batch_size, shuffle=False)
    generator = torch.Generator().manual_seed(seed)
    spec_parts: list[list[torch.Tensor]] = [[] for _ in range(1 + colour_views)]
    deep_parts: list[torch.Tensor] = []
    if deep is None:
        views = ()
    elif views is None:
        views = deep_views(device)
    desc = "features" + (f" (backbone x {len(views)} views)" if deep is not None else "")
    if deep is not None:  # as screening runs it: 1.6x faster on a CPU for EfficientNet-Lite0
        deep.to(memory_format=torch.channels_last)
    with tqdm(total=len(data.chips), desc=desc, unit="chip", leave=False) as bar:
        for batch in loader:
            image = batch["image"].to(device)
            spec_parts[0].append(spectral(image).cpu())
            for view in spec_parts[1:]:
                shifted = jitter(batch["image"], batch["mask"], generator, **COLOUR_JITTER)
                view.append(spectral((shifted.clamp(0.0, 1.0) if clip else shifted).to(device)))
            if deep is not None:
                deep_parts.append(torch.stack([_deep(deep, dihedral(image, k)) for k in views]))
            bar.update(len(image))
    if deep is not None:
        deep.to(memory_format=torch.contiguous_format)
    spec_views = [torch.cat(parts).cpu().numpy().astype(np.float64) for parts in spec_parts]
    spec = spec_views[0]
    channels = spectral.channels
    return Features(
        spectral=spec,
        pixel=spec[:, :channels],  # the 1 px centre window's means: the label's pixel
        deep_views=torch.cat(deep_parts, dim=1).numpy().astype(np.float64) if deep_parts else None,
        spectral_views=np.stack(spec_views) if colour_views else None,
        combined_views=len(deep_views(device)),
    )


def _deep(deep: DeepFeatures, image: torch.Tensor) -> torch.Tensor:
    return deep(image.contiguous(memory_format=torch.channels_last)).float().cpu()


def suggested_thresholds(probs: np.ndarray, truth: np.ndarray) -> dict[str, dict[str, float]]:
    """Thresholds on calibrated out-of-fold scores: for target recalls and for best F1."""
    order = np.sort(np.unique(probs))[::-1]
    out: dict[str, dict[str, float]] = {}
    best: dict[str, float] | None = None
    rows = [at_threshold(probs, truth, float(t)) for t in order]
    for target in TARGET_RECALLS:
        hit = next((r for r in rows if r.recall >= target), None)
        if hit is not None:
            out[f"recall_{target:.1f}"] = _threshold_row(hit)
    for r in rows:
        if best is None or r.f1 > best["f1"]:
            best = _threshold_row(r)
    if best is not None:
        out["best_f1"] = best
    return out


def _threshold_row(r: Any) -> dict[str, float]:
    return {
        "threshold": round(float(r.threshold), 4),
        "precision": float(r.precision),
        "recall": float(r.recall),
        "f1": float(r.f1),
    }


@dataclass
class Comparison:
    """Every candidate scored out of fold on the same folds, and what refits need."""

    folds: BlockedFolds
    features: Features
    y: np.ndarray
    results: dict[str, CVResult]
    table: dict[str, dict[str, float]]
    spectral: SpectralContext
    deep: DeepFeatures | None
    spec: BackboneSpec
    roles: tuple[str | None, ...]
    weight: np.ndarray | None = None  # per chip, in fitting (hard negatives); None: all 1

    @property
    def chosen(self) -> CVResult:
        """The candidate with the best out-of-fold AP. The per-pixel baseline can win
        (then the richer learners add nothing here, and the card and ``train`` say so):
        an analyst still gets the best model the labels support."""
        return max(self.results.values(), key=lambda r: self.table[r.candidate.name]["ap"])

    def pick(self, name: str | None) -> CVResult:
        """Candidate ``name`` when an analyst names one (``--learner``), else the best."""
        return self.chosen if name is None else self.results[name]

    def refit(self, name: str, seed: int) -> tuple[FeatureScorer, Fitted]:
        """Candidate ``name`` refitted on every chip, calibrated on its out-of-fold scores."""
        result = self.results[name]
        calibrator = fit_platt(result.oof, self.y)
        rows = np.arange(self.y.size)
        x, y = self.features.training_rows(result.candidate, rows, self.y)
        weight = self.features.training_weights(result.candidate, rows, self.weight)
        fitted = fit(result.candidate, x, y, seed, weight)
        views = self.features.deep_views.shape[0] if self.features.deep_views is not None else 1
        scorer = build_scorer(fitted, calibrator, self.spectral, self.deep, views)
        return scorer.cpu().eval(), fitted


def compare_learners(
    profile: Profile, data: TrainingData, opts: TrainOptions, say: Callable[[str], None]
) -> Comparison:
    """Build folds and features, then score the mode's candidates and the baseline."""
    device = pick_device(opts.device)
    where = ", ".join(str(r["path"]) for r in data.label_records)
    scenes_fit = scene_folds_fit(data.chips, data.groups)
    by_scene = opts.fold_by == "scenes" or (opts.fold_by == "auto" and scenes_fit)
    if by_scene and not scenes_fit:
        raise InputError(
            "folds of whole scenes need at least two scenes that each hold positive and "
            "negative examples",
            where=where,
            fix="Give labelled imagery of more scenes, or use --fold-by blocks.",
        )
    folds = blocked_folds(
        data.chips,
        data.groups,
        block_px=opts.block_tiles * profile.tiling.tile_size,
        k=opts.folds,
        seed=opts.seed,
        where=where,
        by_scene=by_scene,
    )
    y = data.labels
    say(f"{len(data.chips)} chips ({int(y.sum())} positive); {folds.describe()}")
    candidates = candidates_for(opts.mode, profile, say)
    roles = band_roles(profile, data.scenes[0])
    # Band ratios need values on one non-negative scale (not mean/std standardised).
    relative = len(roles) > 1 and profile.preprocess.normalization.method != "meanstd"
    spectral = SpectralContext(len(roles), profile.tiling.tile_size, relative)
    spec = backbone_spec(profile, data.scenes[0])
    deep: DeepFeatures | None = None
    if any(c.features in ("deep", "combined") for c in candidates):
        mean, std = input_stats(spec)
        backbone = build_backbone(spec)
        deep = DeepFeatures(backbone, mean, std, stages=opts.deep_stages).to(device).eval()
    views = range(DEEP_VIEWS) if any(c.features == "deep" for c in candidates) else None
    features = chip_features(
        data, spectral, deep, device, opts.batch_size, opts.colour_views, opts.seed,
        clip=profile.preprocess.normalization.method != "meanstd", views=views,
    )  # fmt: skip
    say(f"comparing {', '.join(c.name for c in candidates)} on {folds.k} folds")
    results = cross_validate(candidates, features, y, folds, opts.seed, data.weights)
    table = {
        name: {**summarise(r.oof, y.astype(bool), folds.block, opts.seed), "seconds": r.seconds}
        for name, r in results.items()
    }
    if deep is not None:
        deep.cpu()
    return Comparison(folds, features, y, results, table, spectral, deep, spec, roles,
                      data.weights)  # fmt: skip


def train_by_selection(
    profile: Profile,
    data: TrainingData,
    out_dir: str | Path,
    opts: TrainOptions,
    say: Callable[[str], None],
    started: float,
) -> ClassifyCard:
    """Compare the mode's learners on blocked folds, keep the best, write the model;
    returns the card as written."""
    comparison = compare_learners(profile, data, opts, say)
    chosen = comparison.pick(opts.learner)
    scorer, final = comparison.refit(chosen.candidate.name, opts.seed)
    probs = scorer.calibrator(torch.as_tensor(chosen.oof)).numpy().astype(np.float64)
    verdict = _verdict(comparison.table, chosen.candidate.name)
    caveats = selection_caveats(comparison.table, chosen.candidate.name, comparison.folds,
                                picked=opts.learner is not None)  # fmt: skip
    mark = "kept (--learner)" if opts.learner is not None else "chosen"
    for line in _report(comparison.table, chosen.candidate.name, mark):
        say(line)
    if verdict:
        say(f"warning: {verdict}")
    for caveat in caveats:
        say(f"note: {caveat[0].lower()}{caveat[1:]}")
    roles, tile = comparison.roles, profile.tiling.tile_size
    card = _card(
        profile,
        data,
        comparison,
        chosen,
        probs,
        scorer_record=learner_record(scorer, final, len(roles), tile),
        spec=comparison.spec if scorer.deep is not None else None,
        names=feature_names(
            [r or f"channel{i}" for i, r in enumerate(roles)], tile, comparison.spectral.relative
        ),
        opts=opts,
        device=pick_device(opts.device),
        seconds=time.perf_counter() - started,
        verdict=verdict,
        caveats=caveats,
    )
    from geoscreen.vision.classifier import render_card_markdown

    return save_model_dir(scorer, card, Path(out_dir), render_card_markdown)


def _verdict(table: dict[str, dict[str, float]], chosen: str) -> str:
    """Plain words when no learner clearly beats the per-pixel baseline."""
    pixel = PIXEL_BASELINE.name
    best = max((n for n in table if n != pixel), key=lambda n: table[n]["ap"])
    if table[best]["ap"] - table[pixel]["ap"] >= CLEAR_MARGIN:
        return ""
    kept = (
        "the per-pixel model itself was kept, as the best"
        if chosen == pixel
        else f"{chosen} was kept"
    )
    return (
        f"no learner beats the per-pixel baseline (AP {table[pixel]['ap']:.3f}) by a clear "
        f"margin ({CLEAR_MARGIN}; best other: {best}, AP {table[best]['ap']:.3f}); {kept}. "
        "The band values at the labelled places already separate them: context adds "
        "little here. For harder targets try more labels (especially negatives near "
        "positives), another tile size, or other bands and indices."
    )


def selection_caveats(
    table: dict[str, dict[str, float]], chosen: str, folds: BlockedFolds, picked: bool = False
) -> list[str]:
    """What the comparison cannot tell, in plain words for ``train`` and the card.

    Folds within the training scenes show which learner ranks best where the labels
    are, not which transfers: on one NEON scene (OSBS, 61 crowns) the chosen learner
    changed with the seed, each time within 0.015 AP of the runner-up, while a learner
    never chosen ranked the other site best in every seed (docs/tile-classifier.md, "Three seeds").
    """
    out: list[str] = []
    if picked:
        best = max(table, key=lambda name: table[name]["ap"])
        out.append(
            f"{chosen} was named with --learner (out-of-fold AP {table[chosen]['ap']:.3f}); "
            + (
                "it is also the best by cross-validation."
                if best == chosen
                else f"the best by cross-validation is {best} ({table[best]['ap']:.3f})."
            )
        )
    if folds.block_px:
        out.append(
            "The learner was chosen on blocks of the training scenes too: it is the one "
            "that ranks best where the labels are; which learner ranks other places "
            "best is not measured. Labels in two or more scenes, each with positives "
            "and negatives, let train choose on whole held-out scenes."
        )
    others = sorted(((row["ap"], name) for name, row in table.items() if name != chosen),
                    reverse=True)  # fmt: skip
    if not picked and others and table[chosen]["ap"] - others[0][0] < CLEAR_MARGIN:
        ap, runner_up = others[0]
        out.append(
            f"Near tie: {chosen} (out-of-fold AP {table[chosen]['ap']:.3f}) and {runner_up} "
            f"({ap:.3f}) are less than {CLEAR_MARGIN} apart, so another --seed may choose "
            f"{runner_up}, and the two may rank other imagery differently."
        )
    return out


def _report(table: dict[str, dict[str, float]], chosen: str, kept: str = "chosen") -> list[str]:
    rate = next(iter(table.values()))["positive_rate"]
    lines = [f"  positive rate (baseline AP)      {rate:.3f}"]
    for name, row in table.items():
        mark = (
            f" <- {kept}" if name == chosen else (" (baseline)" if name.startswith("pixel") else "")
        )
        lines.append(
            f"  {name:<16} AP {row['ap']:.3f} [{row['ap_low']:.3f}, {row['ap_high']:.3f}] "
            f"ROC AUC {row['roc_auc']:.3f}  {row['seconds']:.1f} s{mark}"
        )
    return lines


def _card(
    profile: Profile,
    data: TrainingData,
    comparison: Comparison,
    chosen: CVResult,
    probs: np.ndarray,
    *,
    scorer_record: dict[str, Any],
    spec: Any,
    names: Sequence[str],
    opts: TrainOptions,
    device: torch.device,
    seconds: float,
    verdict: str,
    caveats: Sequence[str] = (),
) -> ClassifyCard:
    y = data.labels.astype(bool)
    table, results = comparison.table, comparison.results
    row = table[chosen.candidate.name]
    at = at_threshold(probs, y, profile.threshold).as_dict()
    metrics = {
        "val_average_precision": row["ap"],
        "val_average_precision_low": row["ap_low"],
        "val_average_precision_high": row["ap_high"],
        "val_roc_auc": row["roc_auc"],
        "val_positive_rate": row["positive_rate"],
        "val_brier": float(np.mean((probs - y) ** 2)),
        **{f"val_{k}": v for k, v in at.items()},
    }
    mean, std = input_stats(spec) if spec is not None else ([], [])
    limits = [
        HELD_OUT_LIMIT,
        f"Trained on {y.size} chips ({int(y.sum())} positive): small data, wide uncertainty.",
        "Scores rank tiles for human review; a high score is not a finding.",
    ]
    if verdict:
        limits.insert(0, verdict[0].upper() + verdict[1:])
    at_held_out = limits.index(HELD_OUT_LIMIT) + 1
    limits[at_held_out:at_held_out] = caveats
    card = model_card(
        profile,
        task="classify",
        output_meaning=f"calibrated score that a tile matches screening profile '{profile.name}'",
        spec=spec,
        stats=(mean, std),
        data=data,
        split=comparison.folds.record(),
        metrics=metrics,
        training=training_record(
            opts, device, seconds, {"chosen": chosen.candidate.name}, mode=opts.mode
        ),
        limits=limits,
        model={"learner": scorer_record},
    )
    card["selection"] = {
        "chosen": chosen.candidate.name,
        "chosen_by": "--learner" if opts.learner is not None else "cross-validation",
        "metric": "out-of-fold average precision (pooled over folds; every chip counts "
        "once: hard negatives weigh more in fitting, not in this measure)",
        "learners": {
            name: {
                "baseline": results[name].candidate.baseline,
                **{k: round(float(v), 4) for k, v in r.items()},
            }
            for name, r in table.items()
        },
        "positive_rate": row["positive_rate"],
        "beats_pixel_baseline": not verdict,
    }
    card["data"]["background_chips"] = data.background_chips
    card["hard_negatives"] = data.hard_negative_record()
    card["region"] = region_record(data.scenes)  # screen/scan warn far from it
    card["thresholds"] = {
        "in_force": profile.threshold,
        "source": "profile",
        "suggested": suggested_thresholds(probs, y),
    }
    # The spectral features the head reads (the label pixel's values alone for pixel_lr).
    used = {"deep": 0, "pixel": scorer_record["channels"]}.get(scorer_record["features"])
    card["features"] = list(names)[:used]
    return ClassifyCard.model_validate(card)
