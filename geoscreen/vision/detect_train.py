"""Training an object detector for a ``task: detect`` profile from box or polygon labels.

Small data first: every labelled object is used. Scenes are read once into memory
(:mod:`geoscreen.vision.detect_scenes`); each epoch draws at least ``chips_per_epoch``
fresh crops of ``chip_size`` (default 256 px) on randomly shifted grids, so every
object and every empty patch (a negative) is seen, with scale jitter, copy-paste of
labelled objects, colour jitter, the dihedral flips/rotations and, when the profile asks
for it (``detection.colour_rotation``), a random turn of the colours on a share of the
chips, so that the one colour cue that marks objects at the training site is not all the
model learns (benchmarks/detect.py: trained on YELL, OSBS's AP 0.112 -> 0.261 over 3
seeds; lower where training and test sites share their colours). With
``detection.paired_colour_rotation`` two models train one after the other, the second
with colour rotation, and their boxes are fused
(:class:`~geoscreen.vision.detector.FusedDetector`): each phase below runs for each, and
the threshold is the fused boxes' own. A few hundred objects cover a few megapixels: an
epoch is defined by chips, not by passes.

Two phases (``refit``):

1. *selection*: a strip of ``val_fraction`` of each scene is held out (cut out of the
   training area, not worked around); after each epoch the strips are detected and
   scored. By default (``epoch_choice: fixed``) every planned epoch runs and the score
   threshold with the best F1 at the last one becomes the card's ``threshold`` (what
   ``screen`` applies unless the profile sets one); with ``held_out`` the AP at
   ``eval_iou`` picks the epoch too. A strip of a few dozen objects chose too few
   epochs (benchmarks/detect.py: OSBS -> YELL F1 0.279 -> 0.363 over 3 seeds with
   every epoch);
2. *refit*: a fresh model trains on all labels for that number of epochs. It has seen
   the strips, so it must score on them at least ``REFIT_SHARE`` of what the selection
   model scored; one that does not (it did not train) is trained again from the next
   seed, and after a second failure the selection model is kept (:func:`refit_on_all`).

Anchors are fitted to the labels' size distribution
(:func:`geoscreen.vision.detector.anchors_from_sizes`). Speed on a CPU: the stem and
first ``freeze_blocks`` trunk stages are frozen (no backward pass at full resolution),
batch-norm statistics are frozen, and the backbone learns at ``backbone_lr_factor``.
"""

from __future__ import annotations

import copy
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from tqdm import tqdm

from geoscreen.errors import InputError
from geoscreen.imagery.region import region_record
from geoscreen.imagery.scene import open_scene
from geoscreen.profiles import DetectionSettings, Profile
from geoscreen.vision.blob_train import train_blob_detector
from geoscreen.vision.blobs import ScaleSpaceBlobs
from geoscreen.vision.detect_baselines import (
    baseline_table,
    baseline_verdict,
    baselines_record,
    cue_limit,
    scene_cues,
)
from geoscreen.vision.detect_card import detection_card, render_detection_card
from geoscreen.vision.detect_data import (
    AugmentSettings,
    PastePool,
    SceneView,
    Window,
    augment_chip,
    grid_windows,
    hard_negative_windows,
    read_window,
    sample_windows,
    sides_of,
)
from geoscreen.vision.detect_infer import screening_detectors
from geoscreen.vision.detect_metrics import (
    best_threshold,
    detection_metrics,
    held_out_metrics,
    threshold_sweep,
)
from geoscreen.vision.detect_scenes import (
    TrainArea,
    area_lines,
    detector_config,
    load_detection_data,
)
from geoscreen.vision.detect_tta import predict_dihedral
from geoscreen.vision.detector import (
    BLOBS,
    Detector,
    DetectorConfig,
    anchors_from_sizes,
    build_detector,
    freeze_stages,
    fuse,
    fuse_results,
    save_detector,
)
from geoscreen.vision.inputs import scene_resolution_m
from geoscreen.vision.modelcard import DetectCard, DetectorBaselines, SampledHardNegatives
from geoscreen.vision.runtime import pick_device
from geoscreen.vision.weight_average import WeightAverage

log = logging.getLogger(__name__)

DEFAULT_CHIP_PX = 256  # many cheap steps; the detector is fully convolutional
# The share of the selection model's AP on the held-out strips that a refitted model,
# which trained on the strips, must reach; below it, it counts as not trained.
REFIT_SHARE = 0.75


