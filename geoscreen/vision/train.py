"""Training a tile classifier for a screening profile from labelled examples.

This module gathers the chips (a chip around every label, random background chips when
the labels hold few negatives of their own (:func:`background_count`), hard
negatives) and trains in one of two ways:

- ``auto`` and the single-learner modes (``spectral``, ``linear_probe``, ``combined``):
  learners compared on the same spatially blocked folds, the best refitted on every
  chip (:mod:`geoscreen.vision.select_train`);
- ``finetune`` (for a GPU): the whole network; early stopping on spatially blocked
  validation chips chooses the number of epochs, then a fresh network trains on every
  chip for that many (:mod:`geoscreen.vision.finetune`).

Both are seeded and write a model directory with a model card (see
:mod:`geoscreen.vision.classifier`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from geoscreen.errors import InputError
from geoscreen.imagery.chips import BACKGROUND, NEGATIVE, Chip, sample_chips, shifted_copies
from geoscreen.imagery.dataset import ChipDataset
from geoscreen.imagery.preprocess import ScenePreprocessor
from geoscreen.imagery.scene import Scene, open_scene
from geoscreen.labels import LabelSet, LabelsForOtherImage, check_classes, load_labels
from geoscreen.profiles import Profile, check_scene
from geoscreen.vision.cards import label_record
from geoscreen.vision.modelcard import ClassifyCard
from geoscreen.vision.runtime import pick_device

log = logging.getLogger(__name__)


# A rejection weighs as much as the random background chips drawn per positive (4 by
# default). Measured (benchmarks/active_learning.py --hard-negatives, NEON crowns, 10
# seeds, 5 rounds of 20 score-order reviews): spectral_lr's held-out AP +0.032 over
# weight 1 (better in 8 of 10 seeds; 2: +0.018, 8: +0.031); spectral_gbm's unchanged
# (+0.001). See the README.
HARD_NEGATIVE_WEIGHT = 4.0
MAX_HARD_NEGATIVE_WEIGHT = 100.0
# Random background chips per positive when the labels are (mostly) positives only.
BACKGROUND_PER_POSITIVE = 4.0
# Labels with at least this many negatives per positive sample what does not match.
NEGATIVE_SAMPLE_SHARE = 0.5
# Chips cut at random from an image annotated without objects (at most; fewer when that
# many tiles do not fit side by side): every chip of it is a negative.
EMPTY_FRAME_CHIPS = 16


def background_count(per_positive: float | None, positives: int, negatives: int) -> int:
    """How many random background chips to cut in a scene, each counted as "does not match".

    ``per_positive`` None (the default) decides from the labels. Positives only, or a few
    labelled look-alikes beside them (fewer than :data:`NEGATIVE_SAMPLE_SHARE` per
    positive): :data:`BACKGROUND_PER_POSITIVE` per positive, the only sample of
    everything else. At least that many (land-cover points of every class): none.
    The analyst has then sampled what does not match, and random chips would add the
    places the labels missed as negatives, matches among them. Measured on the
    Sentinel-2 water points (``benchmarks/background.py``, docs/tile-classifier.md): with
    4 per positive the models missed most of the scene's unlabelled lakes. ``negatives`` counts the
    labels' own negatives, not hard negatives (rejected candidates are look-alikes, not
    a sample of the scene).
    """
    if per_positive is None:
        sampled = negatives >= NEGATIVE_SAMPLE_SHARE * positives
        per_positive = 0.0 if sampled else BACKGROUND_PER_POSITIVE
    return round(per_positive * positives)


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
    learner: str | None = Field(
        default=None,
        description="keep this learner of the comparison instead of the best by "
        "cross-validation (its out-of-fold numbers still go on the card)",
    )
    background_per_positive: float | None = Field(
        default=None,
        ge=0.0,
        description="random background chips per positive (None: 4 when the labels give "
        "fewer than half as many negatives as positives, else none; see background_count)",
    )
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
    empty_frames: int = 0  # images annotated without objects: all their chips negatives
    empty_frame_chips: int = 0
    hard: list[bool] = field(default_factory=list)  # per chip: a hard negative
    hard_weight: float = 1.0

    def dataset(self) -> torch.utils.data.ConcatDataset[Any]:
        return torch.utils.data.ConcatDataset(self.datasets)

    @property
    def labels(self) -> np.ndarray:
        return np.array([c.label for c in self.chips], dtype=np.int64)

    @property
    def background_chips(self) -> int:
        """Random background chips kept, each counted as a negative."""
        return sum(chip.source == BACKGROUND for chip in self.chips)

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
        empty_frame = False
        for label_path in labels:
            try:
                label_set = load_labels(label_path, scene, positive_classes=positive_classes)
            except LabelsForOtherImage as exc:  # drawn on another of the given images
                other_image.setdefault(str(label_path), exc.what)
                continue
            other_image[str(label_path)] = ""
            seen.update(label_set.frame["label"].astype(str))
            label_set = label_set.narrowed(negative_classes)
            if label_set.report.empty_image:
                empty_frame = True
                data.label_records.append(label_record(label_path, scene, label_set,
                                                       positives=0, negatives=0))  # fmt: skip
                continue
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
        # A scene of negatives alone still says what does not match; so does an image
        # annotated without objects, every chip of it (random ones, up to a cap).
        only_empty = empty_frame and not pos and not neg
        if not pos and not neg and not only_empty:
            continue
        n_background = background_count(
            opts.background_per_positive, len(pos), neg_hard.count(False)
        )
        if only_empty:
            n_background = min(EMPTY_FRAME_CHIPS, (scene.width // size) * (scene.height // size))
        chips = sample_chips(
            scene,
            pos,
            neg,
            chip_size=size,
            n_background=max(n_background, 1 if only_empty else 0),
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
        if only_empty:
            data.empty_frames += 1
            data.empty_frame_chips += len(chips)
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
    check_classes(seen, positive_classes, negative_classes,
                  ", ".join(str(p) for p in labels))  # fmt: skip
    if not any(chip.label == 1 for chip in data.chips):
        raise InputError(
            "no labelled positive example falls inside any of the given scenes",
            where=", ".join(str(p) for p in labels),
            fix="Check that the labels and imagery cover the same place (and CRS), "
            "or that CSV image_path names match the image files.",
        )
    return data


def _background_line(data: TrainingData, opts: TrainOptions) -> str:
    """What ``train`` says about the random background chips, and how to change it."""
    drawn = data.background_chips - data.empty_frame_chips
    empty = (
        f"; {data.empty_frame_chips} chips of {data.empty_frames} "
        f"image{'s' if data.empty_frames != 1 else ''} annotated without objects, as negatives"
        if data.empty_frames
        else ""
    )
    if opts.background_per_positive is not None:
        return (f"{drawn} random background chips ({opts.background_per_positive:g} per "
                f"positive){empty}")  # fmt: skip
    if drawn:
        return (
            f"{drawn} random background chips as negatives ({BACKGROUND_PER_POSITIVE:g} per "
            "positive in each scene whose labels give fewer than half as many negatives "
            f"as positives){empty}"
        )
    return (
        "no random background chips: the labels give negatives enough (at least half as "
        "many as positives) to say what does not match (--background-per-positive adds "
        f"random chips as negatives){empty}"
    )


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
    if opts.learner is not None:
        from geoscreen.vision.select_train import check_learner

        check_learner(opts.learner, opts.mode, profile)  # before minutes of chip reading
    data = collect_chips(profile, labels, imagery, opts)
    for record in data.label_records:
        say(f"labels {record['path']}: {record['report']}")
    say(_background_line(data, opts))
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
    from geoscreen.vision.finetune import train_finetuned

    return train_finetuned(profile, data, labels, out_dir, opts, device, say, started)
