"""Training an object detector for a ``task: detect`` profile from box or polygon labels.

Each scene is cut into square chips (half a tile unless objects are too large:
:func:`chip_size_for`) on a regular grid (overlapping by
``chip_overlap``, shifted inside the scene at its edges). A chip's targets are the
labelled objects' boxes (polygons give their bounding boxes) clipped to it;
remnants with less than ``min_visible`` of their area inside, or thinner than 2 px,
are dropped. Chips without objects are negatives; ``negatives_per_positive`` of
them per chip with objects are kept (seeded). Validation holds out whole
spatial blocks (:func:`geoscreen.vision.split.blocked_split`); training chips
overlapping a validation chip are dropped.

Training: AdamW, backbone at ``backbone_lr_factor`` of the head learning rate, its
batch-norm statistics frozen (batches of a few chips are too small to estimate
them), random flips/rotations that move the boxes with the image
(:func:`geoscreen.vision.boxes.dihedral_boxes`) and brightness/contrast jitter.
After each epoch the validation chips are scored: object-level average precision
at IoU ``eval_iou`` (greedy matching in score order, recall over all validation
objects; :mod:`geoscreen.evaluate.metrics`) picks the epoch whose weights are kept,
and training stops after ``patience`` epochs without gain.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from geoscreen.errors import ConfigError, InputError
from geoscreen.evaluate.metrics import (
    match_hungarian,
    match_in_score_order,
    object_average_precision,
)
from geoscreen.imagery.chips import Chip
from geoscreen.imagery.dataset import ChipDataset
from geoscreen.imagery.preprocess import ScenePreprocessor
from geoscreen.imagery.scene import Scene, open_scene
from geoscreen.labels import LabelSet, load_labels
from geoscreen.profiles import DetectionSettings, Profile, check_scene
from geoscreen.sites.match import MatchRule
from geoscreen.vision.augment import DIHEDRAL, dihedral, jitter
from geoscreen.vision.backbones import input_stats
from geoscreen.vision.boxes import clip_boxes, dihedral_boxes
from geoscreen.vision.cards import label_record
from geoscreen.vision.detect_card import detection_card, render_detection_card
from geoscreen.vision.detector import Detector, DetectorConfig, build_detector, save_detector
from geoscreen.vision.runtime import pick_device
from geoscreen.vision.split import SplitResult, blocked_split
from geoscreen.vision.train import EarlyStopping, _check_split, backbone_spec

log = logging.getLogger(__name__)

_AREAL = ("Polygon", "MultiPolygon")


class DetectTrainOptions(BaseModel):
    """Knobs of one detector training run (the profile says what; these say how)."""

    model_config = ConfigDict(extra="forbid")

    device: str = "auto"
    seed: int = 0
    max_epochs: int = Field(default=40, ge=1)
    patience: int = Field(default=8, ge=1)
    batch_size: int = Field(default=4, ge=1)
    lr: float = Field(default=5e-4, gt=0.0, description="heads and feature pyramid")
    backbone_lr_factor: float = Field(default=0.2, ge=0.0, le=1.0)
    weight_decay: float = Field(default=1e-4, ge=0.0)
    chip_size: int | None = Field(default=None, ge=32, description="default: see chip_size_for")
    chip_overlap: float = Field(default=0.5, ge=0.0, lt=1.0, description="fraction of a chip")
    val_fraction: float = Field(default=0.25, gt=0.0, lt=1.0)
    block_chips: int = Field(default=1, ge=1, description="validation block side, in chips")
    negatives_per_positive: float = Field(default=0.5, ge=0.0)
    min_visible: float = Field(default=0.4, gt=0.0, le=1.0)
    eval_iou: float = Field(default=0.5, gt=0.0, le=1.0)
    resolution_m: float | None = Field(
        default=None, gt=0.0, description="pixel size of images without georeference"
    )


@dataclass
class DetectionData:
    """Training chips of every scene with their boxes (chip pixels) and provenance."""

    chips: list[Chip] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)
    object_ids: list[np.ndarray] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    datasets: list[ChipDataset] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    scenes: list[Scene] = field(default_factory=list)
    label_records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def labels(self) -> np.ndarray:
        """1 for chips holding at least one object, else 0."""
        return np.array([c.label for c in self.chips], dtype=np.int64)

    def objects_in(self, indexes: Sequence[int] | np.ndarray) -> int:
        """Distinct labelled objects (whole or in part) in the chips ``indexes``."""
        ids = [self.object_ids[int(i)] for i in indexes]
        return int(np.unique(np.concatenate(ids)).size) if ids else 0

    def image(self, i: int) -> torch.Tensor:
        """Preprocessed image (C, S, S) of chip ``i``."""
        k = int(np.searchsorted(self.offsets, i, side="right")) - 1
        return self.datasets[k][i - self.offsets[k]]["image"]


def scene_resolution_m(profile: Profile, scene: Scene, given: float | None = None) -> float:
    """Pixel size in metres: the scene's own, else ``given``, else the profile's nominal one.

    Images without georeference take the geometric mean of ``imagery.resolution_m``.
    """
    res = scene.resolution_m
    if res is not None:
        return math.sqrt(res[0] * res[1])
    if given is not None:
        return given
    if profile.imagery.resolution_m is not None:
        low, high = profile.imagery.resolution_m
        return math.sqrt(low * high)
    raise ConfigError(
        "the image has no georeference, so its pixel size (needed for the object size "
        "in pixels) is unknown",
        where=scene.uri,
        fix="Set imagery.resolution_m in the profile, or give the pixel size in metres.",
    )


def detector_config(profile: Profile, scene: Scene, resolution_m: float) -> DetectorConfig:
    """The detector for ``profile`` on ``scene``'s bands at ``resolution_m``."""
    settings: DetectionSettings | None = profile.detection
    if profile.model.task != "detect" or settings is None:
        raise ConfigError(
            f"profile {profile.name} is not a detection profile (model.task: detect)",
            fix="Use 'geoscreen train' with a classification profile's own trainer.",
        )
    spec = backbone_spec(profile, scene)
    mean, std = input_stats(spec)
    return DetectorConfig(
        architecture=settings.architecture,
        backbone=spec,
        mean=tuple(mean),
        std=tuple(std),
        object_size_m=settings.object_size_m,
        resolution_m=resolution_m,
        tile_size=profile.tiling.tile_size,
        max_detections=settings.max_detections,
        nms_iou=settings.nms_iou,
        score_threshold=settings.score_threshold,
        fpn_channels=settings.fpn_channels,
    )


