"""Training a tile classifier for a screening profile from labelled examples.

This module gathers the chips (a chip around every label, random background chips,
hard negatives) and trains in one of two ways:

- ``auto`` and the single-learner modes (``spectral``, ``linear_probe``, ``combined``):
  learners compared on the same spatially blocked folds, the best refitted on every
  chip (:mod:`geoscreen.vision.select_train`);
- ``finetune`` (for a GPU): the whole network trains with flips, rotations and
  brightness/contrast jitter and a class-balanced loss; early stopping on the AP of
  spatially blocked validation chips chooses the number of epochs, then a fresh network
  trains on every chip for that many (``TrainOptions.refit``), so the held-out blocks
  are not thrown away.

Both are seeded and write a model directory with a model card (see
:mod:`geoscreen.vision.classifier`).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.utils.data import DataLoader, Subset

from geoscreen.errors import InputError
from geoscreen.imagery.chips import BACKGROUND, NEGATIVE, Chip, sample_chips, shifted_copies
from geoscreen.imagery.dataset import ChipDataset
from geoscreen.imagery.preprocess import ScenePreprocessor
from geoscreen.imagery.region import region_record
from geoscreen.imagery.scene import Scene, open_scene
from geoscreen.labels import LabelSet, LabelsForOtherImage, load_labels
from geoscreen.profiles import Profile, check_scene
from geoscreen.ranking import at_threshold, average_precision
from geoscreen.vision.augment import jitter, random_dihedral
from geoscreen.vision.backbones import BackboneSpec, build_backbone, input_stats
from geoscreen.vision.cards import (
    HELD_OUT_LIMIT,
    label_record,
    model_card,
    split_record,
    training_record,
)
from geoscreen.vision.classifier import TileClassifier, render_card_markdown
from geoscreen.vision.inputs import backbone_spec, band_roles
from geoscreen.vision.modelcard import ClassifyCard
from geoscreen.vision.modeldir import save_model_dir
from geoscreen.vision.runtime import pick_device
from geoscreen.vision.split import SplitResult, blocked_split

log = logging.getLogger(__name__)


# A rejection weighs as much as the random background chips drawn per positive (4 by
# default). Measured (benchmarks/active_learning.py --hard-negatives, NEON crowns, 10
# seeds, 5 rounds of 20 score-order reviews): spectral_lr's held-out AP +0.032 over
# weight 1 (better in 8 of 10 seeds; 2: +0.018, 8: +0.031); spectral_gbm's unchanged
# (+0.001). See the README.
HARD_NEGATIVE_WEIGHT = 4.0
MAX_HARD_NEGATIVE_WEIGHT = 100.0


class TrainOptions(BaseModel):
    """Knobs of one training run (the profile says what; these say how)."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["auto", "spectral", "linear_probe", "combined", "finetune"] = "auto"
    device: str = "auto"
    seed: int = 0
    max_epochs: int = Field(default=300, ge=1)
    patience: int = Field(default=50, ge=1)
    batch_size: int = Field(default=32, ge=1)
    lr: float = Field(default=0.0, ge=0.0, description="0 picks the mode's default")
    weight_decay: float = 1e-4
    folds: int = Field(default=5, ge=2, le=20, description="blocked cross-validation folds")
    val_fraction: float = Field(default=0.25, gt=0.0, lt=1.0, description="finetune hold-out")
    refit: bool = Field(
        default=True,
        description="finetune: after early stopping on the held-out blocks, train a fresh "
        "network on every chip for the epochs they chose",
    )
    block_tiles: int = Field(default=3, ge=2, description="validation block side, in tiles")
    fold_by: Literal["auto", "blocks", "scenes"] = Field(
        default="auto",
        description="cross-validation blocks: square blocks, whole scenes, or whole scenes "
        "when at least two scenes hold positives and negatives (auto)",
    )
    positive_classes: list[str] | None = Field(
        default=None, description="class names counted as positive (else the profile's)"
    )
    negative_classes: list[str] | None = Field(
        default=None, description="class names counted as negative (else every other class)"
    )
    background_per_positive: float = Field(default=4.0, ge=0.0)
    colour_views: int = Field(
        default=0, ge=0, le=16, description="colour-jittered copies per chip (spectral learners)"
    )
    # Measured with benchmarks/quality_ablation.py on the four NEON cases, ``deep_lr`` on
    # 8 views: out-of-fold AP 0.719/0.846/0.490/0.644 -> 0.826/0.856/0.531/0.679, held
    # out 0.679/0.892/0.864/0.639 -> 0.722/0.879/0.882/0.683; the chosen learner's
    # held-out AP -> YELL 0.864 -> 0.882 and -> YELL2 0.639 -> 0.683, the same where a
    # spectral learner is chosen (OSBS -> YELL, YELL -> OSBS).
    deep_stages: bool = Field(
        default=True,
        description="deep features pool every backbone stage next to the last layer",
    )
    shifted_positives: int = Field(
        default=0, ge=0, le=16, description="copies of each positive chip, shifted within a stride"
    )
    min_background_distance_tiles: float = Field(default=0.3, ge=0.0)
    num_workers: int = Field(default=0, ge=0)
    hard_negative_labels: list[str] = Field(
        default_factory=list,
        description="label files whose negatives are hard negatives (analysts' rejections "
        "of high-scoring candidates; 'train --from-store' names its review labels here)",
    )
    hard_negative_weight: float = Field(
        default=HARD_NEGATIVE_WEIGHT,
        gt=0.0,
        le=MAX_HARD_NEGATIVE_WEIGHT,
        description="how much each hard negative chip weighs against a random background "
        "chip (1: the same)",
    )


