"""Labelled scenes for detector training: each scene read once into memory with the
pixel boxes of its objects (and of analysts' rejected detections), and the detector
configuration a profile asks for on those bands.

An image annotated without objects (an empty Pascal VOC file, or DeepForest's all-zero
CSV row for an empty frame) is a view without boxes: every chip of it is background.

A few hundred objects cover a few megapixels, so the labelled part of a scene fits in
memory and every epoch crops it afresh (:mod:`geoscreen.vision.detect_data`); the
held-out strips are cut out of each scene here (:meth:`DetectionData.split`).

Which part of a scene trains (``train_area``, :func:`training_window`): every pixel of
the area read is an object where a label says so and background everywhere else. An
analyst who outlined the objects of one corner of a large orthomosaic has not said that
the rest holds none, so by default (``auto``) a scene whose labels' extent covers less
than half of it is read only there (plus one object's width around it): the rest is
neither objects nor background, and it costs neither memory nor training time.
Annotated crops, labelled all over (the bundled NEON ones), are read whole as before.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from geoscreen.errors import ConfigError, InputError
from geoscreen.imagery.dataset import SceneWindowReader
from geoscreen.imagery.preprocess import ScenePreprocessor
from geoscreen.imagery.scene import Scene, open_scene
from geoscreen.labels import LabelSet, load_labels
from geoscreen.profiles import DetectionSettings, Profile, check_scene
from geoscreen.vision.backbones import input_stats
from geoscreen.vision.cards import label_record
from geoscreen.vision.detect_data import (
    Rect,
    SceneView,
    holdout_block,
    sides_of,
    training_view,
    validation_view,
)
from geoscreen.vision.detector import DetectorConfig
from geoscreen.vision.inputs import backbone_spec

log = logging.getLogger(__name__)

_AREAL = ("Polygon", "MultiPolygon")

TrainArea = Literal["auto", "labels", "scene"]  # the part of each scene a detector trains on
TRAIN_AREAS: tuple[str, ...] = get_args(TrainArea)
AUTO_SHARE = 0.5  # auto reads only the labels' extent when it covers less of a scene
# Bytes of memory per pixel and band while training: the image as read, its copy with the
# held-out strip blanked and the strip itself (float32 each, and the masks).
BYTES_PER_PIXEL_BAND = 3 * 4


@dataclass
class DetectionData:
    """Labelled scenes in memory: views (whole scenes) with their provenance."""

    views: list[SceneView] = field(default_factory=list)
    scenes: list[Scene] = field(default_factory=list)
    label_records: list[dict[str, Any]] = field(default_factory=list)
    # per scene, the window read (col0, row0, col1, row1 in its pixels); None: all of it
    windows: list[Rect | None] = field(default_factory=list)

    @property
    def objects(self) -> int:
        return sum(len(v.boxes) for v in self.views)

    @property
    def scene_names(self) -> list[str]:
        """Each scene's file name, as cards and messages name it."""
        return [Path(scene.uri).name for scene in self.scenes]

    def split(self, fraction: float, seed: int, min_visible: float
              ) -> tuple[list[SceneView], list[SceneView]]:  # fmt: skip
        """Training views (held-out strips cut out) and validation views (the strips)."""
        rng = np.random.default_rng(seed)
        train, val = [], []
        for view in self.views:
            _, h, w = view.image.shape
            block = holdout_block(h, w, fraction, float(rng.integers(0, 4)) / 3)
            train.append(training_view(view.image, view.boxes, block, min_visible, view.name,
                                       view.negatives))  # fmt: skip
            val.append(validation_view(view.image, view.boxes, block, min_visible, view.name))
        return train, val


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


def _scene_boxes(
    scene: Scene,
    labels: Sequence[str | Path],
    data: DetectionData,
    problems: list[str],
    positive_classes: Sequence[str] | None = None,
) -> np.ndarray | None:
    """Boxes of every label file's objects on ``scene``; None when no file has any there
    (empty when a file says the image holds none: background to learn from)."""
    found: list[np.ndarray] = []
    for label_path in labels:
        try:
            label_set = load_labels(label_path, scene, positive_classes=positive_classes)
        except InputError as exc:  # labels of another image or place: not this scene's
            problems.append(exc.message)
            continue
        boxes = object_boxes(label_set)
        if len(boxes) == 0 and not label_set.report.empty_image:
            continue
        found.append(boxes)
        data.label_records.append(label_record(label_path, scene, label_set, objects=len(boxes)))
    return np.concatenate(found) if found else None


def _hard_negative_boxes(
    scene: Scene, hard_files: Sequence[str | Path], positive_classes: Sequence[str] | None
) -> np.ndarray:
    """Pixel boxes of the negative outlines (rejected detections) of ``hard_files`` on
    ``scene``: background the detector must learn to leave alone."""
    found = [np.zeros((0, 4))]
    for label_path in hard_files:
        try:
            label_set = load_labels(label_path, scene, positive_classes=positive_classes)
        except InputError:  # none on this scene
            continue
        found.append(label_set.negatives().boxes_px())
    return np.concatenate(found)