def object_boxes(label_set: LabelSet) -> np.ndarray:
    """Pixel boxes of the positive labels; points cannot train a detector."""
    positives = label_set.positives()
    types = positives.frame.geometry.geom_type
    if len(positives) and not types.isin(_AREAL).all():
        raise InputError(
            f"{int((~types.isin(_AREAL)).sum())} positive labels are points: a detector "
            "learns from boxes or polygons",
            where=label_set.report.source,
            fix="Outline each object (box or polygon), or train a tile classifier instead.",
        )
    return positives.boxes_px()


def chip_size_for(config: DetectorConfig) -> int:
    """Default training chip: half a tile (more, cheaper steps and finer validation blocks;
    the detector is fully convolutional), unless that is under twice the object size."""
    half = config.tile_size // 2
    return half if half >= 2 * config.object_size_px else config.tile_size


def chip_offsets(length: int, size: int, stride: int) -> list[int]:
    """Chip starts along one axis: every ``stride``, the last one flush with the edge."""
    if length <= size:
        return [0]
    starts = list(range(0, length - size, stride))
    return [*starts, length - size]


def collect_detection_chips(
    profile: Profile,
    labels: Sequence[str | Path],
    imagery: Sequence[str | Path],
    opts: DetectTrainOptions,
    size: int,
) -> DetectionData:
    """Open scenes, place the labels, and cut chips with their boxes (module docstring)."""
    data = DetectionData()
    rng = np.random.default_rng(opts.seed)
    stride = max(1, round(size * (1 - opts.chip_overlap)))
    problems: list[str] = []
    next_id = 0  # objects are numbered across scenes
    for scene_path in imagery:
        scene = open_scene(scene_path, sensor=profile.imagery.sensor)
        for warning in check_scene(profile, scene):
            log.warning(warning)
        boxes = _scene_boxes(scene, labels, data, problems)
        if boxes is None:
            continue
        chips, chip_boxes, chip_ids = [], [], []
        for row in chip_offsets(scene.height, size, stride):
            for col in chip_offsets(scene.width, size, stride):
                inside, keep = clip_boxes(boxes, col, row, size, size, min_visible=opts.min_visible)
                label = int(len(inside) > 0)
                chips.append(Chip(row, col, size, label, "objects" if label else "empty"))
                chip_boxes.append(inside.astype(np.float32))
                chip_ids.append(np.flatnonzero(keep) + next_id)
        next_id += len(boxes)
        empty = [i for i, c in enumerate(chips) if not c.label]
        n_pos = len(chips) - len(empty)
        n_neg = min(len(empty), round(opts.negatives_per_positive * n_pos))
        dropped = set(rng.permutation(empty)[n_neg:].tolist()) if empty else set()
        kept = [i for i in range(len(chips)) if i not in dropped]
        data.offsets.append(len(data.chips))
        data.chips += [chips[i] for i in kept]
        data.boxes += [chip_boxes[i] for i in kept]
        data.object_ids += [chip_ids[i] for i in kept]
        data.groups += [scene.id] * len(kept)
        preprocessor = ScenePreprocessor.build(profile.preprocess, scene)
        data.datasets.append(ChipDataset(scene, [chips[i] for i in kept], preprocessor))
        data.scenes.append(scene)
    if not data.chips:
        raise InputError(
            "no labelled object falls inside any of the given scenes"
            + (f" ({'; '.join(problems[:3])})" if problems else ""),
            where=", ".join(str(p) for p in labels),
            fix="Check that the labels and imagery cover the same place (and CRS), "
            "or that CSV image_path / VOC filename names match the image files.",
        )
    return data


