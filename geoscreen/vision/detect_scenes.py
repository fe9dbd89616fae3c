"""Labelled scenes for detector training: each scene read once into memory with the
pixel boxes of its objects (and of analysts' rejected detections), and the detector
configuration a profile asks for on those bands.

An image annotated without objects (an empty Pascal VOC file, or DeepForest's all-zero
CSV row for an empty frame) is a view without boxes: every chip of it is background.

A few hundred objects cover a few megapixels, so a whole scene fits in memory and every
epoch crops it afresh (:mod:`geoscreen.vision.detect_data`); the held-out strips are cut
out of each scene here (:meth:`DetectionData.split`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geoscreen.errors import ConfigError, InputError
from geoscreen.imagery.dataset import SceneWindowReader
from geoscreen.imagery.preprocess import ScenePreprocessor
from geoscreen.imagery.scene import Scene, open_scene
from geoscreen.labels import LabelSet, load_labels
from geoscreen.profiles import DetectionSettings, Profile, check_scene
from geoscreen.vision.backbones import input_stats
from geoscreen.vision.cards import label_record
from geoscreen.vision.detect_data import SceneView, holdout_block, training_view, validation_view
from geoscreen.vision.detector import DetectorConfig
from geoscreen.vision.inputs import backbone_spec

log = logging.getLogger(__name__)

_AREAL = ("Polygon", "MultiPolygon")


@dataclass
class DetectionData:
    """Labelled scenes in memory: views (whole scenes) with their provenance."""

    views: list[SceneView] = field(default_factory=list)
    scenes: list[Scene] = field(default_factory=list)
    label_records: list[dict[str, Any]] = field(default_factory=list)

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


def load_detection_data(
    profile: Profile,
    labels: Sequence[str | Path],
    imagery: Sequence[str | Path],
    positive_classes: Sequence[str] | None = None,
    hard_negative_labels: Sequence[str | Path] = (),
) -> DetectionData:
    """Open scenes, place the labels, and read each labelled scene into memory.

    ``positive_classes``: the class names that are objects, in every label file (files
    naming several classes need it, e.g. NEON's ``Dead``/``Alive`` crowns).
    ``hard_negative_labels``: files (among ``labels``) whose negative outlines are hard
    negatives, kept on each view (:attr:`SceneView.negatives`).
    """
    data = DetectionData()
    problems: list[str] = []
    for scene_path in imagery:
        scene = open_scene(scene_path, sensor=profile.imagery.sensor)
        for warning in check_scene(profile, scene):
            log.warning(warning)
        boxes = _scene_boxes(scene, labels, data, problems, positive_classes)
        if boxes is None:
            continue
        reader = SceneWindowReader(scene, ScenePreprocessor.build(profile.preprocess, scene))
        try:
            from rasterio.windows import Window

            image, valid = reader.read(Window(0, 0, scene.width, scene.height))
        finally:
            reader.close()
        hard = _hard_negative_boxes(scene, hard_negative_labels, positive_classes)
        view = SceneView(image * valid, valid, boxes, (0, 0, scene.width, scene.height), scene.id,
                         hard)  # fmt: skip
        data.views.append(view)
        data.scenes.append(scene)
    if not data.objects:
        raise InputError(
            "no labelled object falls inside any of the given scenes"
            + (f" ({'; '.join(problems[:3])})" if problems else ""),
            where=", ".join(str(p) for p in labels),
            fix="Check that the labels and imagery cover the same place (and CRS), "
            "or that CSV image_path / VOC filename names match the image files.",
        )
    return data
