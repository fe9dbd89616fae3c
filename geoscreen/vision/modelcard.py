"""The model card as types: what ``model.yaml`` may hold, checked when written and read.

A card is a :class:`ClassifyCard` or a :class:`DetectCard` (chosen by ``task``). Every
section forbids unknown fields, so a typo or a hand edit fails with the file and the
field named instead of being ignored; code reads attributes, never keys.

``card_version`` says which layout a card has. Cards written before it existed are
version 1 (they may lack ``task``, meaning a classifier); :func:`upgrade_card` brings an
older card to :data:`CARD_VERSION` before it is validated, so old model directories
keep loading. A change of layout adds a version and one upgrade step.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from geoscreen.errors import InputError
from geoscreen.imagery.preprocess import PreprocessConfig
from geoscreen.imagery.region import RegionRecord
from geoscreen.profiles import TilingConfig

CARD_VERSION = 2
FIX = "Restore the model.yaml written by 'geoscreen train', or retrain the model."


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ProfileRecord(_Section):
    """The profile a model was trained for."""

    name: str
    version: str
    fingerprint: str | None = None
    description: str | None = None


class BackboneRecord(_Section):
    """Enough to rebuild the backbone (no pretrained file needed) and say what it started from."""

    name: str
    in_channels: int = Field(ge=1)
    band_roles: list[str | None] | None = None
    weights: str | None = None
    weights_sha256: str | None = None


class InputStats(_Section):
    """Per-channel normalisation the backbone's pretrained weights expect."""

    mean: list[float] = Field(default_factory=list)
    std: list[float] = Field(default_factory=list)


class ClassRecord(_Section):
    rows: int
    role: str


class LabelRecord(_Section):
    """One label file read onto one scene."""

    path: str
    sha256: str
    scene_id: str
    positives: int | None = None
    negatives: int | None = None
    objects: int | None = None  # detectors count objects
    report: str = ""
    classes: dict[str, ClassRecord] | None = None


class SceneRecord(_Section):
    uri: str
    id: str
    # detectors: the part trained on (col0, row0, col1, row1 pixels) when not all of it
    window: list[int] | None = None


class DataRecord(_Section):
    labels: list[LabelRecord] = Field(default_factory=list)
    scenes: list[SceneRecord] = Field(default_factory=list)
    background_chips: int | None = None  # classifiers: random chips counted as negatives


class SplitRecord(_Section):
    """How validation data were held out (each training path fills its own counts)."""

    method: str
    description: str = ""
    seed: int | None = None
    # one held-out block (fine-tuning)
    train_chips: int | None = None
    val_chips: int | None = None
    train_positives: int | None = None
    val_positives: int | None = None
    # blocked k-fold (learner selection)
    folds: int | None = None
    block_px: int | None = None
    blocks: int | None = None
    test_chips_per_fold: list[int] | None = None
    buffered_per_fold: list[int] | None = None
    # held-out strips (detectors)
    train_objects: int | None = None
    val_objects: int | None = None
    objects: int | None = None
    refit_on_all: bool | None = None


Epoch = dict[str, int | float]


class TrainingRecord(_Section):
    """How training ran: the options, device, time, history and versions."""

    mode: str | None = None  # classifiers: the learner selection mode
    device: str
    seconds: float
    options: dict[str, Any] = Field(default_factory=dict)  # the task's options, dumped
    chosen: str | None = None  # learner selection: the learner kept
    epochs_run: int | None = None
    best_epoch: int | None = None
    selection_epochs: list[Epoch] | None = None
    refit_epochs: list[Epoch] | None = None
    # detectors: the refitted model's AP on the held-out strips against the selection
    # model's, per seed tried, and which model was kept
    refit_check: dict[str, Any] | None = None
    # detectors of several members: each one's colour rotation, strips AP and epochs
    members: list[dict[str, Any]] | None = None
    epochs: list[Epoch] | None = None
    cpu_seconds: float | None = None
    chip_px: int | None = None
    threshold_f1_at_04: float | None = Field(default=None, alias="threshold_f1@0.4")
    torch: str | None = None
    python: str | None = None