class DetectTrainOptions(BaseModel):
    """Knobs of one detector training run (the profile says what; these say how)."""

    model_config = ConfigDict(extra="forbid")

    device: str = "auto"
    seed: int = 0
    max_epochs: int = Field(default=24, ge=1)
    patience: int = Field(default=6, ge=1)
    smooth_epochs: int = Field(default=3, ge=1, description="validation AP averaged over")
    epoch_choice: Literal["fixed", "held_out"] = Field(
        default="fixed",
        description="fixed: every planned epoch, the strips choose only the threshold (a "
        "strip of a few dozen objects cannot choose epochs: docs/detector.md); held_out: the epoch "
        "with the best smoothed held-out AP, stopping after `patience`",
    )
    batch_size: int = Field(default=4, ge=1)
    lr: float = Field(default=1e-3, gt=0.0, description="heads and feature pyramid")
    backbone_lr_factor: float = Field(default=0.1, ge=0.0, le=1.0)
    weight_decay: float = Field(default=1e-4, ge=0.0)
    warmup_steps: int = Field(default=20, ge=0)
    chip_size: int | None = Field(default=None, ge=32, description="default: 256 px or the tile")
    val_fraction: float = Field(default=0.25, gt=0.0, lt=1.0)
    refit: bool = Field(default=True, description="retrain on all labels for the chosen epochs")
    min_visible: float = Field(default=0.4, gt=0.0, le=1.0)
    eval_iou: float = Field(default=0.4, gt=0.0, le=1.0)
    sampling: Literal["grid", "objects"] = "grid"
    random_chips: float = Field(default=0.25, ge=0.0, description="per object-centred chip")
    chips_per_epoch: int = Field(default=64, ge=1, description="at least (the grid repeats)")
    scene_balance: bool | None = Field(
        default=None, description="grid: every scene as many chips per epoch as the largest "
        "(else in proportion to its area); None: the profile's (off unless it asks)",
    )  # fmt: skip
    scale_jitter: float = Field(default=1.25, ge=1.0, description="zoom in [1/x, x]")
    colour_jitter: float = Field(default=1.0, ge=0.0)
    colour_rotation: float | None = Field(
        default=None, ge=0.0, le=1.0, description="share of chips; None: the profile's"
    )
    copy_paste: int = Field(default=3, ge=0, description="most objects pasted per chip")
    fit_anchors: bool = Field(default=True, description="anchors from the label sizes")
    freeze_blocks: int = Field(default=11, ge=0, description="frozen trunk stages")
    channels_last: bool = True
    tile_norm: bool = Field(default=False, description="standardise each tile by its own stats")
    lr_schedule: Literal["constant", "cosine"] = Field(
        default="cosine", description="over the planned epochs (benchmarks/detect.py ablation)"
    )
    positive_classes: list[str] | None = Field(
        default=None, description="label classes that are objects (default: the only class)"
    )
    resolution_m: float | None = Field(
        default=None, gt=0.0, description="pixel size of images without georeference"
    )
    weight_average: float = Field(
        default=0.0, ge=0.0, lt=1.0, description="per-step decay of a moving average of the "
        "weights, validated and kept in place of the last step's (0: off)",
    )  # fmt: skip
    hard_negative_labels: list[str] = Field(
        default_factory=list,
        description="label files whose negative outlines are hard negatives (rejected "
        "detections): each gets a background chip every epoch",
    )
    train_area: TrainArea = Field(
        default="auto", description="the part of each scene trained on, every unlabelled "
        "pixel of it background: the labels' extent (auto: when it covers under half the "
        "scene) or the whole scene (detect_scenes.training_window)",
    )  # fmt: skip

    paired_colour_rotation: float | None = Field(
        default=None, ge=0.0, le=1.0, description="a second model with this share of chips "
        "colour-turned, boxes fused (0: one model); None: the profile's",
    )  # fmt: skip

    def for_profile(self, detection: DetectionSettings | None) -> DetectTrainOptions:
        """These options with what they leave to the profile filled from its ``detection``
        section (``colour_rotation``, ``paired_colour_rotation``, ``scene_balance``)."""
        fill: dict[str, float | bool] = {}
        if self.colour_rotation is None:
            fill["colour_rotation"] = detection.colour_rotation if detection else 0.0
        if self.paired_colour_rotation is None:
            fill["paired_colour_rotation"] = detection.paired_colour_rotation if detection else 0.0
        if self.scene_balance is None:
            fill["scene_balance"] = bool(detection and detection.scene_balance)
        return self.model_copy(update=fill) if fill else self

    def balances_scenes(self, scenes: int) -> bool:
        """Whether ``scenes`` labelled scenes get as many chips each (one scene has
        nothing to balance)."""
        return bool(self.scene_balance) and scenes > 1

    def member_options(self) -> list[DetectTrainOptions]:
        """The options of each model to train: these, and with ``paired_colour_rotation``
        a second one that turns the colours of that share of its chips."""
        if not self.paired_colour_rotation:
            return [self]
        paired = {"colour_rotation": self.paired_colour_rotation, "paired_colour_rotation": 0.0}
        return [self, self.model_copy(update=paired)]

    def augment(self) -> AugmentSettings:
        return AugmentSettings(
            dihedral=True,
            colour=self.colour_jitter,
            paste=self.copy_paste,
            scale_range=(1 / self.scale_jitter, self.scale_jitter),
            colour_rotation=self.colour_rotation or 0.0,
        )


