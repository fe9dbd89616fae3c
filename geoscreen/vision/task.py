"""Screening tasks: what ``profile.model.task`` means, behind one interface.

A task knows how to load its model directory, check that the model and a scene fit
the profile, score a scene (whole, or a block of its tile grid at a time, as a scan
does on workers) into what the sites stage takes, and train a model. ``classify``
scores tiles (a :class:`~geoscreen.vision.scoremap.ScoreMap`); ``detect`` finds
objects (:class:`~geoscreen.vision.detect_infer.Objects`). Callers (the CLI, scan)
pick one with :func:`task_for` and never branch on the task themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import yaml
from shapely.geometry.base import BaseGeometry

from geoscreen.errors import ConfigError, GeoscreenError, InputError
from geoscreen.imagery.preprocess import ScenePreprocessor
from geoscreen.imagery.scene import Scene
from geoscreen.imagery.tiling import TileGrid
from geoscreen.profiles import Profile, TaskName
from geoscreen.vision.detect_infer import (
    DetectOptions,
    Objects,
    RawDetections,
    check_detector_fits,
    decision_threshold,
    detect_grid,
    scene_objects,
    screening_detectors,
)
from geoscreen.vision.infer import (
    ScreenOptions,
    check_model_fits,
    check_model_profile,
    score_grid,
    screen_scene,
)
from geoscreen.vision.modelcard import ClassifyCard, DetectCard, ModelCard, upgrade_card
from geoscreen.vision.modeldir import CARD_FILE, LoadedModelDir
from geoscreen.vision.scoremap import ScoreMap

SitesInput = ScoreMap | Objects
ModelDir = LoadedModelDir[Any]
Device = str | torch.device
Progress = Callable[[str], None]


@dataclass(frozen=True)
class RunSettings:
    """How to run a model (what to compute comes from the profile and the model)."""

    batch_size: int = 32
    device: str = "auto"
    num_workers: int | None = None  # None: 0 on CPU, 1 on a GPU
    embeddings: bool = False  # classify: also keep tile embeddings
    drop_empty: bool = True
    progress: bool = False
    precision: str = "auto"  # fp32, bf16, int8 (classify) or auto (runtime.pick_precision)
    tta: bool = False  # detect: also the 8 flips/rotations of each tile
    # classify: the threshold in force, for the fp32 check of bf16 scores near it
    # (ScreenOptions.threshold); None: screen_scene takes the profile's
    threshold: float | None = None


@dataclass(frozen=True)
class TrainRequest:
    """What ``geoscreen train`` asks of a task; each task uses the knobs that apply to it."""

    device: str = "auto"
    seed: int = 0
    max_epochs: int | None = None
    mode: str = "auto"  # classify: learner selection
    folds: int = 5  # classify: blocked CV folds
    fold_by: str = "auto"  # classify: square blocks or whole scenes
    positive: tuple[str, ...] = ()  # classify: class names counted as positive
    negative: tuple[str, ...] = ()
    hard_negative_labels: tuple[str, ...] = ()  # files whose negatives are hard (rejections)
    hard_negative_weight: float | None = None  # classify: None keeps TrainOptions' default
    background_per_positive: float | None = None  # classify: None decides from the labels
    learner: str | None = None  # classify: keep this learner, not the best by CV
    train_area: str = "auto"  # detect: the labels' extent or the whole scene


@dataclass(frozen=True)
class Chunk:
    """What scoring a block of a scene's grid gives: the tiles screened (flat indexes of
    the full grid) and the task's output for them (tile scores, or each detector's
    detections whose ``tile`` are flat indexes: one entry per member of a fused pair)."""

    flat: np.ndarray
    scores: np.ndarray
    valid: np.ndarray
    detections: tuple[RawDetections, ...] = ()


class ScreeningTask(Protocol):
    """One kind of model: load, check, score, train."""

    name: TaskName

    def load(
        self, model_dir: str | Path, device: str | torch.device = "cpu"
    ) -> LoadedModelDir[Any]:
        """The model directory, its weights checked against the card's hash."""
        ...

    def check_profile(self, loaded: LoadedModelDir[Any], profile: Profile) -> None:
        """Refuse a model made for another profile (no scene needed)."""
        ...

    def check(self, loaded: LoadedModelDir[Any], profile: Profile, scene: Scene) -> None:
        """Refuse a model or scene that does not fit the profile (call before writing)."""
        ...

    def threshold(
        self, loaded: LoadedModelDir[Any], profile: Profile, tta: bool = False
    ) -> tuple[float, str]:
        """The decision threshold sites are made with, and where it comes from (``tta``:
        for a detector screening the 8 flips/rotations)."""
        ...

    def score_scene(
        self,
        loaded: LoadedModelDir[Any],
        profile: Profile,
        scene: Scene,
        settings: RunSettings,
        aoi: BaseGeometry | None = None,
        meta: dict[str, Any] | None = None,
    ) -> SitesInput:
        """Every (valid, in-AOI) tile of ``scene`` scored into the sites stage's input."""
        ...

    def score_chunk(
        self,
        loaded: LoadedModelDir[Any],
        grid: TileGrid,
        preprocessor: ScenePreprocessor,
        settings: RunSettings,
        device: torch.device,
    ) -> Chunk:
        """Score the tiles of ``grid`` (a block of a scene's grid, empty tiles dropped)."""
        ...

    def assemble(
        self, loaded: LoadedModelDir[Any], grid: TileGrid, chunks: Sequence[Chunk],
        meta: dict[str, Any],
    ) -> SitesInput:  # fmt: skip
        """The chunks of one scene (``grid``: their tiles in flat order) as one result."""
        ...

    def train(
        self,
        profile: Profile,
        labels: Sequence[str | Path],
        imagery: Sequence[str | Path],
        out: str | Path,
        request: TrainRequest,
        progress: Progress | None = None,
        options: Any = None,
    ) -> ModelCard:
        """Train a model into ``out``; returns its card. ``options`` (the task's own:
        :class:`~geoscreen.vision.train.TrainOptions` or
        :class:`~geoscreen.vision.detect_train.DetectTrainOptions`) replace those the
        request gives, for callers that tune more than a request says."""
        ...

    def trained_summary(self, card: ModelCard, profile: Profile, out: str) -> str:
        """One line telling what was trained and how well it did."""
        ...


