"""Tables of the review store (SQLAlchemy Core), the same on SQLite and PostgreSQL.

Geometries are stored as WKB in EPSG:4326 with their bounding box in plain columns;
the spatial index sits beside them and differs per database (see
:mod:`geoscreen.review.spatial`): an R*Tree virtual table on SQLite, a generated
PostGIS ``geom`` column with a GiST index on PostgreSQL. The tables are created by the
alembic migrations in :mod:`geoscreen.review.migrations`; this module describes the
current schema for queries and for checking the migrations.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator

STORE_KIND = "geoscreen-review-store"
GENESIS_HASH = "0" * 64


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timestamps stored as naive UTC on every database, returned timezone-aware (UTC)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if not isinstance(value, dt.datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # SQLite without type affinity (raw SQL inserts)
            value = dt.datetime.fromisoformat(value)
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


metadata = MetaData()

store_info = Table(
    "store_info",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    Column("password_hash", Text),
    Column("active", Boolean, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

scenes = Table(
    "scenes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("scene_id", String(256), nullable=False, unique=True),
    Column("acquired", UTCDateTime),
    Column("first_loaded_at", UTCDateTime, nullable=False),
    # Where the scene file is (set by the latest load that knew it): see Store.portable_path.
    Column("uri", Text),
)

runs = Table(
    "runs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("run_id", String(128), nullable=False, unique=True),
    Column("profile", String(64), nullable=False),
    Column("profile_version", String(64)),
    Column("model_sha256", String(64)),
    Column("source", Text),
    Column("source_sha256", String(64)),
    Column("loaded_by", String(128), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    # Set in the same transaction as the last row: a run without it never finished loading.
    Column("completed_at", UTCDateTime),
    Column("site_count", Integer, nullable=False),
    Column("new_count", Integer, nullable=False),
    Column("threshold", Float),  # the decision threshold the run's sites were made with
    Column("policy", Text),  # JSON: the profile rules the run applied (migration 0004)
    # JSON list: the scene is far from the model's training region/statistics (0006), the
    # model did not beat its baselines in training
    Column("warnings", Text),
)

run_scenes = Table(
    "run_scenes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("run_pk", Integer, ForeignKey("runs.id"), nullable=False),
    Column("scene_pk", Integer, ForeignKey("scenes.id"), nullable=False),
    Column("status", String(16), nullable=False),  # done | failed
    Column("error", Text),
    Column("site_count", Integer, nullable=False),
    Column("finished_at", UTCDateTime, nullable=False),
    UniqueConstraint("run_pk", "scene_pk", name="uq_run_scenes_run_scene"),
)

candidates = Table(
    "candidates",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("profile", String(64), nullable=False),
    Column("site_id", String(128), nullable=False),
    Column("status", String(16), nullable=False),
    Column("version", Integer, nullable=False),
    Column("geom_wkb", LargeBinary, nullable=False),
    Column("minx", Float, nullable=False),
    Column("miny", Float, nullable=False),
    Column("maxx", Float, nullable=False),
    Column("maxy", Float, nullable=False),
    Column("lon", Float, nullable=False),
    Column("lat", Float, nullable=False),
    Column("score", Float),
    Column("score_mean", Float),
    Column("area_m2", Float),
    Column("tile_count", Integer),
    Column("profile_version", String(64)),
    Column("model_sha256", String(64)),
    Column("scene_id", String(256)),
    Column("acquired", UTCDateTime),
    Column("evidence_path", Text),
    Column("first_seen", UTCDateTime),
    Column("last_seen", UTCDateTime),
    Column("last_run_pk", Integer, ForeignKey("runs.id"), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("status_changed_at", UTCDateTime),
    Column("status_changed_by", String(64)),
    # Set when a later run of a scene where the candidate was found no longer finds it
    # (below the threshold with that run's model); cleared when a run finds it again
    # (migration 0005). Never a reason to delete: decisions and detections stay.
    Column("below_run_pk", Integer),
    Column("below_model_sha256", String(64)),
    UniqueConstraint("profile", "site_id", name="uq_candidates_profile_site"),
    Index("ix_candidates_status_score", "status", "score"),
    Index("ix_candidates_profile_status", "profile", "status"),
    Index("ix_candidates_last_seen", "last_seen"),
)

detections = Table(
    "detections",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("candidate_id", Integer, ForeignKey("candidates.id"), nullable=False),
    Column("run_pk", Integer, ForeignKey("runs.id"), nullable=False),
    Column("scene_id", String(256)),
    Column("acquired", UTCDateTime),
    Column("score", Float),
    Column("score_mean", Float),
    Column("tile_count", Integer),
    Column("area_m2", Float),
    Column("evidence_path", Text),
    Column("geom_wkb", LargeBinary, nullable=False),
    Column("extra", Text),  # JSON of the other columns of the sites file
    UniqueConstraint("run_pk", "candidate_id", name="uq_detections_run_candidate"),
    Index("ix_detections_candidate", "candidate_id"),
)

review_events = Table(
    "review_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("candidate_id", Integer, ForeignKey("candidates.id"), nullable=False),
    Column("kind", String(16), nullable=False),  # status | note
    Column("from_status", String(16)),
    Column("to_status", String(16)),
    Column("text", Text),
    Column("user_name", String(64), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("version", Integer, nullable=False),  # the candidate's version after the event
    Index("ix_review_events_candidate", "candidate_id"),
)

exports = Table(
    "exports",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", UTCDateTime, nullable=False),
    Column("user_name", String(64), nullable=False),
    Column("format", String(16), nullable=False),
    Column("redaction", String(16), nullable=False),
    Column("path", Text, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("count", Integer, nullable=False),
    Column("params", Text, nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("at", String(40), nullable=False),  # ISO 8601 UTC text: hashed exactly as stored
    Column("actor", String(128), nullable=False),
    Column("action", String(32), nullable=False),
    Column("entity", String(32), nullable=False),
    Column("entity_id", String(256)),
    Column("before", Text),
    Column("after", Text),
    Column("profile", String(64)),
    Column("profile_version", String(64)),
    Column("model_sha256", String(64)),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False, unique=True),
    # HMAC of ``hash`` with a key kept outside the store (NULL when none was configured).
    Column("mac", String(64)),
)

# One row (id 1): the last entry of the chain. Appending updates it, which serialises
# writers on PostgreSQL; triggers refuse any change that is not "the next entry".
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", Integer, nullable=False),
    Column("hash", String(64), nullable=False),
)