def _scene_boxes(
    scene: Scene, labels: Sequence[str | Path], data: DetectionData, problems: list[str]
) -> np.ndarray | None:
    """Boxes of every label file's objects on ``scene``; None when no file has any there."""
    found: list[np.ndarray] = []
    for label_path in labels:
        try:
            label_set = load_labels(label_path, scene)
        except InputError as exc:  # labels of another image or place: not this scene's
            problems.append(exc.message)
            continue
        boxes = object_boxes(label_set)
        if len(boxes) == 0:
            continue
        found.append(boxes)
        data.label_records.append(label_record(label_path, scene, label_set, objects=len(boxes)))
    return np.concatenate(found) if found else None


# -- evaluation ---------------------------------------------------------------------------
def detection_metrics(
    predictions: Sequence[tuple[np.ndarray, np.ndarray]],
    truths: Sequence[np.ndarray],
    iou: float,
    threshold: float,
) -> dict[str, float]:
    """Object-level metrics over several images: AP at ``iou`` and P/R/F1 at ``threshold``.

    ``predictions``: per image (boxes (N, 4), scores (N,)); ``truths``: boxes (M, 4).
    AP pools every image's detections in one ranking, each matched greedily in score
    order within its image (recall over all objects); P/R/F1 count one-to-one
    (Hungarian) matches of the detections scoring at least ``threshold``.
    """
    rule = MatchRule("iou", min_iou=iou)
    scores, hits = [], []
    tp = fp = n_truth = 0
    for (boxes, score), truth in zip(predictions, truths, strict=True):
        pred_geoms = shapely.box(*np.asarray(boxes, dtype=np.float64).reshape(-1, 4).T)
        truth_geoms = shapely.box(*np.asarray(truth, dtype=np.float64).reshape(-1, 4).T)
        score = np.asarray(score, dtype=np.float64)
        scores.append(score)
        hits.append(match_in_score_order(pred_geoms, score, truth_geoms, rule) >= 0)
        shown = score >= threshold
        matched = match_hungarian(pred_geoms[shown], truth_geoms, rule).left.size
        tp, fp, n_truth = tp + matched, fp + int(shown.sum()) - matched, n_truth + len(truth)
    all_scores = np.concatenate(scores) if scores else np.zeros(0)
    all_hits = np.concatenate(hits) if hits else np.zeros(0, dtype=bool)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / n_truth if n_truth else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {
        "average_precision": object_average_precision(all_scores, all_hits, n_truth),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "tp": float(tp),
        "fp": float(fp),
        "fn": float(n_truth - tp),
        "objects": float(n_truth),
        "detections": float(len(all_scores)),
    }


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


# -- training -----------------------------------------------------------------------------
def _train_mode(model: Detector) -> None:
    """Train mode, with the backbone's batch-norm layers kept in eval mode (frozen stats)."""
    model.train()
    for module in model.pyramid.body.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def _optimizer(model: Detector, opts: DetectTrainOptions) -> torch.optim.Optimizer:
    body = {id(p) for p in model.pyramid.body.parameters()}
    backbone = [p for p in model.parameters() if id(p) in body]
    rest = [p for p in model.parameters() if id(p) not in body]
    groups: list[dict[str, Any]] = [{"params": rest, "lr": opts.lr}]
    if opts.backbone_lr_factor > 0:
        groups.append({"params": backbone, "lr": opts.lr * opts.backbone_lr_factor})
    else:
        for p in backbone:
            p.requires_grad_(False)
    return torch.optim.AdamW(groups, weight_decay=opts.weight_decay)