@torch.inference_mode()
def predict_chips(
    model: Detector, images: Sequence[torch.Tensor], device: torch.device, batch_size: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Boxes and scores of each image (eval mode)."""
    model.eval()
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for start in range(0, len(images), batch_size):
        batch = torch.stack(list(images[start : start + batch_size])).to(device)
        for result in model(batch):
            out.append((result["boxes"].cpu().numpy(), result["scores"].cpu().numpy()))
    return out


@torch.inference_mode()
def predict_views(model: Detector, views: Sequence[SceneView], device: torch.device
                  ) -> list[tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """Boxes and scores on each whole view (eval mode; the detector pads to 32)."""
    return predict_chips(model, [v.image for v in views], device, 1)


@torch.inference_mode()
def predict_views_tta(model: Detector, views: Sequence[SceneView], device: torch.device
                      ) -> list[tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """:func:`predict_views` as ``screen --tta`` detects: each model (both of a pair) under
    the 8 flips/rotations, boxes fused, then a pair's two sets fused."""
    model.eval()
    detectors = screening_detectors(model)
    out = []
    for view in views:
        image = view.image[None].to(device)
        found = [predict_dihedral(detector, image) for detector in detectors]
        result = found[0][0] if len(found) == 1 else fuse_results(found)[0]
        out.append((result["boxes"].numpy(), result["scores"].numpy()))
    return out


def strips_ap(predictions: Sequence[tuple[np.ndarray, np.ndarray]],
              views: Sequence[SceneView], iou: float) -> float:  # fmt: skip
    """AP at ``iou`` of ``predictions`` on ``views`` (0 where undefined)."""
    ap = float(detection_metrics(predictions, [v.boxes for v in views], iou, 1.0)
               ["average_precision"])  # fmt: skip
    return 0.0 if math.isnan(ap) else ap


# -- training -----------------------------------------------------------------------------
def _train_mode(model: Detector) -> None:
    """Train mode, with the backbone's batch-norm layers kept in eval mode (frozen stats)."""
    model.train()
    for module in model.pyramid.body.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def _optimizer(model: Detector, opts: DetectTrainOptions) -> torch.optim.Optimizer:
    body = {id(p) for p in model.pyramid.body.parameters()}
    if opts.backbone_lr_factor == 0:
        for p in model.pyramid.body.parameters():
            p.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    backbone = [p for p in trainable if id(p) in body]
    rest = [p for p in trainable if id(p) not in body]
    groups: list[dict[str, Any]] = [{"params": rest, "lr": opts.lr}]
    if backbone:
        groups.append({"params": backbone, "lr": opts.lr * opts.backbone_lr_factor})
    return torch.optim.AdamW(groups, weight_decay=opts.weight_decay)


def new_model(config: DetectorConfig, opts: DetectTrainOptions, device: torch.device) -> Detector:
    """A fresh detector with the early stages frozen, in the memory layout chosen; its new
    layers start from ``opts.seed`` (the caller's random state is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(opts.seed)
        model = build_detector(config)
    freeze_stages(model, opts.freeze_blocks)
    model = model.to(device)
    if opts.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def lr_decay(schedule: str, done: float) -> float:
    """The learning-rate factor after ``done`` (0-1) of the planned epochs: 1 throughout
    (``constant``), or half a cosine down to 5% (``cosine``)."""
    if schedule == "cosine":
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(max(done, 0.0), 1.0)))
    return 1.0


def run_training(
    model: Detector,
    views: list[SceneView],
    opts: DetectTrainOptions,
    device: torch.device,
    epochs: int,
    *,
    val: list[SceneView] | None = None,
    bar: tqdm[Any] | None = None,
) -> dict[str, Any]:
    """Train for ``epochs`` (or until ``patience`` epochs pass without a better validation
    AP); with ``val``, keep the best epoch's weights and its F1-optimal threshold.

    "Better" compares the mean AP of the last ``smooth_epochs`` epochs: on strips of a
    few dozen objects one epoch's AP jumps by 0.1 (docs/detector.md), and the single best epoch
    then stopped training early and refitted for too few epochs. With ``epoch_choice``
    ``fixed`` every epoch runs and the last one is kept (its threshold is the strips' F1
    optimum)."""
    rng = np.random.default_rng(opts.seed)
    torch.manual_seed(opts.seed)
    optim = _optimizer(model, opts)
    base = [g["lr"] for g in optim.param_groups]
    pool = PastePool.from_views(views)
    settings = opts.augment()
    size = int(opts.chip_size or 0)
    history: list[dict[str, float]] = []
    best: dict[str, Any] = {"ap": -1.0, "epoch": 0, "threshold": None, "f1": None}
    recent: list[float] = []  # validation APs so far
    fixed = opts.epoch_choice == "fixed"
    state = None
    step = 0
    average = WeightAverage(model, opts.weight_average) if opts.weight_average else None
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        _train_mode(model)
        windows: list[Window] = []
        while len(windows) < opts.chips_per_epoch:
            if opts.sampling == "grid":
                windows += grid_windows(views, size, rng, settings.scale_range,
                                        bool(opts.scene_balance))  # fmt: skip
            else:
                windows += sample_windows(views, size, rng, settings.scale_range, opts.random_chips)
        hard = hard_negative_windows(views, size, rng, settings.scale_range)
        if hard:  # one background chip around every rejected outline, mixed in
            windows += hard
            windows = [windows[i] for i in rng.permutation(len(windows))]
        total, steps = 0.0, 0
        n_batches = max(1, math.ceil(len(windows) / opts.batch_size))
        for start in range(0, len(windows), opts.batch_size):
            images, boxes = [], []
            for w in windows[start : start + opts.batch_size]:
                image, valid, chip_boxes = read_window(views[w.view], w, size, opts.min_visible)
                image, box_t = augment_chip(image, valid, chip_boxes, pool, settings, rng,
                                            scale=size / w.side)  # fmt: skip
                images.append(image)
                boxes.append(box_t)
            batch = torch.stack(images).to(device)
            if opts.channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            step += 1
            warm = min(1.0, step / opts.warmup_steps) if opts.warmup_steps else 1.0
            done = (epoch - 1 + start / opts.batch_size / n_batches) / epochs
            decay = lr_decay(opts.lr_schedule, done)
            for group, lr in zip(optim.param_groups, base, strict=True):
                group["lr"] = lr * warm * decay
            losses = model(batch, [b.to(device) for b in boxes])
            loss = sum(losses.values())
            optim.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            optim.step()
            if average is not None:
                average.update(model)
            total, steps = total + float(loss.item()), steps + 1
        record: dict[str, float] = {"epoch": epoch, "loss": round(total / max(steps, 1), 4),
                                    "chips": len(windows)}  # fmt: skip
        if val:
            with average.applied(model) if average is not None else nullcontext(model):
                predictions = predict_views(model, val, device)
            truths = [v.boxes for v in val]
            ap = strips_ap(predictions, val, opts.eval_iou)
            record["val_ap"] = round(ap, 4)
            recent.append(ap)
            smoothed = float(np.mean(recent[-opts.smooth_epochs :]))
            record["val_ap_smoothed"] = round(smoothed, 4)
            better = epoch == epochs if fixed else smoothed > best["ap"] + 1e-6
            if better:
                threshold, f1 = best_threshold(predictions, truths, opts.eval_iou)
                best = {"ap": smoothed, "epoch": epoch, "threshold": threshold, "f1": f1}
                # fixed keeps the last epoch: the weights in place already are the ones
                state = None if fixed else _weights(model, average)
        record["seconds"] = round(time.perf_counter() - started, 2)
        history.append(record)
        if bar is not None:
            shown = {"epoch": epoch, "loss": f"{record['loss']:.3f}"}
            if "val_ap" in record:  # the refit on all labels holds nothing out
                shown["val_ap"] = f"{record['val_ap']:.3f}"
            bar.set_postfix(shown)
            bar.update(1)
        if val and not fixed and epoch - best["epoch"] >= opts.patience:
            break
    if average is not None:
        average.copy_to(model)
    if state is not None:
        model.load_state_dict(state)
    return {"epochs": history, "best": best}


def _weights(model: Detector, average: WeightAverage | None) -> dict[str, torch.Tensor]:
    """A copy of the weights that were validated: the average's where there is one."""
    state = copy.deepcopy(model.state_dict())
    if average is not None:
        state.update(copy.deepcopy(average.average))
    return state


def refit_on_all(
    config: DetectorConfig,
    views: list[SceneView],
    strips: list[SceneView],
    selection_ap: float,
    opts: DetectTrainOptions,
    device: torch.device,
    epochs: int,
    show: bool,
    say: Callable[[str], None],
) -> tuple[Detector | None, list[dict[str, float]], dict[str, Any]]:
    """Train a fresh model on every label for ``epochs``, and check that it trained.

    A detector can fail to train from one initialisation (its classifier settles on
    "nothing here": loss flat from the first epoch; seen once in the benchmark runs) and
    would then ship with the card of the selection model that did train. The refitted
    model has seen the held-out strips, so it must score on them at least about as well
    as the selection model that never saw them (``REFIT_SHARE`` of its AP). If it
    does not, a second model trains from the next seed; if that fails too, the result
    is None and the caller keeps the selection model. Returns the model, its epochs
    and the check's record for the card."""
    selection_ap = 0.0 if math.isnan(selection_ap) else selection_ap
    check: dict[str, Any] = {"selection_ap": round(selection_ap, 4), "seeds": []}
    history: list[dict[str, float]] = []
    for attempt in range(2):
        run_opts = opts.model_copy(update={"seed": opts.seed + attempt})
        with tqdm(total=epochs, desc="refit on all", unit="epoch", file=sys.stderr,
                  disable=not show) as bar:  # fmt: skip
            model = new_model(config, run_opts, device)
            history = run_training(model, views, run_opts, device, epochs, bar=bar)["epochs"]
        refit_ap = strips_ap(predict_views(model, strips, device), strips, opts.eval_iou)
        check["seeds"].append({"seed": run_opts.seed, "strips_ap": round(refit_ap, 4)})
        if refit_ap >= REFIT_SHARE * selection_ap:
            return model, history, {**check, "kept": "refit"}
        say(f"warning: the model refitted on all labels (seed {run_opts.seed}) scores AP "
            f"{refit_ap:.3f} on the strips it trained on, against {selection_ap:.3f} for "
            "the selection model that never saw them: it did not train; "
            + ("training it again from the next seed" if attempt == 0 else
               "keeping the selection model (trained without the strips)"))  # fmt: skip
    return None, history, {**check, "kept": "selection"}


def fitted_config(config: DetectorConfig, views: Sequence[SceneView], resolution_m: float,
                  fit: bool) -> DetectorConfig:  # fmt: skip
    """``config`` with anchors (and the typical object size) from the labels' sizes."""
    if not fit:
        return config
    boxes = np.concatenate([v.boxes for v in views])
    sizes = sides_of(boxes)
    anchors = anchors_from_sizes(sizes.tolist())
    median = float(np.median(sizes)) * resolution_m
    return replace(config, anchor_px=anchors, object_size_m=round(median, 4))


def train_detector(
    profile: Profile,
    labels: Sequence[str | Path],
    imagery: Sequence[str | Path],
    out_dir: str | Path,
    opts: DetectTrainOptions | None = None,
    progress: Callable[[str], None] | None = None,
) -> DetectCard:
    """Select epochs and threshold on held-out strips, refit on all labels, save; returns
    the card as written (with the weights' hash)."""
    opts = (opts or DetectTrainOptions()).for_profile(profile.detection)
    say = progress or (lambda _msg: None)
    started, cpu_started = time.perf_counter(), time.process_time()
    device = pick_device(opts.device)
    if not imagery:
        raise InputError("no imagery given", fix="Give at least one scene (--imagery).")
    first = open_scene(imagery[0], sensor=profile.imagery.sensor)
    resolution = scene_resolution_m(profile, first, opts.resolution_m)
    base_config = replace(detector_config(profile, first, resolution), tile_norm=opts.tile_norm)
    chip = opts.chip_size or min(DEFAULT_CHIP_PX, base_config.tile_size)
    data = load_detection_data(profile, labels, imagery, opts.positive_classes,
                               opts.hard_negative_labels, opts.train_area)  # fmt: skip
    for line in area_lines(data):
        say(line)
    opts = opts.model_copy(
        update={"chip_size": chip, "scene_balance": opts.balances_scenes(len(data.views))}
    )
    train_views, val_views = data.split(opts.val_fraction, opts.seed, opts.min_visible)
    n_train, n_val = (sum(len(v.boxes) for v in vs) for vs in (train_views, val_views))
    if n_train == 0 or n_val == 0:
        raise InputError(
            f"{data.objects} labelled objects cannot be split into training ({n_train}) and "
            f"validation ({n_val}) strips",
            where=", ".join(str(p) for p in labels),
            fix="Label more objects, spread over the scene.",
        )
    if base_config.architecture == BLOBS:  # fitted in seconds, no epochs
        fitted = replace(base_config, backbone=None, mean=(), std=())  # no network to feed
        return train_blob_detector(profile, fitted, data, (train_views, val_views), opts,
                                   out_dir, say)  # fmt: skip
    config = fitted_config(base_config, train_views, resolution, opts.fit_anchors)
    balanced = " (as many chips of each)" if opts.scene_balance else ""
    say(f"{data.objects} objects in {len(data.views)} scenes{balanced}; selection: "
        f"{n_train} training, "
        f"{n_val} in held-out strips ({opts.val_fraction:.0%} of each scene); "
        f"anchors (px) {list(config.anchor_sizes)}")  # fmt: skip
    show = progress is not None
    members = opts.member_options()
    models, selections = [], []
    for i, member in enumerate(members):
        desc = "selecting" + (f" (model {i + 1} of {len(members)})" if len(members) > 1 else "")
        with tqdm(total=opts.max_epochs, desc=desc, unit="epoch", file=sys.stderr,
                  disable=not show) as bar:  # fmt: skip
            models.append(new_model(config, member, device))
            selections.append(run_training(models[-1], train_views, member, device,
                                           opts.max_epochs, val=val_views, bar=bar))  # fmt: skip
    model = fuse(config, models)
    config = model.config
    selection = selections[0]
    chosen = dict(selection["best"])
    predictions = predict_views(model, val_views, device)
    truths = [v.boxes for v in val_views]
    sweep = threshold_sweep(predictions, truths, opts.eval_iou)  # for both thresholds below
    if len(members) > 1:  # the fused boxes' own F1-optimal threshold
        chosen["threshold"], chosen["f1"] = best_threshold(
            predictions, truths, opts.eval_iou, sweep=sweep
        )
    threshold = float(chosen["threshold"] or profile.threshold)
    metrics = held_out_metrics(predictions, truths, opts.eval_iou, threshold, sweep)
    say(f"held-out strips: AP@0.4 {metrics['val_average_precision@0.4']:.3f}, "
        f"F1@0.4 {metrics['val_f1@0.4']:.3f} at threshold {threshold:g} "
        f"(epoch {chosen['epoch']})")  # fmt: skip
    # screen --tta fuses the 8 flips/rotations, whose scores differ: a threshold of its own
    tta_predictions = predict_views_tta(model, val_views, device)
    tta_threshold, _ = best_threshold(tta_predictions, truths, opts.eval_iou)
    at = f"@{opts.eval_iou:g}"
    tta_metrics = detection_metrics(tta_predictions, truths, opts.eval_iou, tta_threshold)
    metrics[f"tta_val_average_precision{at}"], metrics[f"tta_val_f1{at}"] = (
        tta_metrics["average_precision"], tta_metrics["f1"])  # fmt: skip
    say(f"with --tta: AP{at} {tta_metrics['average_precision']:.3f}, F1{at} "
        f"{tta_metrics['f1']:.3f} at threshold {tta_threshold:g}")  # fmt: skip
    blobs = ScaleSpaceBlobs(bands=profile.imagery.bands, iou=opts.eval_iou).fit(train_views)
    blob_cue = f"{blobs.cue}, k {blobs.width:g}"
    table = baseline_table(train_views, val_views, predictions, opts.eval_iou, opts.seed, blobs)
    pixel, chance = table["pixel_peaks"]["ap"], table["random_boxes"]["ap"]
    say(f"baselines on the same strips: pixel peaks AP@{opts.eval_iou:g} {pixel:.3f}, "
        f"scale-space blobs ({blob_cue}) {table['scale_space_blobs']['ap']:.3f}, "
        f"random boxes {chance:.3f}")  # fmt: skip
    verdict = baseline_verdict(table)
    if verdict:
        say(f"warning: {verdict}")
    cues = scene_cues(data.views, data.scene_names, profile.imagery.bands, opts.eval_iou)
    if cues:
        say(
            "what marks the objects of each scene (scale-space blobs fitted on its labels "
            "alone): " + ", ".join(f"{c['scene']} {c['cue']} ({c['objects']})" for c in cues)
        )
    differ = cue_limit(cues)
    history: dict[str, Any] = {"selection_epochs": selection["epochs"],
                               "best_epoch": int(chosen["epoch"]),
                               "epochs_run": len(selection["epochs"])}  # fmt: skip
    if len(members) > 1:  # each model's strips AP, as its run recorded it at the kept epoch
        history["members"] = [
            {"colour_rotation": m.colour_rotation, "best_epoch": int(sel["best"]["epoch"]),
             "strips_ap": sel["epochs"][int(sel["best"]["epoch"]) - 1]["val_ap"]}
            for m, sel in zip(members, selections, strict=True)
        ]  # fmt: skip
    refitted = False
    if opts.refit:
        full = fitted_config(base_config, data.views, resolution, opts.fit_anchors)
        refits, checks = [], []
        for i, (member, sel) in enumerate(zip(members, selections, strict=True)):
            ap = history["members"][i]["strips_ap"] if len(members) > 1 else table["model"]["ap"]
            refit, refit_epochs, check = refit_on_all(
                full, data.views, val_views, float(ap), member, device,
                max(1, int(sel["best"]["epoch"])), show, say)  # fmt: skip
            refits.append(refit)
            checks.append(check)
            history.setdefault("refit_epochs", refit_epochs)
        every = all(r is not None for r in refits)  # else the selection models, all of them
        history["refit_check"] = checks[0] if len(members) == 1 else {
            "members": checks, "kept": "refit" if every else "selection"}  # fmt: skip
        if every:
            model = fuse(full, [r for r in refits if r is not None])
            config, refitted = model.config, True
    history["epochs"] = history["selection_epochs"] + history.get("refit_epochs", [])
    seconds = time.perf_counter() - started
    history["cpu_seconds"] = round(time.process_time() - cpu_started, 1)  # all threads
    history["chip_px"] = opts.chip_size
    history["threshold_f1@0.4"] = chosen["f1"]
    say(f"trained in {seconds:.0f} s")
    model = model.to(memory_format=torch.contiguous_format)
    card = detection_card(profile, config, data, (n_train, n_val), metrics, history, opts,
                          device, seconds, threshold, refitted, tta_threshold)  # fmt: skip
    card = card.model_copy(
        update={
            # sampled for, not weighted: see detect_data
            "hard_negatives": SampledHardNegatives(
                chips=sum(len(v.negatives) for v in data.views), chips_per_epoch_each=1
            ),
            # screen/scan warn far from it
            "region": region_record(data.scenes),
            "baselines": DetectorBaselines.model_validate(
                baselines_record(table, opts.eval_iou, blob_cue, cues)
            ),
            "limits": ([verdict[0].upper() + verdict[1:]] if verdict else [])
            + ([differ] if differ else [])
            + card.limits,
        }
    )
    digest = save_detector(model.cpu(), card, out_dir, render_detection_card(card))
    return card.model_copy(update={"model_sha256": digest})