def _ordered(chunks: Sequence[Chunk]) -> tuple[np.ndarray, np.ndarray]:
    flat = np.concatenate([c.flat for c in chunks]) if chunks else np.zeros(0, np.int64)
    return flat, np.argsort(flat, kind="stable")


class ClassifyTask:
    """Tile classifiers and feature scorers: one score per tile."""

    name: TaskName = "classify"

    def load(
        self, model_dir: str | Path, device: str | torch.device = "cpu"
    ) -> LoadedModelDir[Any]:
        from geoscreen.vision.classifier import load_model

        _same_task(model_dir, self.name)
        return load_model(model_dir, device)

    def check_profile(self, loaded: LoadedModelDir[Any], profile: Profile) -> None:
        check_model_profile(loaded, profile)

    def check(self, loaded: LoadedModelDir[Any], profile: Profile, scene: Scene) -> None:
        check_model_fits(loaded, profile, scene)

    def threshold(
        self, loaded: LoadedModelDir[Any], profile: Profile, tta: bool = False
    ) -> tuple[float, str]:
        """The profile's, except for a similarity search kept as a model: its scores are
        cosine similarities, and the card holds the analyst's threshold for them."""
        card = loaded.card
        if isinstance(card, ClassifyCard) and card.similarity and card.threshold is not None:
            return float(card.threshold), card.threshold_source or "model card"
        return float(profile.threshold), "profile"

    def score_scene(
        self,
        loaded: LoadedModelDir[Any],
        profile: Profile,
        scene: Scene,
        settings: RunSettings,
        aoi: BaseGeometry | None = None,
        meta: dict[str, Any] | None = None,
    ) -> ScoreMap:
        return screen_scene(loaded.model, profile, scene, _screen_options(settings), aoi, meta)

    def score_chunk(
        self,
        loaded: LoadedModelDir[Any],
        grid: TileGrid,
        preprocessor: ScenePreprocessor,
        settings: RunSettings,
        device: torch.device,
    ) -> Chunk:
        scored = score_grid(loaded.model, grid, preprocessor, _screen_options(settings), device)
        return Chunk(grid.flat_indexes(), scored.scores, scored.valid_fraction)

    def assemble(
        self, loaded: LoadedModelDir[Any], grid: TileGrid, chunks: Sequence[Chunk],
        meta: dict[str, Any],
    ) -> ScoreMap:  # fmt: skip
        _flat, order = _ordered(chunks)
        if not chunks:
            return ScoreMap(grid, np.zeros(0, np.float32), np.zeros(0, np.float32), None, meta)
        scores = np.concatenate([c.scores for c in chunks])[order].astype(np.float32)
        valid = np.concatenate([c.valid for c in chunks])[order].astype(np.float32)
        return ScoreMap(grid, scores, valid, None, dict(meta))

    def train(
        self,
        profile: Profile,
        labels: Sequence[str | Path],
        imagery: Sequence[str | Path],
        out: str | Path,
        request: TrainRequest,
        progress: Progress | None = None,
        options: Any = None,
    ) -> ClassifyCard:
        from geoscreen.vision.train import TrainOptions, train_classifier

        opts = _given(options, TrainOptions, self.name) or classifier_options(request)
        return train_classifier(profile, labels, imagery, out, opts, progress=progress)

    def trained_summary(self, card: ModelCard, profile: Profile, out: str) -> str:
        metrics = card.metrics
        chosen: str | None = card.training.mode if card.training else None
        kind = "validation"
        if isinstance(card, ClassifyCard) and card.selection is not None:
            chosen, kind = card.selection.chosen, "cross-validated"
        return (
            f"model written to {out}: learner {chosen}, {kind} AP "
            f"{metrics['val_average_precision']:.3f}, positive rate "
            f"{metrics['val_positive_rate']:.3f}; threshold in force {profile.threshold:g} "
            f"(profile); see {out}/MODEL_CARD.md"
        )