class LearnerRecord(_Section):
    """A feature scorer's learner: enough to rebuild the module around the weights."""

    kind: str
    name: str
    features: Literal["pixel", "spectral", "deep", "combined"]
    estimator: str
    channels: int = Field(ge=1)
    tile_size: int
    tree_depth: int | None = None
    deep_min_size: int | None = None
    # flips/rotations the deep features are averaged over (None: 1, cards before it)
    deep_views: int | None = Field(default=None, ge=1, le=8)
    # every trunk stage pooled before the last layer's features (False: cards before it)
    deep_stages: bool = False
    relative_channels: bool = False
    head_columns: int | None = None
    calibration: str = "platt"


class LearnerScore(_Section):
    baseline: bool = False
    ap: float
    ap_low: float
    ap_high: float
    roc_auc: float
    positive_rate: float
    seconds: float


class SelectionRecord(_Section):
    """The learners compared on the same folds, and the one kept."""

    chosen: str
    chosen_by: Literal["cross-validation", "--learner"] = "cross-validation"
    metric: str
    learners: dict[str, LearnerScore]
    positive_rate: float
    beats_pixel_baseline: bool


class SuggestedThreshold(_Section):
    threshold: float
    precision: float
    recall: float
    f1: float


class ThresholdsRecord(_Section):
    in_force: float
    source: str
    suggested: dict[str, SuggestedThreshold] = Field(default_factory=dict)


class BlobRecord(_Section):
    """A scale-space blob detector as fitted (:mod:`geoscreen.vision.blob_detector`): the
    cue, the LoG scales (sigma, px) spanning the labels' sizes, the box width factor,
    the Platt calibration of the blob strength, and the band names the cue uses."""

    cue: str
    bands: list[str]
    sigmas: list[float] = Field(min_length=2, max_length=2)
    width: float = Field(gt=0)
    calibration: list[float] = Field(min_length=2, max_length=2)


class DetectorRecord(_Section):
    """A detector's configuration (sizes derived from it included, for people)."""

    architecture: str
    mean: list[float]
    std: list[float]
    object_size_m: float
    resolution_m: float
    tile_size: int
    max_detections: int = 300
    nms_iou: float = 0.4
    score_threshold: float = 0.05
    fpn_channels: int = 128
    anchor_px: list[float] = Field(default_factory=list)
    tile_norm: bool = False
    members: int = Field(default=1, ge=1)  # models trained apart, their boxes fused
    object_size_px: float | None = None
    strides: list[int] | None = None
    anchor_sizes: list[list[float]] | None = None
    # architecture "blobs" only: what was fitted (the weights file holds the same values)
    blobs: BlobRecord | None = None


class BaselineScore(_Section):
    ap: float
    best_f1: float
    best_threshold: float


class SceneCue(_Section):
    """What marks the objects of one training scene: the cue the scale-space blobs choose
    on that scene's labels alone, and from how many objects."""

    scene: str
    cue: str
    objects: int


# The baselines a detector must beat by a clear margin, as the card and messages name them
SIMPLE_BASELINES = {"pixel_peaks": "pixel peaks", "scale_space_blobs": "scale-space blobs"}


class DetectorBaselines(_Section):
    """The detector and the baselines scored on the same held-out strips
    (:mod:`geoscreen.vision.detect_baselines`): ``model``, ``pixel_peaks`` (the per-pixel
    baseline), ``scale_space_blobs`` (blobs of the cue ``blob_cue``) and ``random_boxes``
    (chance)."""

    iou: float
    scores: dict[str, BaselineScore]
    margin: float
    beats_pixel_baseline: bool
    # None on cards written before the scale-space blobs joined the baselines
    beats_blob_baseline: bool | None = None
    blob_cue: str | None = None
    # None with one training scene, and on cards written before it was recorded
    scene_cues: list[SceneCue] | None = None


