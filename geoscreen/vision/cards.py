"""What the model cards of classifiers and detectors have in common.

A card (``model.yaml``, see :mod:`geoscreen.vision.modeldir`) records the profile, the
backbone and its input statistics, the preprocessing and tiling, the labelled data
with their hashes, the validation split, the metrics, how training ran and the
model's known limits. :func:`model_card` lays these out in one order for both tasks
(the classifier's card: :mod:`geoscreen.vision.train`; the detector's:
:mod:`geoscreen.vision.detect_card`); the ``*_lines`` functions give the sections of
the Markdown page (``MODEL_CARD.md``) the two share. The builders give plain
sections; each task validates them into its typed card (:mod:`geoscreen.vision.modelcard`).
"""

from __future__ import annotations

import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from pydantic import BaseModel

from geoscreen.fileio import sha256_file
from geoscreen.imagery.scene import Scene
from geoscreen.labels import LabelSet
from geoscreen.profiles import Profile
from geoscreen.vision.backbones import BackboneSpec
from geoscreen.vision.modelcard import CardBase, ClassifyCard
from geoscreen.vision.split import SplitResult

HELD_OUT_LIMIT = (
    "Validation metrics come from held-out blocks of the training scenes; performance on "
    "other places, sensors, seasons or resolutions is unknown until measured there."
)


class Provenance(Protocol):
    """Where training data came from: one record per label file used, and the scenes."""

    @property
    def label_records(self) -> list[dict[str, Any]]: ...

    @property
    def scenes(self) -> list[Scene]: ...


def label_record(
    path: str | Path, scene: Scene, label_set: LabelSet, **counts: int
) -> dict[str, Any]:
    """The card's entry for one label file read onto ``scene``: path, hash, counts, report."""
    return {
        "path": str(path),
        "sha256": sha256_file(Path(path)),
        "scene_id": scene.id,
        **counts,
        "report": label_set.report.summary(),
    }


def split_record(split: SplitResult, seed: int, **counts: int) -> dict[str, Any]:
    """The card's ``split`` section; ``counts`` are the task's own (positives, objects)."""
    return {
        "method": "spatially blocked",
        "description": split.describe(),
        "train_chips": int(split.train.size),
        "val_chips": int(split.val.size),
        **counts,
        "seed": seed,
    }


def training_record(
    opts: BaseModel,
    device: torch.device,
    seconds: float,
    history: Mapping[str, Any],
    **first: Any,
) -> dict[str, Any]:
    """The card's ``training`` section: ``first`` entries, then device, time, options,
    ``history`` and the versions of torch and Python."""
    return {
        **first,
        "device": str(device),
        "seconds": round(seconds, 2),
        "options": opts.model_dump(mode="json"),
        **history,
        "torch": str(torch.__version__),
        "python": platform.python_version(),
    }


def model_card(
    profile: Profile,
    *,
    task: str,
    output_meaning: str,
    spec: BackboneSpec | None,
    stats: tuple[Sequence[float], Sequence[float]],
    data: Provenance,
    split: dict[str, Any],
    metrics: Mapping[str, float],
    training: dict[str, Any],
    limits: Sequence[str],
    model: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The sections every card has, as plain values for the task's typed card; ``model``
    holds sections of the task's own (the detector's configuration, the classifier's
    learner).
    ``spec`` is None for a model that uses no backbone (a spectral-context learner)."""
    return {
        "profile": {
            "name": profile.name,
            "version": profile.version,
            "fingerprint": profile.fingerprint(),
            "description": profile.description,
        },
        "task": task,
        "output_meaning": output_meaning,
        **(model or {}),
        "backbone": backbone_record(spec) if spec is not None else None,
        "input_stats": {"mean": [float(v) for v in stats[0]], "std": [float(v) for v in stats[1]]},
        "preprocess": profile.preprocess.model_dump(mode="json"),
        "tiling": profile.tiling.model_dump(mode="json"),
        "threshold": profile.threshold,
        "data": {
            "labels": data.label_records,
            "scenes": [{"uri": s.uri, "id": s.id} for s in data.scenes],
        },
        "split": split,
        "metrics": {k: float(v) for k, v in metrics.items()},
        "training": training,
        "limits": list(limits),
    }


def backbone_record(spec: BackboneSpec) -> dict[str, Any]:
    """The card's ``backbone`` section: what rebuilds it and what it started from."""
    return {
        "name": spec.name,
        "in_channels": spec.in_channels,
        "band_roles": list(spec.band_roles or []),
        "weights": spec.weights,
        "weights_sha256": spec.weights_sha256,
    }