def classifier_options(request: TrainRequest) -> Any:
    """The classifier's :class:`~geoscreen.vision.train.TrainOptions` for a request."""
    from geoscreen.vision.train import TrainOptions

    if {c.casefold() for c in request.positive} & {c.casefold() for c in request.negative}:
        raise ConfigError(
            "a class cannot be both --positive and --negative",
            where="--positive/--negative",
            fix="Name each class once.",
        )
    options: dict[str, Any] = {"mode": request.mode, "device": request.device,
                               "seed": request.seed, "folds": request.folds,
                               "fold_by": request.fold_by}  # fmt: skip
    if request.positive:
        options["positive_classes"] = list(request.positive)
    if request.negative:
        options["negative_classes"] = list(request.negative)
    if request.max_epochs is not None:
        options["max_epochs"] = request.max_epochs
    if request.hard_negative_labels:
        options["hard_negative_labels"] = list(request.hard_negative_labels)
    if request.hard_negative_weight is not None:
        options["hard_negative_weight"] = request.hard_negative_weight
    if request.background_per_positive is not None:
        options["background_per_positive"] = request.background_per_positive
    if request.learner is not None:
        options["learner"] = request.learner
    return TrainOptions(**options)


class DetectTask:
    """Object detectors: boxes merged across tiles, one site per object."""

    name: TaskName = "detect"

    def load(
        self, model_dir: str | Path, device: str | torch.device = "cpu"
    ) -> LoadedModelDir[Any]:
        from geoscreen.vision.detector import load_detector

        _same_task(model_dir, self.name)
        return load_detector(model_dir, device)

    def check_profile(self, loaded: LoadedModelDir[Any], profile: Profile) -> None:
        check_model_profile(loaded, profile)

    def check(self, loaded: LoadedModelDir[Any], profile: Profile, scene: Scene) -> None:
        check_detector_fits(loaded, profile, scene)  # type: ignore[arg-type]

    def threshold(
        self, loaded: LoadedModelDir[Any], profile: Profile, tta: bool = False
    ) -> tuple[float, str]:
        return decision_threshold(profile, loaded.card, tta)

    def score_scene(
        self,
        loaded: LoadedModelDir[Any],
        profile: Profile,
        scene: Scene,
        settings: RunSettings,
        aoi: BaseGeometry | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Objects:
        from geoscreen.vision.detect_infer import detect_scene

        return detect_scene(loaded, profile, scene, _detect_options(settings), aoi, meta)  # type: ignore[arg-type]

    def score_chunk(
        self,
        loaded: LoadedModelDir[Any],
        grid: TileGrid,
        preprocessor: ScenePreprocessor,
        settings: RunSettings,
        device: torch.device,
    ) -> Chunk:
        # A fused pair keeps each member's raw boxes apart: assemble merges them across
        # tiles per member and then fuses them, as detect_scene does.
        flat = grid.flat_indexes()
        opts, found = _detect_options(settings), []
        for detector in screening_detectors(loaded.model):
            raw = detect_grid(detector, grid, preprocessor, opts, device)
            raw.tile = flat[raw.tile] if len(raw.tile) else raw.tile  # tiles of the full grid
            found.append(raw)
        empty = np.zeros(0, np.float32)
        return Chunk(flat, empty, empty, tuple(found))

    def assemble(
        self, loaded: LoadedModelDir[Any], grid: TileGrid, chunks: Sequence[Chunk],
        meta: dict[str, Any],
    ) -> Objects:  # fmt: skip
        raws = []
        for m in range(len(screening_detectors(loaded.model))):
            parts = [c.detections[m] for c in chunks if c.detections]
            raw = RawDetections.empty(len(grid))
            if parts:
                raw = RawDetections(
                    np.concatenate([p.boxes for p in parts]).reshape(-1, 4),
                    np.concatenate([p.scores for p in parts]),
                    np.concatenate([p.tile for p in parts]).astype(np.int64),
                    np.concatenate([p.sides for p in parts]).reshape(-1, 4),
                    len(grid),
                )
            raws.append(raw)
        objects = scene_objects(raws, float(loaded.model.config.nms_iou))
        raw_count = sum(len(r.scores) for r in raws)
        objects.meta = {**meta, "tiles": len(grid), "raw_detections": raw_count}
        return objects

    def train(
        self,
        profile: Profile,
        labels: Sequence[str | Path],
        imagery: Sequence[str | Path],
        out: str | Path,
        request: TrainRequest,
        progress: Progress | None = None,
        options: Any = None,
    ) -> DetectCard:
        from geoscreen.vision.detect_train import DetectTrainOptions, train_detector

        classifier_only = {
            "--background-per-positive": (
                request.background_per_positive,
                "sets a tile classifier's random negative chips (a detector's negatives are "
                "its crops without objects)",
            ),
            "--learner": (request.learner, "keeps one of a tile classifier's learners"),
        }
        for option, (value, what) in classifier_only.items():
            if value is not None:
                raise InputError(
                    f"{option} {what}; profile {profile.name} trains a detector",
                    where="geoscreen train",
                    fix=f"Leave {option} out for detection profiles.",
                )
        blobs = profile.detection is not None and profile.detection.architecture == "blobs"
        if blobs and request.max_epochs is not None:
            raise InputError(
                f"--max-epochs bounds a detector's training; profile {profile.name} fits "
                "scale-space blobs (detection.architecture: blobs), which have no epochs",
                where="geoscreen train",
                fix="Leave --max-epochs out for this profile.",
            )
        limit = {"max_epochs": request.max_epochs} if request.max_epochs is not None else {}
        opts = _given(options, DetectTrainOptions, self.name) or DetectTrainOptions(
            device=request.device, seed=request.seed, train_area=request.train_area,
            hard_negative_labels=list(request.hard_negative_labels), **limit,
        )  # fmt: skip
        return train_detector(profile, labels, imagery, out, opts, progress=progress)

    def trained_summary(self, card: ModelCard, profile: Profile, out: str) -> str:
        m = card.metrics
        return (
            f"detector written to {out} (validation AP@0.5 "
            f"{m['val_average_precision@0.5']:.3f}, AP@0.4 "
            f"{m['val_average_precision@0.4']:.3f}; see {out}/MODEL_CARD.md)"
        )


TASKS: dict[str, ScreeningTask] = {"classify": ClassifyTask(), "detect": DetectTask()}


def task_for(profile: Profile) -> ScreeningTask:
    """The task ``profile.model.task`` names."""
    return TASKS[profile.model.task]


def _given(options: Any, kind: type, task: str) -> Any:
    """``options`` if given and of the task's kind (a programming error otherwise)."""
    if options is not None and not isinstance(options, kind):
        raise TypeError(f"{task} training takes {kind.__name__}, not {type(options).__name__}")
    return options


def _same_task(model_dir: str | Path, task: str) -> None:
    """Refuse a model directory whose card names another task (a detector for a
    classification profile); an unreadable card is left to the loader to report."""
    path = Path(model_dir) / CARD_FILE
    try:
        card = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return
    try:
        found = upgrade_card(card, str(path)).get("task") if isinstance(card, dict) else task
    except GeoscreenError:
        return
    if found != task:
        kind = {"classify": "classification", "detect": "detection"}.get(task, task)
        raise ConfigError(
            f"model.yaml is not the card of a {kind} model: it holds a {found} model, and "
            f"the profile's model.task is {task}",
            where=str(path),
            fix="Use the model trained for this profile, or train one with 'geoscreen train'.",
        )


def _screen_options(settings: RunSettings) -> ScreenOptions:
    return ScreenOptions(
        batch_size=settings.batch_size, device=settings.device, num_workers=settings.num_workers,
        embeddings=settings.embeddings, drop_empty=settings.drop_empty,
        progress=settings.progress, precision=settings.precision,
        threshold=settings.threshold,
    )  # fmt: skip


def _detect_options(settings: RunSettings) -> DetectOptions:
    return DetectOptions(
        batch_size=settings.batch_size, device=settings.device, num_workers=settings.num_workers,
        drop_empty=settings.drop_empty, progress=settings.progress,
        precision=settings.precision, tta=settings.tta,
    )  # fmt: skip