class EvaluationRecord(BaseModel):
    """A detector's result on other imagery; callers may keep more numbers (extra allowed)."""

    model_config = ConfigDict(extra="allow")

    imagery: str
    objects: int
    iou: float
    threshold: float
    precision: float
    recall: float
    f1: float
    average_precision: float


class FromFiles(_Section):
    files: list[str] = Field(default_factory=list)
    positives: int = 0
    negatives: int = 0


class FromReviews(_Section):
    profile: str
    positives: int
    negatives: int
    by_reviewer: dict[str, int] = Field(default_factory=dict)
    candidates: int = 0
    scenes: int = 0
    scenes_missing: list[str] = Field(default_factory=list)
    up_to_audit_seq: int = 0
    positives_used: int = 0
    negatives_used: int = 0


class ProvenanceRecord(_Section):
    """Where the labels of a model retrained from the review store came from."""

    trained_by: str
    store: str
    from_files: FromFiles
    from_reviews: FromReviews
    audit_entry: int | None = None


class WeighedHardNegatives(_Section):
    """A classifier's hard negatives (rejected candidates): how many chips, what each
    weighed in fitting, and their share of the negatives' total training weight."""

    chips: int = Field(ge=0)
    weight: float
    of_negative_weight: float


class SampledHardNegatives(_Section):
    """A detector's hard negatives: a background chip cut around each every epoch, not
    weighted."""

    chips: int = Field(ge=0)
    chips_per_epoch_each: int = 1
    weighted: bool = False


class CardBase(_Section):
    """What the cards of every task hold."""

    card_version: int = CARD_VERSION
    profile: ProfileRecord
    output_meaning: str = ""
    backbone: BackboneRecord | None = None
    input_stats: InputStats = Field(default_factory=InputStats)
    preprocess: PreprocessConfig
    tiling: TilingConfig
    threshold: float | None = None
    threshold_source: str | None = None  # set when the card, not the profile, chose it
    data: DataRecord = Field(default_factory=DataRecord)
    split: SplitRecord | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    training: TrainingRecord | None = None
    limits: list[str] = Field(default_factory=list)
    provenance: ProvenanceRecord | None = None
    # Where the model was trained (footprint, band statistics): screen and scan warn
    # far from it. None on cards written before it was recorded.
    region: RegionRecord | None = None
    model_sha256: str | None = None

    def to_yaml_dict(self) -> dict[str, Any]:
        """The plain values written to ``model.yaml`` (unset optional sections left out)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class ClassifyCard(CardBase):
    """A tile classifier (fine-tuned CNN) or feature scorer (``learner``)."""

    task: Literal["classify"] = "classify"
    learner: LearnerRecord | None = None
    selection: SelectionRecord | None = None
    thresholds: ThresholdsRecord | None = None
    features: list[str] | None = None  # the spectral features the scorer's head reads
    hard_negatives: WeighedHardNegatives | None = None

    @model_validator(mode="after")
    def _rebuildable(self) -> ClassifyCard:
        deep = self.learner is None or self.learner.features in ("deep", "combined")
        if self.backbone is None and deep:
            raise ValueError("backbone: required by a fine-tuned model or a deep-feature learner")
        return self

    @property
    def similarity(self) -> bool:
        """Whether this is a similarity search kept as a model
        (:mod:`geoscreen.vision.similarity_model`): cosine scores, the card's threshold."""
        return self.learner is not None and self.learner.kind == "similarity"

    @property
    def channels(self) -> int:
        """How many input channels (bands, then indices) the model takes."""
        if self.learner is not None:
            return self.learner.channels
        assert self.backbone is not None  # checked on validation
        return self.backbone.in_channels