# -- the Markdown page ---------------------------------------------------------------------
def data_lines(card: CardBase) -> list[str]:
    """``## Data``: each label file with its hash (and object count), each scene."""
    lines = ["", "## Data"]
    for item in card.data.labels:
        objects = f" ({item.objects} objects)" if item.objects is not None else ""
        lines.append(f"- labels `{item.path}`{objects} sha256 `{item.sha256}`")
    lines += [f"- scene `{item.uri}` id `{item.id}`" + _window_text(item.window)
              for item in card.data.scenes]  # fmt: skip
    background = card.data.background_chips
    if background is not None:
        lines.append(f"- random background chips counted as negatives: {background}")
    return lines


def _window_text(window: Sequence[int] | None) -> str:
    """A scene trained on in part: which part (nothing when all of it)."""
    if window is None:
        return ""
    c0, r0, c1, r1 = window
    return f", trained on its labels' extent: columns {c0}-{c1}, rows {r0}-{r1}"


def split_lines(card: CardBase) -> list[str]:
    """``## Validation split`` and its method (the counts per task follow)."""
    split = card.split
    return [
        "",
        "## Validation split",
        f"- {split.method if split else '?'}: {split.description if split else ''}",
    ]


def limits_lines(card: CardBase) -> list[str]:
    """``## Known limits``."""
    return ["", "## Known limits", *(f"- {text}" for text in card.limits)]


def selection_lines(card: ClassifyCard) -> list[str]:
    """The learner comparison, baselines and suggested thresholds of a selection card."""
    sel, thresholds = card.selection, card.thresholds
    if sel is None:
        return []
    lines = [
        "",
        "## Learners compared on the same spatially blocked folds",
        f"Metric: {sel.metric}; 95% intervals resample whole blocks. Positive rate "
        f"(the AP of ranking at random): {sel.positive_rate:.3f}.",
        "",
        "| learner | AP | 95% interval | ROC AUC | seconds |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, row in sel.learners.items():
        kept = "chosen" if sel.chosen_by == "cross-validation" else "named with --learner"
        label = f"**{name}** ({kept})" if name == sel.chosen else name
        if row.baseline:
            label += " (per-pixel baseline)"
        lines.append(
            f"| {label} | {row.ap:.3f} | {row.ap_low:.3f}-{row.ap_high:.3f} | "
            f"{row.roc_auc:.3f} | {row.seconds:.1f} |"
        )
    if sel.beats_pixel_baseline:
        lines += ["", "A learner beyond the per-pixel baseline beats it by a clear margin."]
    else:
        lines += ["", "No learner beats the per-pixel baseline by a clear margin (see limits)."]
    if thresholds is not None:
        lines += [
            "",
            "## Thresholds",
            f"In force: {thresholds.in_force} (from the {thresholds.source}). "
            "Suggested, from calibrated out-of-fold scores:",
            "",
            "| aim | threshold | precision | recall | F1 |",
            "| --- | --- | --- | --- | --- |",
        ]
        for aim, t in thresholds.suggested.items():
            lines.append(
                f"| {aim.replace('_', ' ')} | {t.threshold:.3f} | {t.precision:.3f} | "
                f"{t.recall:.3f} | {t.f1:.3f} |"
            )
    return lines