@dataclass
class TrainingData:
    """Chips from every scene, with their datasets and provenance."""

    chips: list[Chip] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    datasets: list[ChipDataset] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    scenes: list[Scene] = field(default_factory=list)
    label_records: list[dict[str, Any]] = field(default_factory=list)
    background_dropped: int = 0
    hard: list[bool] = field(default_factory=list)  # per chip: a hard negative
    hard_weight: float = 1.0

    def dataset(self) -> torch.utils.data.ConcatDataset[Any]:
        return torch.utils.data.ConcatDataset(self.datasets)

    @property
    def labels(self) -> np.ndarray:
        return np.array([c.label for c in self.chips], dtype=np.int64)

    @property
    def hard_negatives(self) -> int:
        return int(sum(self.hard))

    @property
    def weights(self) -> np.ndarray | None:
        """Per chip, what it weighs in training: ``hard_weight`` for hard negatives, 1
        otherwise; None when every chip weighs 1 (no hard negative, or weight 1)."""
        if not any(self.hard) or self.hard_weight == 1.0:
            return None
        return np.where(np.array(self.hard, dtype=bool), self.hard_weight, 1.0)

    def hard_negative_record(self) -> dict[str, Any]:
        """The card's ``hard_negatives`` section: how many, and what each weighed."""
        return {
            "chips": self.hard_negatives,
            "weight": self.hard_weight,
            "of_negative_weight": round(self._hard_share(), 4),
        }

    def _hard_share(self) -> float:
        """Share of the negatives' total training weight the hard negatives hold."""
        hard = np.array(self.hard, dtype=bool)
        negative = self.labels == 0
        total = float(negative.sum() - hard.sum() + self.hard_weight * hard.sum())
        return self.hard_weight * float(hard.sum()) / total if total else 0.0


