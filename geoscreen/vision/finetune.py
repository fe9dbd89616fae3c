"""Fine-tuning a tile classifier: the whole network, for a GPU.

Flips, rotations and brightness/contrast jitter, a class-balanced loss in which analysts'
rejections weigh as hard negatives. Early stopping on the AP of spatially blocked
validation chips chooses the number of epochs; then a fresh network trains on every chip
for that many (``TrainOptions.refit``), because with a few hundred labels the held-out
blocks are too many labels to throw away (the ``finetune`` row of
benchmarks/quality.py, OSBS -> YELL: 0.712 / 0.711 / 0.509 -> 0.720 / 0.715 / 0.589
over 3 seeds). The card keeps the selection model's validation metrics and says so.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from geoscreen.errors import InputError
from geoscreen.imagery.region import region_record
from geoscreen.profiles import Profile
from geoscreen.ranking import at_threshold, average_precision
from geoscreen.vision.augment import jitter, random_dihedral
from geoscreen.vision.backbones import BackboneSpec, build_backbone, input_stats
from geoscreen.vision.cards import HELD_OUT_LIMIT, model_card, split_record, training_record
from geoscreen.vision.classifier import TileClassifier, render_card_markdown
from geoscreen.vision.inputs import backbone_spec, band_roles
from geoscreen.vision.modelcard import ClassifyCard
from geoscreen.vision.modeldir import save_model_dir
from geoscreen.vision.split import SplitResult, blocked_split
from geoscreen.vision.train import TrainingData, TrainOptions


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
    val_loader: DataLoader[Any],
    device: torch.device,
    opts: TrainOptions,
) -> dict[str, Any]:
    """Train the whole network on the training blocks; early stopping on the AP of the
    validation chips (``val_loader``)."""
    run_epoch = _fine_tuning(model, data, split.train, device, opts)
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


def train_finetuned(
    profile: Profile,
    data: TrainingData,
    labels: Sequence[str | Path],
    out_dir: str | Path,
    opts: TrainOptions,
    device: torch.device,
    say: Callable[[str], None],
    started: float,
) -> ClassifyCard:
    """Fine-tune on the training blocks with early stopping on the held-out ones, refit
    on every chip for the epochs they chose (``opts.refit``), save the model directory;
    returns the card as written."""
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
    val_loader = _batches(Subset(data.dataset(), split.val.tolist()), opts.batch_size,
                          opts.num_workers)  # fmt: skip
    history = _finetune(model, data, split, val_loader, device, opts)
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
    sections["data"]["background_chips"] = data.background_chips
    sections["hard_negatives"] = data.hard_negative_record()  # the loss weighed them so
    sections["region"] = region_record(data.scenes)  # screen/scan warn far from it
    return ClassifyCard.model_validate(sections)