def _augment(
    images: list[torch.Tensor], boxes: list[torch.Tensor], generator: torch.Generator
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One random flip/rotation per chip (boxes moved with it), then brightness/contrast."""
    out_images, out_boxes = [], []
    for image, box in zip(images, boxes, strict=True):
        k = int(torch.randint(0, DIHEDRAL, (1,), generator=generator))
        out_images.append(dihedral(image, k))
        out_boxes.append(dihedral_boxes(box, k, image.shape[-2], image.shape[-1]))
    batch = torch.stack(out_images)
    mask = torch.ones(batch.shape[0], *batch.shape[-2:], dtype=torch.bool)
    return jitter(batch, mask, generator), out_boxes


def fit_detector(
    model: Detector,
    data: DetectionData,
    split: SplitResult,
    device: torch.device,
    opts: DetectTrainOptions,
    threshold: float,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Train with early stopping on validation AP; returns the history for the card."""
    generator = torch.Generator().manual_seed(opts.seed)
    optim = _optimizer(model, opts)
    train_idx = split.train.tolist()
    val_images = [data.image(i) for i in split.val.tolist()]
    val_truth = [data.boxes[i] for i in split.val.tolist()]
    cache: dict[int, torch.Tensor] = {}
    stopper = EarlyStopping(model, opts.patience)
    epochs: list[dict[str, float]] = []
    epoch = 0
    for epoch in range(1, opts.max_epochs + 1):
        started = time.perf_counter()
        _train_mode(model)
        order = torch.randperm(len(train_idx), generator=generator).tolist()
        total, steps = 0.0, 0
        for start in range(0, len(order), opts.batch_size):
            chosen = [train_idx[j] for j in order[start : start + opts.batch_size]]
            for i in chosen:
                if i not in cache:
                    cache[i] = data.image(i)
            images = [cache[i] for i in chosen]
            boxes = [torch.from_numpy(data.boxes[i]) for i in chosen]
            batch, moved = _augment(images, boxes, generator)
            losses = model(batch.to(device), [b.to(device) for b in moved])
            loss = sum(losses.values())
            optim.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            optim.step()
            total, steps = total + loss.item(), steps + 1
        predictions = predict_chips(model, val_images, device, opts.batch_size)
        val = detection_metrics(predictions, val_truth, opts.eval_iou, threshold)
        ap = val["average_precision"]
        seconds = time.perf_counter() - started
        epochs.append({"epoch": epoch, "loss": total / max(steps, 1), "val_ap": ap,
                       "seconds": round(seconds, 2)})  # fmt: skip
        say(f"epoch {epoch}: loss {total / max(steps, 1):.3f}, validation AP {ap:.3f} "
            f"({seconds:.0f} s)")  # fmt: skip
        if stopper.step(epoch, 0.0 if math.isnan(ap) else ap):
            break
    history = stopper.restore(epoch)
    return {**history, "epochs": epochs}


def train_detector(
    profile: Profile,
    labels: Sequence[str | Path],
    imagery: Sequence[str | Path],
    out_dir: str | Path,
    opts: DetectTrainOptions | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train, validate on held-out blocks, save the model directory; returns the card."""
    opts = opts or DetectTrainOptions()
    say = progress or (lambda _msg: None)
    torch.manual_seed(opts.seed)
    started, cpu_started = time.perf_counter(), time.process_time()
    device = pick_device(opts.device)
    if not imagery:
        raise InputError("no imagery given", fix="Give at least one scene (--imagery).")
    first = open_scene(imagery[0], sensor=profile.imagery.sensor)
    config = detector_config(profile, first, scene_resolution_m(profile, first, opts.resolution_m))
    size = opts.chip_size or chip_size_for(config)
    data = collect_detection_chips(profile, labels, imagery, opts, size)
    split = blocked_split(
        data.chips,
        data.groups,
        block_px=opts.block_chips * size,
        val_fraction=opts.val_fraction,
        seed=opts.seed,
    )
    _check_split(split, data.labels, ", ".join(str(p) for p in labels))
    say(f"{len(data.chips)} chips ({int(data.labels.sum())} with objects; "
        f"{data.objects_in(split.train)} objects in training chips, "
        f"{data.objects_in(split.val)} in validation chips); {split.describe()}")  # fmt: skip
    model = build_detector(config).to(device)
    history = fit_detector(model, data, split, device, opts, profile.threshold, say)
    val_images = [data.image(i) for i in split.val.tolist()]
    predictions = predict_chips(model, val_images, device, opts.batch_size)
    truth = [data.boxes[i] for i in split.val.tolist()]
    metrics: dict[str, float] = {}
    for iou in (0.5, 0.4):
        for key, value in detection_metrics(predictions, truth, iou, profile.threshold).items():
            metrics[f"val_{key}@{iou:g}"] = value
    seconds = time.perf_counter() - started
    history["cpu_seconds"] = round(time.process_time() - cpu_started, 1)  # all threads
    history["chip_px"] = size
    say(f"validation AP@0.5 {metrics['val_average_precision@0.5']:.3f}, "
        f"AP@0.4 {metrics['val_average_precision@0.4']:.3f} in {seconds:.0f} s")  # fmt: skip
    card = detection_card(profile, config, data, split, metrics, history, opts, device, seconds)
    card["model_sha256"] = save_detector(model.cpu(), card, out_dir, render_detection_card(card))
    return card