def collect_chips(
    profile: Profile,
    labels: Sequence[str | Path],
    imagery: Sequence[str | Path],
    opts: TrainOptions,
) -> TrainingData:
    """Open scenes, read labels onto each, and cut chips (positives, negatives, background)."""
    data = TrainingData()
    size = profile.tiling.tile_size
    rules = profile.labels
    positive_classes = opts.positive_classes or (rules.positive_classes if rules else None)
    negative_classes = opts.negative_classes or (rules.negative_classes if rules else None)
    seen: set[str] = set()
    other_image: dict[str, str] = {}  # label files naming another image: why, per file
    hard_files = {str(p) for p in opts.hard_negative_labels}
    data.hard_weight = opts.hard_negative_weight
    for scene_path in imagery:
        scene = open_scene(scene_path, sensor=profile.imagery.sensor)
        for warning in check_scene(profile, scene):
            log.warning(warning)
        preprocessor = ScenePreprocessor.build(profile.preprocess, scene)
        pos: list[tuple[float, float]] = []
        neg: list[tuple[float, float]] = []
        neg_hard: list[bool] = []
        for label_path in labels:
            try:
                label_set = load_labels(label_path, scene, positive_classes=positive_classes)
            except LabelsForOtherImage as exc:  # drawn on another of the given images
                other_image.setdefault(str(label_path), exc.what)
                continue
            other_image[str(label_path)] = ""
            seen.update(label_set.frame["label"].astype(str))
            label_set = _narrow_negatives(label_set, negative_classes)
            if len(label_set.positives()) + len(label_set.negatives()) == 0:
                continue
            pos += [(float(c), float(r)) for c, r in label_set.positives().centres()]
            centres = label_set.negatives().centres()
            neg += [(float(c), float(r)) for c, r in centres]
            neg_hard += [str(label_path) in hard_files] * len(centres)
            record = label_record(
                label_path,
                scene,
                label_set,
                positives=len(label_set.positives()),
                negatives=len(label_set.negatives()),
            )
            record["classes"] = _class_counts(label_set)
            data.label_records.append(record)
        if not pos:
            continue
        chips = sample_chips(
            scene,
            pos,
            neg,
            chip_size=size,
            n_background=round(opts.background_per_positive * len(pos)),
            min_distance_px=opts.min_background_distance_tiles * size,
            seed=opts.seed,
            allow_fewer=True,
        )
        # sample_chips keeps the order: positives, then negatives as given, then background.
        centred = chips[len(pos) : len(pos) + len(neg)]
        if any(c.source != NEGATIVE for c in centred) or len(centred) != len(neg):
            raise RuntimeError("sample_chips no longer returns one chip per negative, in order")
        hard = [False] * len(pos) + neg_hard
        hard += [False] * (len(chips) - len(hard))
        kept = _without_hidden_positives(chips, pos)
        data.background_dropped += len(chips) - len(kept)
        chips, hard = [chips[i] for i in kept], [hard[i] for i in kept]
        if opts.shifted_positives:
            reach = (size - profile.tiling.overlap) / 2
            rng = np.random.default_rng([opts.seed, len(data.scenes)])
            extra = shifted_copies(chips, scene, opts.shifted_positives, reach, rng)
            chips, hard = chips + extra, hard + [False] * len(extra)
        data.hard += hard
        data.offsets.append(len(data.chips))
        data.chips += chips
        data.groups += [scene.id] * len(chips)
        data.datasets.append(ChipDataset(scene, chips, preprocessor))
        data.scenes.append(scene)
    unmatched = [(path, why) for path, why in other_image.items() if why]
    if unmatched:
        path, why = unmatched[0]
        raise InputError(
            why,
            where=path,
            fix="Give the image each label file was drawn on with --imagery "
            "(every label file must match at least one of them).",
        )
    _check_classes(seen, positive_classes, negative_classes, labels)
    if not data.chips:
        raise InputError(
            "no labelled positive example falls inside any of the given scenes",
            where=", ".join(str(p) for p in labels),
            fix="Check that the labels and imagery cover the same place (and CRS), "
            "or that CSV image_path names match the image files.",
        )
    return data


def _without_hidden_positives(
    chips: list[Chip], positives: Sequence[tuple[float, float]]
) -> list[int]:
    """Indexes of the chips to keep: background chips that hold a positive label
    anywhere are not negatives, so they are dropped.

    Background is drawn away from positive centres, but a chip is larger than that
    distance, and in dense scenes (a forest canopy) many would show a labelled object
    off-centre while counting as "does not match"; screening scores whole tiles.
    """
    if not positives:
        return list(range(len(chips)))
    xy = np.asarray(positives, dtype=np.float64)
    kept = []
    for i, chip in enumerate(chips):
        if chip.source == BACKGROUND:
            inside = (
                (xy[:, 0] >= chip.col_off)
                & (xy[:, 0] < chip.col_off + chip.size)
                & (xy[:, 1] >= chip.row_off)
                & (xy[:, 1] < chip.row_off + chip.size)
            )
            if inside.any():
                continue
        kept.append(i)
    return kept


def _class_counts(label_set: LabelSet) -> dict[str, dict[str, Any]]:
    """Per class in the file: how many rows, and whether they counted as positive,
    negative or were not used."""
    frame = label_set.frame
    used = frame.groupby(frame["label"].astype(str))["positive"].agg(["size", "any"])
    out: dict[str, dict[str, Any]] = {}
    for name, count in sorted(label_set.report.classes.items()):
        if name in used.index:
            role = "positive" if bool(used.loc[name, "any"]) else "negative"
        else:
            role = "not used"
        out[name] = {"rows": int(count), "role": role}
    return out


