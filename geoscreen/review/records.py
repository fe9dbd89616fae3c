"""Plain records read from the store (candidates, review events, users) and the names
shared by the store and the CLI (statuses, roles, orders, default location)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields
from typing import Any

import shapely
from shapely.geometry.base import BaseGeometry

STATUSES = ("new", "in_review", "confirmed", "rejected", "needs_imagery", "escalated")
ROLES = ("viewer", "analyst", "supervisor", "admin")
ORDERS = ("score", "newest", "id", "diverse")
DEFAULT_DB = "geoscreen.sqlite"
ENV_DB = "GEOSCREEN_DB"


def iso(value: dt.datetime | None) -> str | None:
    """ISO 8601 text for JSON output (``None`` stays ``None``)."""
    return value.isoformat() if value is not None else None


@dataclass(frozen=True)
class Candidate:
    """A site that matches a profile, with its review state (``status``, ``version``)."""

    id: int
    profile: str
    site_id: str
    status: str
    version: int
    score: float | None
    score_mean: float | None
    area_m2: float | None
    tile_count: int | None
    profile_version: str | None
    model_sha256: str | None
    scene_id: str | None
    acquired: dt.datetime | None
    evidence_path: str | None
    first_seen: dt.datetime | None
    last_seen: dt.datetime | None
    created_at: dt.datetime
    status_changed_at: dt.datetime | None
    status_changed_by: str | None
    lon: float
    lat: float
    minx: float
    miny: float
    maxx: float
    maxy: float
    geom_wkb: bytes
    # The model of the latest run that re-screened the candidate's scene without finding
    # it (store revision 0005); None when not flagged.
    below_model_sha256: str | None = None

    @classmethod
    def from_row(cls, row: Any) -> Candidate:
        """Build from a result row of the ``candidates`` table (extra columns ignored)."""
        mapping = row._mapping
        return cls(**{f.name: mapping[f.name] for f in fields(cls)})

    @property
    def geometry(self) -> BaseGeometry:
        """The site's outline (EPSG:4326)."""
        return shapely.from_wkb(self.geom_wkb)

    @property
    def below_threshold(self) -> str | None:
        """The flag in words ("below threshold with model <short hash>"), or None."""
        if self.below_model_sha256 is None:
            return None
        return f"below threshold with model {self.below_model_sha256[:12]}"

    @property
    def match(self) -> str:
        """What the model output means, in words."""
        return f"matches profile {self.profile}"

    def to_dict(self, *, geometry: bool = True) -> dict[str, Any]:
        """JSON-ready fields; geometry as GeoJSON-like mapping when asked."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "geom_wkb":
                continue
            value = getattr(self, f.name)
            out[f.name] = iso(value) if isinstance(value, dt.datetime) else value
        out["match"] = self.match
        out["below_threshold"] = self.below_threshold
        if geometry:
            out["geometry"] = shapely.geometry.mapping(self.geometry)
        return out


@dataclass(frozen=True)
class ReviewEvent:
    """A status change or a note on a candidate."""

    id: int
    candidate_id: int
    kind: str
    from_status: str | None
    to_status: str | None
    text: str | None
    user_name: str
    at: dt.datetime
    version: int

    @classmethod
    def from_row(cls, row: Any) -> ReviewEvent:
        """Build from a result row of ``review_events``."""
        mapping = row._mapping
        return cls(**{f.name: mapping[f.name] for f in fields(cls)})

    def describe(self) -> str:
        """One line for people."""
        when = self.at.strftime("%Y-%m-%d %H:%M:%S")
        if self.kind == "status":
            text = f"{when} {self.user_name}: {self.from_status} -> {self.to_status}"
            return f"{text} ({self.text})" if self.text else text
        return f"{when} {self.user_name}: note: {self.text}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["at"] = iso(self.at)
        return out


@dataclass(frozen=True)
class ScoreEntry:
    """One run's score of a candidate (its ``detections`` row) and the model that gave it."""

    run_id: str
    model_sha256: str | None
    profile_version: str | None
    scene_id: str | None
    score: float | None
    loaded_at: dt.datetime

    def describe(self) -> str:
        """One line for people."""
        score = "-" if self.score is None else f"{self.score:.3f}"
        model = self.model_sha256[:12] if self.model_sha256 else "-"
        version = f" (profile v{self.profile_version})" if self.profile_version else ""
        return (
            f"{self.loaded_at:%Y-%m-%d %H:%M} score {score} with model {model}{version}, "
            f"scene {self.scene_id or '-'}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["loaded_at"] = iso(self.loaded_at)
        return out


@dataclass(frozen=True)
class User:
    """A person using the store, with one role."""

    id: int
    name: str
    role: str
    active: bool
    created_at: dt.datetime

    @classmethod
    def from_row(cls, row: Any) -> User:
        """Build from a result row of ``users``."""
        mapping = row._mapping
        return cls(**{f.name: mapping[f.name] for f in fields(cls)})

    def has_role(self, role: str) -> bool:
        """Whether this user's role is ``role`` or above (viewer < analyst < supervisor < admin)."""
        return ROLES.index(self.role) >= ROLES.index(role)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (never the password hash)."""
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "active": self.active,
            "created_at": iso(self.created_at),
        }