def training_window(boxes: np.ndarray, negatives: np.ndarray, width: int, height: int,
                    train_area: TrainArea = "auto") -> Rect | None:  # fmt: skip
    """The part of a ``width`` x ``height`` scene to train on, or None for all of it.

    ``labels``: the extent of every labelled box (objects and rejected outlines) widened
    by the median box's side (the context of the objects at its edge), within the scene;
    ``auto``: that extent when it covers less than :data:`AUTO_SHARE` of the scene;
    ``scene``: all of it. A scene without boxes (an image annotated as empty) is read whole.
    """
    if train_area not in TRAIN_AREAS:
        raise ValueError(f"train_area must be one of {TRAIN_AREAS}, not {train_area!r}")
    every = np.concatenate([np.asarray(b, np.float64).reshape(-1, 4) for b in (boxes, negatives)])
    if train_area == "scene" or len(every) == 0:
        return None
    margin = float(np.median(sides_of(every)))
    c0 = max(0, math.floor(every[:, 0].min() - margin))
    r0 = max(0, math.floor(every[:, 1].min() - margin))
    c1 = min(width, math.ceil(every[:, 2].max() + margin))
    r1 = min(height, math.ceil(every[:, 3].max() + margin))
    if c1 <= c0 or r1 <= r0 or (c0, r0, c1, r1) == (0, 0, width, height):
        return None
    if train_area == "auto" and (c1 - c0) * (r1 - r0) >= AUTO_SHARE * width * height:
        return None
    return (c0, r0, c1, r1)


def available_memory() -> int | None:
    """Bytes of memory the system can give without swapping (Linux), or None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _size(n: int) -> str:
    """Bytes as people read them: 52 MiB, 4.3 GiB."""
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _check_memory(planned: list[tuple[Scene, Rect]], bands: int | None,
                  available: int | None) -> None:  # fmt: skip
    """Refuse before reading when the windows to train on would not fit in memory
    (``bands``: fed to the model; None: every band of each scene)."""
    need = BYTES_PER_PIXEL_BAND * sum(
        (bands or scene.count) * (c1 - c0) * (r1 - r0) for scene, (c0, r0, c1, r1) in planned
    )
    if available is None or need <= available:
        return
    scene, (c0, r0, c1, r1) = max(planned, key=lambda p: (p[1][2] - p[1][0]) * (p[1][3] - p[1][1]))
    raise InputError(
        f"training would hold about {_size(need)} of imagery in memory, more than the "
        f"{_size(available)} available (largest: {c1 - c0} x {r1 - r0} px of "
        f"{Path(scene.uri).name})",
        where=scene.uri,
        fix="Train on the labelled part of each scene (--train-area labels), cut the "
        "scenes to the labelled area, or train on fewer scenes at a time.",
    )


def load_detection_data(
    profile: Profile,
    labels: Sequence[str | Path],
    imagery: Sequence[str | Path],
    positive_classes: Sequence[str] | None = None,
    hard_negative_labels: Sequence[str | Path] = (),
    train_area: TrainArea = "auto",
    available: int | None = None,
) -> DetectionData:
    """Open scenes, place the labels, and read the part of each labelled scene to train on
    (``train_area``, :func:`training_window`) into memory, boxes in its own pixels.

    ``positive_classes``: the class names that are objects, in every label file (files
    naming several classes need it, e.g. NEON's ``Dead``/``Alive`` crowns).
    ``hard_negative_labels``: files (among ``labels``) whose negative outlines are hard
    negatives, kept on each view (:attr:`SceneView.negatives`). ``available``: bytes of
    memory to fit in (default: what the system says it has; unchecked if it does not say).
    """
    from rasterio.windows import Window

    data = DetectionData()
    problems: list[str] = []
    planned: list[tuple[Scene, np.ndarray, np.ndarray, Rect | None]] = []
    for scene_path in imagery:
        scene = open_scene(scene_path, sensor=profile.imagery.sensor)
        for warning in check_scene(profile, scene):
            log.warning(warning)
        boxes = _scene_boxes(scene, labels, data, problems, positive_classes)
        if boxes is None:
            continue
        hard = _hard_negative_boxes(scene, hard_negative_labels, positive_classes)
        window = training_window(boxes, hard, scene.width, scene.height, train_area)
        planned.append((scene, boxes, hard, window))
    if not sum(len(boxes) for _, boxes, _, _ in planned):
        raise InputError(
            "no labelled object falls inside any of the given scenes"
            + (f" ({'; '.join(problems[:3])})" if problems else ""),
            where=", ".join(str(p) for p in labels),
            fix="Check that the labels and imagery cover the same place (and CRS), "
            "or that CSV image_path / VOC filename names match the image files.",
        )
    rects = [(scene, window or (0, 0, scene.width, scene.height))
             for scene, _, _, window in planned]  # fmt: skip
    _check_memory(rects, profile.derived_channels,
                  available if available is not None else available_memory())  # fmt: skip
    for (scene, boxes, hard, window), (_, (c0, r0, c1, r1)) in zip(planned, rects, strict=True):
        reader = SceneWindowReader(scene, ScenePreprocessor.build(profile.preprocess, scene))
        try:
            image, valid = reader.read(Window(c0, r0, c1 - c0, r1 - r0))
        finally:
            reader.close()
        shift = np.array([c0, r0, c0, r0], np.float64)
        view = SceneView(image * valid, valid, boxes - shift, (0, 0, c1 - c0, r1 - r0), scene.id,
                         hard - shift)  # fmt: skip
        data.views.append(view)
        data.scenes.append(scene)
        data.windows.append(window)
    return data


def area_lines(data: DetectionData) -> list[str]:
    """What ``train`` says of each scene read only in part (none when all were read whole)."""
    lines = []
    for scene, window in zip(data.scenes, data.windows, strict=True):
        if window is None:
            continue
        c0, r0, c1, r1 = window
        share = (c1 - c0) * (r1 - r0) / (scene.width * scene.height)
        lines.append(
            f"{Path(scene.uri).name}: trained on its labels' extent, {c1 - c0} x {r1 - r0} px "
            f"of {scene.width} x {scene.height} ({share:.0%}; columns {c0}-{c1}, rows "
            f"{r0}-{r1}): the rest is not read, neither objects nor background "
            "(--train-area scene: all of it, every unlabelled object there background)"
        )
    return lines