def _narrow_negatives(label_set: LabelSet, negative_classes: Sequence[str] | None) -> LabelSet:
    """Only the named classes as negatives (positives kept); every other row is unused."""
    if not negative_classes:
        return label_set
    wanted = {c.strip().casefold() for c in negative_classes}
    frame = label_set.frame
    keep = frame["positive"] | frame["label"].astype(str).str.casefold().isin(wanted)
    return replace(label_set, frame=frame[keep].copy())


def _check_classes(
    seen: set[str],
    positive_classes: Sequence[str] | None,
    negative_classes: Sequence[str] | None,
    labels: Sequence[str | Path],
) -> None:
    """Refuse a named class that no label file holds, listing the classes found."""
    found = {c.casefold() for c in seen}
    named = [*(positive_classes or []), *(negative_classes or [])]
    missing = [c for c in named if c.strip().casefold() not in found]
    if missing:
        raise InputError(
            f"class(es) {', '.join(missing)} do not occur in the labels; classes found: "
            f"{', '.join(sorted(seen)) or 'none'}",
            where=", ".join(str(p) for p in labels),
            fix="Name classes as the label files spell them (--positive / --negative, or "
            "labels.positive_classes in the profile).",
        )


def _check_split(split: SplitResult, labels: np.ndarray, where: str) -> None:
    """Refuse a split that cannot validate (nothing held out) or train (no positive left)."""
    if split.val.size == 0:
        raise InputError(
            f"the labelled chips lie in {split.total_blocks} block(s) of {split.block_px} px: "
            "too few to hold one out for validation",
            where=where,
            fix="Label examples over a larger area or in more scenes, or use smaller "
            "validation blocks (block_tiles).",
        )
    if not labels[split.train].any():
        raise InputError(
            "every positive example lies in (or overlaps) the held-out validation blocks, "
            "leaving none to train on",
            where=where,
            fix="Label positives over a larger area or in more scenes.",
        )


class EarlyStopping:
    """Keep the weights of the best validation AP; stop after ``patience`` epochs without gain."""

    def __init__(self, module: nn.Module, patience: int) -> None:
        self.module, self.patience = module, patience
        self.best_ap, self.best_epoch = -1.0, 0
        self.state = copy.deepcopy(module.state_dict())

    def step(self, epoch: int, ap: float) -> bool:
        """Record one epoch; True when training should stop."""
        if ap > self.best_ap + 1e-6:
            self.best_ap, self.best_epoch = ap, epoch
            self.state = copy.deepcopy(self.module.state_dict())
            return False
        return epoch - self.best_epoch >= self.patience

    def restore(self, epochs_run: int) -> dict[str, Any]:
        """Load the best weights back; returns the history for the model card."""
        self.module.load_state_dict(self.state)
        return {"epochs_run": epochs_run, "best_epoch": self.best_epoch}


def _batches(dataset: Any, batch_size: int, num_workers: int) -> DataLoader[Any]:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)


def _fine_tuning(
    model: TileClassifier, data: TrainingData, indices: np.ndarray, device: torch.device,
    opts: TrainOptions,
) -> Callable[[], float]:  # fmt: skip
    """One epoch of fine-tuning over the chips ``indices`` (flips, rotations, jitter, the
    class-balanced and hard-negative-weighted loss) per call; returns its mean loss."""
    generator = torch.Generator().manual_seed(opts.seed)
    weights = loss_weights(data.labels, data.weights)
    loader = DataLoader(
        Subset(_Weighted(data.dataset(), weights), indices.tolist()),
        batch_size=opts.batch_size,
        shuffle=True,
        generator=generator,
        num_workers=opts.num_workers,
        drop_last=False,
    )
    labels = data.labels[indices]
    pos_weight = torch.tensor([(labels == 0).sum() / max(1, (labels == 1).sum())], device=device)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight.float(), reduction="none")
    optim = torch.optim.AdamW(
        model.parameters(), lr=opts.lr or 1e-4, weight_decay=opts.weight_decay
    )
    amp = device.type == "cuda"

    def epoch() -> float:
        model.train()
        losses = []
        for batch in loader:
            image, mask = random_dihedral(batch["image"], batch["mask"], generator)
            image = jitter(image, mask, generator).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = model(image)
            per_chip = loss_fn(logits.float(), batch["label"].float().to(device))
            loss = (per_chip * batch["weight"].float().to(device)).mean()
            optim.zero_grad()
            loss.backward()
            optim.step()
            losses.append(float(loss.detach()))
        return float(np.mean(losses)) if losses else float("nan")

    return epoch