class DetectCard(CardBase):
    """An object detector."""

    task: Literal["detect"] = "detect"
    detector: DetectorRecord
    backbone: BackboneRecord | None = None  # None for scale-space blobs, which need none
    evaluations: list[EvaluationRecord] = Field(default_factory=list)
    hard_negatives: SampledHardNegatives | None = None
    # None on cards written before detectors were compared with baselines
    baselines: DetectorBaselines | None = None
    # held-out F1-optimal threshold of the boxes fused over the 8 flips/rotations, which
    # ``screen --tta`` applies (their scores differ); None on cards before session 21
    tta_threshold: float | None = None

    @model_validator(mode="after")
    def _rebuildable(self) -> DetectCard:
        blobs = self.detector.architecture == "blobs"
        if blobs and self.detector.blobs is None:
            raise ValueError("detector.blobs: required by a scale-space blob detector")
        if not blobs and self.backbone is None:
            raise ValueError("backbone: required by a trained detector")
        return self

    @property
    def channels(self) -> int:
        if self.backbone is None:
            assert self.detector.blobs is not None  # checked on validation
            return len(self.detector.blobs.bands)
        return self.backbone.in_channels


ModelCard = ClassifyCard | DetectCard
CARD_TYPES: dict[str, type[ClassifyCard] | type[DetectCard]] = {
    "classify": ClassifyCard,
    "detect": DetectCard,
}


# -- old cards -------------------------------------------------------------------------------
def _v1_to_v2(card: dict[str, Any]) -> dict[str, Any]:
    """Version 1 (no ``card_version``): ``task`` was optional and meant a classifier; the
    layout is otherwise the same (``null`` entries read as unset)."""
    return {"card_version": 2, **card, "task": card.get("task", "classify")}


UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2}


def upgrade_card(card: dict[str, Any], where: str = "model.yaml") -> dict[str, Any]:
    """``card`` (plain values) brought to :data:`CARD_VERSION`, one step per version."""
    version = card.get("card_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InputError(f"card_version: not a card version ({version!r})", where=where, fix=FIX)
    if version > CARD_VERSION:
        raise InputError(
            f"card_version {version} is newer than this geoscreen reads ({CARD_VERSION})",
            where=where,
            fix="Upgrade geoscreen to load this model.",
        )
    while version < CARD_VERSION:
        card = UPGRADES[version](card)
        version = card["card_version"]
    return card


# -- reading and checking --------------------------------------------------------------------
def parse_card(raw: Any, where: str = "model.yaml") -> ModelCard:
    """A card from plain values (as read from YAML), upgraded and validated.

    Raises InputError naming ``where`` and the first bad fields.
    """
    if not isinstance(raw, dict):
        raise InputError("not a model card (expected a mapping of sections)", where=where, fix=FIX)
    card = upgrade_card(raw, where)
    kind = CARD_TYPES.get(str(card.get("task")))
    if kind is None:
        raise InputError(
            f"task: unknown task {card.get('task')!r} (classify or detect)", where=where, fix=FIX
        )
    try:
        return kind.model_validate(card)
    except ValidationError as exc:
        raise InputError(f"model card {describe_errors(exc)}", where=where, fix=FIX) from None


def read_card(path: str | Path) -> ModelCard:
    """The card in ``path`` (a ``model.yaml``), upgraded and validated."""
    where = str(path)
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        raise InputError("model.yaml is not YAML", where=where, fix=FIX) from None
    except OSError as exc:
        raise InputError(f"cannot read the model card ({exc.strerror})", where=where) from None
    return parse_card(raw, where)


def checked(card: ModelCard) -> ModelCard:
    """``card`` validated again from its plain values (what writing checks: sections
    changed after construction are caught before anything is written)."""
    return parse_card(card.to_yaml_dict(), "model card being written")


def describe_errors(exc: ValidationError, limit: int = 3) -> str:
    """Pydantic errors as ``field.path: message``, the first ``limit`` joined by ``; ``."""
    parts = []
    for err in exc.errors()[:limit]:
        loc = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in err["loc"])
        loc = loc.replace(".[", "[")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "missing":
            msg = "required field is missing"
        else:
            msg = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] != "value_error":
                msg += f" (got {err['input']!r:.60})"
        parts.append(f"{loc}: {msg}" if loc else msg)
    more = len(exc.errors()) - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")
