"""Initial review store: scenes, runs, candidates, detections, review events, users,
exports, the hash-chained audit log and its guards, and the spatial index.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

STORE_KIND = "geoscreen-review-store"
GENESIS_HASH = "0" * 64


def upgrade() -> None:
    """Create every table, then the database-specific spatial index and audit guards."""
    _tables()
    bind = op.get_bind()
    now = dt.datetime.now(dt.UTC).isoformat()
    store_info = sa.table("store_info", sa.column("key"), sa.column("value"))
    op.bulk_insert(
        store_info, [{"key": "kind", "value": STORE_KIND}, {"key": "created_at", "value": now}]
    )
    head = sa.table("audit_head", sa.column("id"), sa.column("seq"), sa.column("hash"))
    op.bulk_insert(head, [{"id": 1, "seq": 0, "hash": GENESIS_HASH}])
    if bind.dialect.name == "postgresql":
        for statement in (*_PG_SPATIAL, *_PG_AUDIT):
            op.execute(statement)
    else:
        for statement in (*_SQLITE_SPATIAL, *_SQLITE_AUDIT):
            op.execute(statement)


def downgrade() -> None:
    """Not supported: the audit log is never dropped by a migration."""
    raise NotImplementedError("the review store cannot be downgraded")


def _tables() -> None:
    ts = sa.DateTime
    op.create_table(
        "store_info",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.Text),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("created_at", ts, nullable=False),
    )
    op.create_table(
        "scenes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("scene_id", sa.String(256), nullable=False, unique=True),
        sa.Column("acquired", ts),
        sa.Column("first_loaded_at", ts, nullable=False),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.String(128), nullable=False, unique=True),
        sa.Column("profile", sa.String(64), nullable=False),
        sa.Column("profile_version", sa.String(64)),
        sa.Column("model_sha256", sa.String(64)),
        sa.Column("source", sa.Text),
        sa.Column("source_sha256", sa.String(64)),
        sa.Column("loaded_by", sa.String(128), nullable=False),
        sa.Column("started_at", ts, nullable=False),
        sa.Column("completed_at", ts),
        sa.Column("site_count", sa.Integer, nullable=False),
        sa.Column("new_count", sa.Integer, nullable=False),
    )
    op.create_table(
        "run_scenes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_pk", sa.Integer, sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("scene_pk", sa.Integer, sa.ForeignKey("scenes.id"), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("site_count", sa.Integer, nullable=False),
        sa.Column("finished_at", ts, nullable=False),
        sa.UniqueConstraint("run_pk", "scene_pk", name="uq_run_scenes_run_scene"),
    )
    op.create_table(
        "candidates",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("profile", sa.String(64), nullable=False),
        sa.Column("site_id", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("geom_wkb", sa.LargeBinary, nullable=False),
        *(sa.Column(name, sa.Float, nullable=False) for name in _BBOX_COLUMNS),
        sa.Column("score", sa.Float),
        sa.Column("score_mean", sa.Float),
        sa.Column("area_m2", sa.Float),
        sa.Column("tile_count", sa.Integer),
        sa.Column("profile_version", sa.String(64)),
        sa.Column("model_sha256", sa.String(64)),
        sa.Column("scene_id", sa.String(256)),
        sa.Column("acquired", ts),
        sa.Column("evidence_path", sa.Text),
        sa.Column("first_seen", ts),
        sa.Column("last_seen", ts),
        sa.Column("last_run_pk", sa.Integer, sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("status_changed_at", ts),
        sa.Column("status_changed_by", sa.String(64)),
        sa.UniqueConstraint("profile", "site_id", name="uq_candidates_profile_site"),
    )
    op.create_index("ix_candidates_status_score", "candidates", ["status", "score"])
    op.create_index("ix_candidates_profile_status", "candidates", ["profile", "status"])
    op.create_index("ix_candidates_last_seen", "candidates", ["last_seen"])
    op.create_table(
        "detections",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("candidate_id", sa.Integer, sa.ForeignKey("candidates.id"), nullable=False),
        sa.Column("run_pk", sa.Integer, sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("scene_id", sa.String(256)),
        sa.Column("acquired", ts),
        sa.Column("score", sa.Float),
        sa.Column("score_mean", sa.Float),
        sa.Column("tile_count", sa.Integer),
        sa.Column("area_m2", sa.Float),
        sa.Column("evidence_path", sa.Text),
        sa.Column("geom_wkb", sa.LargeBinary, nullable=False),
        sa.Column("extra", sa.Text),
        sa.UniqueConstraint("run_pk", "candidate_id", name="uq_detections_run_candidate"),
    )
    op.create_index("ix_detections_candidate", "detections", ["candidate_id"])
    op.create_table(
        "review_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("candidate_id", sa.Integer, sa.ForeignKey("candidates.id"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("from_status", sa.String(16)),
        sa.Column("to_status", sa.String(16)),
        sa.Column("text", sa.Text),
        sa.Column("user_name", sa.String(64), nullable=False),
        sa.Column("at", ts, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_index("ix_review_events_candidate", "review_events", ["candidate_id"])
    op.create_table(
        "exports",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", ts, nullable=False),
        sa.Column("user_name", sa.String(64), nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("redaction", sa.String(16), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("params", sa.Text, nullable=False),
    )
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("at", sa.String(40), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("entity", sa.String(32), nullable=False),
        sa.Column("entity_id", sa.String(256)),
        sa.Column("before", sa.Text),
        sa.Column("after", sa.Text),
        sa.Column("profile", sa.String(64)),
        sa.Column("profile_version", sa.String(64)),
        sa.Column("model_sha256", sa.String(64)),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False, unique=True),
    )
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )


_BBOX_COLUMNS = ("minx", "miny", "maxx", "maxy", "lon", "lat")

_SQLITE_SPATIAL = (
    "CREATE VIRTUAL TABLE candidates_rtree USING rtree(id, minx, maxx, miny, maxy)",
    """CREATE TRIGGER candidates_rtree_insert AFTER INSERT ON candidates BEGIN
        INSERT INTO candidates_rtree VALUES (NEW.id, NEW.minx, NEW.maxx, NEW.miny, NEW.maxy);
    END""",
    """CREATE TRIGGER candidates_rtree_update AFTER UPDATE OF minx, miny, maxx, maxy
    ON candidates BEGIN
        UPDATE candidates_rtree SET minx = NEW.minx, maxx = NEW.maxx, miny = NEW.miny,
            maxy = NEW.maxy WHERE id = NEW.id;
    END""",
    """CREATE TRIGGER candidates_rtree_delete AFTER DELETE ON candidates BEGIN
        DELETE FROM candidates_rtree WHERE id = OLD.id;
    END""",
)

_SQLITE_AUDIT = (
    """CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log BEGIN
        SELECT RAISE(ABORT, 'audit log is append-only: entries cannot be changed');
    END""",
    """CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log BEGIN
        SELECT RAISE(ABORT, 'audit log is append-only: entries cannot be deleted');
    END""",
    """CREATE TRIGGER audit_log_follows_head BEFORE INSERT ON audit_log
    WHEN NEW.seq IS NOT (SELECT seq + 1 FROM audit_head WHERE id = 1)
        OR NEW.prev_hash IS NOT (SELECT hash FROM audit_head WHERE id = 1) BEGIN
        SELECT RAISE(ABORT, 'audit log: a new entry must follow the last one');
    END""",
    """CREATE TRIGGER audit_head_next BEFORE UPDATE ON audit_head
    WHEN NEW.id IS NOT OLD.id OR NEW.seq IS NOT OLD.seq + 1
        OR NEW.hash IS NOT (SELECT hash FROM audit_log WHERE seq = NEW.seq) BEGIN
        SELECT RAISE(ABORT, 'audit head can only move to the next entry');
    END""",
    """CREATE TRIGGER audit_head_no_delete BEFORE DELETE ON audit_head BEGIN
        SELECT RAISE(ABORT, 'audit head cannot be deleted');
    END""",
    """CREATE TRIGGER audit_head_no_insert BEFORE INSERT ON audit_head BEGIN
        SELECT RAISE(ABORT, 'audit head has exactly one row');
    END""",
)

_PG_SPATIAL = (
    "CREATE EXTENSION IF NOT EXISTS postgis",
    """ALTER TABLE candidates ADD COLUMN geom geometry(Geometry, 4326)
        GENERATED ALWAYS AS (ST_GeomFromWKB(geom_wkb, 4326)) STORED""",
    "CREATE INDEX ix_candidates_geom ON candidates USING gist (geom)",
)

_PG_AUDIT = (
    """CREATE FUNCTION geoscreen_audit_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'audit log is append-only: % on % refused', TG_OP, TG_TABLE_NAME;
    END $$""",
    """CREATE FUNCTION geoscreen_audit_follows_head() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE head_seq integer; head_hash text;
    BEGIN
        SELECT seq, hash INTO head_seq, head_hash FROM audit_head WHERE id = 1;
        IF NEW.seq IS DISTINCT FROM head_seq + 1 OR NEW.prev_hash IS DISTINCT FROM head_hash THEN
            RAISE EXCEPTION 'audit log: a new entry must follow the last one';
        END IF;
        RETURN NEW;
    END $$""",
    """CREATE FUNCTION geoscreen_audit_head_next() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.id IS DISTINCT FROM OLD.id OR NEW.seq IS DISTINCT FROM OLD.seq + 1
           OR NEW.hash IS DISTINCT FROM (SELECT hash FROM audit_log WHERE seq = NEW.seq) THEN
            RAISE EXCEPTION 'audit head can only move to the next entry';
        END IF;
        RETURN NEW;
    END $$""",
    """CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
        FOR EACH ROW EXECUTE FUNCTION geoscreen_audit_refuse()""",
    """CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
        FOR EACH STATEMENT EXECUTE FUNCTION geoscreen_audit_refuse()""",
    """CREATE TRIGGER audit_log_follows_head BEFORE INSERT ON audit_log
        FOR EACH ROW EXECUTE FUNCTION geoscreen_audit_follows_head()""",
    """CREATE TRIGGER audit_head_next BEFORE UPDATE ON audit_head
        FOR EACH ROW EXECUTE FUNCTION geoscreen_audit_head_next()""",
    """CREATE TRIGGER audit_head_no_change BEFORE INSERT OR DELETE ON audit_head
        FOR EACH ROW EXECUTE FUNCTION geoscreen_audit_refuse()""",
    """CREATE TRIGGER audit_head_no_truncate BEFORE TRUNCATE ON audit_head
        FOR EACH STATEMENT EXECUTE FUNCTION geoscreen_audit_refuse()""",
)