def _finetune(
    model: TileClassifier,
    data: TrainingData,
    split: SplitResult,
    device: torch.device,
    opts: TrainOptions,
) -> dict[str, Any]:
    """Train the whole network on the training blocks; early stopping on validation AP."""
    run_epoch = _fine_tuning(model, data, split.train, device, opts)
    val_loader = _batches(Subset(data.dataset(), split.val.tolist()), opts.batch_size,
                          opts.num_workers)  # fmt: skip
    stopper = EarlyStopping(model, opts.patience)
    epochs: list[dict[str, float]] = []
    for epoch in range(1, opts.max_epochs + 1):
        loss = run_epoch()
        model.eval()
        scores, truth = _predict(model, val_loader, device)
        ap = average_precision(scores, truth)
        epochs.append({"epoch": epoch, "loss": round(loss, 5), "val_ap": round(ap, 5)})
        if stopper.step(epoch, ap):
            break
    return {**stopper.restore(epoch), "selection_epochs": epochs}


def _refit(
    spec: BackboneSpec, stats: tuple[list[float], list[float]], data: TrainingData,
    device: torch.device, opts: TrainOptions, epochs: int,
) -> tuple[TileClassifier, list[dict[str, float]]]:  # fmt: skip
    """A fresh network fine-tuned on every chip for the ``epochs`` the held-out blocks
    chose: the blocks held out to stop on are labels too (nothing is thrown away)."""
    torch.manual_seed(opts.seed)
    model = TileClassifier(build_backbone(spec), *stats).to(device)
    run_epoch = _fine_tuning(model, data, np.arange(len(data.chips)), device, opts)
    record = [{"epoch": e, "loss": round(run_epoch(), 5)} for e in range(1, epochs + 1)]
    return model.eval(), record


def loss_weights(labels: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    """Per-chip loss weights for fine-tuning: hard negatives weigh ``weights`` against
    the other negatives, rescaled so the negatives' total stays their count (the
    class balance is ``pos_weight``'s); positives weigh 1."""
    out = np.ones(labels.size) if weights is None else np.asarray(weights, np.float64).copy()
    negative = labels == 0
    if negative.any():
        out[negative] *= negative.sum() / out[negative].sum()
    out[~negative] = 1.0
    return out


class _Weighted(torch.utils.data.Dataset[Any]):
    """A chip dataset whose samples also carry their loss weight."""

    def __init__(self, dataset: torch.utils.data.Dataset[Any], weights: np.ndarray) -> None:
        self.dataset, self.weights = dataset, weights

    def __len__(self) -> int:
        return len(self.weights)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**self.dataset[i], "weight": float(self.weights[i])}


@torch.inference_mode()
def _predict(
    model: TileClassifier, loader: DataLoader[Any], device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    scores, truth = [], []
    for batch in loader:
        scores.append(torch.sigmoid(model(batch["image"].to(device))).float().cpu())
        truth.append(batch["label"])
    return torch.cat(scores).numpy(), torch.cat(truth).numpy().astype(bool)


def train_classifier(
    profile: Profile,
    labels: Sequence[str | Path],
    imagery: Sequence[str | Path],
    out_dir: str | Path,
    opts: TrainOptions | None = None,
    progress: Callable[[str], None] | None = None,
) -> ClassifyCard:
    """Train, validate on held-out blocks, save the model directory; returns the card
    as written (with the weights' hash)."""
    opts = opts or TrainOptions()
    say = progress or (lambda _msg: None)
    torch.manual_seed(opts.seed)
    started = time.perf_counter()
    device = pick_device(opts.device)
    data = collect_chips(profile, labels, imagery, opts)
    for record in data.label_records:
        say(f"labels {record['path']}: {record['report']}")
    if data.background_dropped:
        say(
            f"{data.background_dropped} random background chips left out: each held a "
            "positive label off its centre"
        )
    if data.hard_negatives:
        say(
            f"{data.hard_negatives} hard negative chips (rejected candidates) weigh "
            f"{data.hard_weight:g} each, {data.hard_negative_record()['of_negative_weight']:.0%} "
            "of the negatives' training weight"
        )
    if profile.model.weights is None and opts.mode == "finetune":
        say(
            f"warning: profile {profile.name} names no pretrained weights (model.weights: "
            "null): fine-tuning starts from a randomly initialised backbone"
        )
    if opts.mode != "finetune":
        from geoscreen.vision.select_train import train_by_selection

        return train_by_selection(profile, data, out_dir, opts, say, started)
    split = blocked_split(
        data.chips,
        data.groups,
        block_px=opts.block_tiles * profile.tiling.tile_size,
        val_fraction=opts.val_fraction,
        seed=opts.seed,
    )
    say(f"{len(data.chips)} chips ({int(data.labels.sum())} positive); {split.describe()}")
    _check_split(split, data.labels, ", ".join(str(p) for p in labels))
    spec = backbone_spec(profile, data.scenes[0])
    mean, std = input_stats(spec)
    model = TileClassifier(build_backbone(spec), mean, std).to(device).eval()
    dataset = data.dataset()
    val_loader = _batches(Subset(dataset, split.val.tolist()), opts.batch_size, opts.num_workers)
    history = _finetune(model, data, split, device, opts)
    scores, truth = _predict(model.eval(), val_loader, device)
    seconds = time.perf_counter() - started
    metrics = {
        "val_average_precision": average_precision(scores, truth),
        "val_positive_rate": float(truth.mean()) if truth.size else float("nan"),
        "val_pixel_baseline_average_precision": _pixel_baseline_ap(profile, data, split, opts.seed),
        **{
            f"val_{k}": v
            for k, v in at_threshold(scores, truth, profile.threshold).as_dict().items()
        },
    }
    say(
        f"validation AP {metrics['val_average_precision']:.3f} "
        f"(positive rate {metrics['val_positive_rate']:.3f}, per-pixel baseline AP "
        f"{metrics['val_pixel_baseline_average_precision']:.3f}) in {seconds:.0f} s"
    )
    if opts.refit:
        epochs = max(1, int(history["best_epoch"]))
        say(f"refitting on all {len(data.chips)} chips for {epochs} epochs")
        model, history["refit_epochs"] = _refit(spec, (mean, std), data, device, opts, epochs)
        seconds = time.perf_counter() - started
    card = _card(profile, spec, (mean, std), data, split, metrics, history, opts, device, seconds)
    return save_model_dir(model.cpu(), card, Path(out_dir), render_card_markdown)


def _pixel_baseline_ap(
    profile: Profile, data: TrainingData, split: SplitResult, seed: int
) -> float:
    """AP on the validation chips of the per-pixel baseline (the label pixel's values)."""
    from geoscreen.vision.learners import PIXEL_BASELINE, fit
    from geoscreen.vision.select_train import chip_features
    from geoscreen.vision.tilefeatures import SpectralContext

    channels = len(band_roles(profile, data.scenes[0]))
    spectral = SpectralContext(channels, profile.tiling.tile_size)
    pixels = chip_features(data, spectral, None, torch.device("cpu"), 64).pixel
    y = data.labels
    if y[split.train].min() == y[split.train].max():
        return float("nan")
    fitted = fit(PIXEL_BASELINE, pixels[split.train], y[split.train], seed)
    return average_precision(fitted.raw(pixels[split.val]), y[split.val].astype(bool))


def _card(
    profile: Profile,
    spec: BackboneSpec,
    stats: tuple[list[float], list[float]],
    data: TrainingData,
    split: SplitResult,
    metrics: dict[str, float],
    history: dict[str, Any],
    opts: TrainOptions,
    device: torch.device,
    seconds: float,
) -> ClassifyCard:
    labels = data.labels
    sections = model_card(
        profile,
        task="classify",
        output_meaning=f"score that a tile matches screening profile '{profile.name}'",
        spec=spec,
        stats=stats,
        data=data,
        split=split_record(
            split,
            opts.seed,
            train_positives=int(labels[split.train].sum()),
            val_positives=int(labels[split.val].sum()),
        ),
        metrics=metrics,
        training=training_record(opts, device, seconds, history, mode=opts.mode),
        limits=[
            HELD_OUT_LIMIT,
            *(
                [
                    "The validation metrics are those of the selection model, trained without "
                    "the held-out blocks; the model kept was then trained on every chip for "
                    "the number of epochs they chose."
                ]
                if "refit_epochs" in history
                else []
            ),
            f"Trained on {len(labels)} chips ({int(labels.sum())} positive): small data, wide "
            "uncertainty.",
            "Scores rank tiles for human review; a high score is not a finding.",
        ],
    )
    sections["hard_negatives"] = data.hard_negative_record()  # the loss weighed them so
    sections["region"] = region_record(data.scenes)  # screen/scan warn far from it
    return ClassifyCard.model_validate(sections)
