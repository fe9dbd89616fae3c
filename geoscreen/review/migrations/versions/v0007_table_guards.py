"""Guards on the tables the audit log accounts for: edits that bypass the workflow are
refused by the database itself, not only found later by ``audit verify``.

* ``candidates``: never deleted; a new one is ``new`` at version 1; its id, profile and
  site id never change; its status and version change only together, the version by
  one, and only after the matching status event is in ``review_events`` (the workflow
  writes the event first); its outline, score, mean score and evidence path change
  only to those of its detection in the run it then names (a load writes the
  detections first). Loads may still change the flags and the bounding box (which
  ``audit verify`` checks against the outline).
* ``review_events``, ``detections``, ``exports``: append-only.
* ``users``: never deleted; name, role and creation time never change (enabling,
  disabling and passwords go through ``geoscreen users``, each audited).
* ``runs``: never deleted; a run's id, profile, model, source and loader never change.

Whoever owns the database file (or the PostgreSQL store) can drop these triggers; what
they then change is what ``audit verify`` checks (see
:mod:`geoscreen.review.audit_check`).

A store that already holds users with passwords or completed runs gets one audit entry,
``digest_baseline``: the digests of its password hashes and of each run's detections
as they are at the upgrade (:mod:`geoscreen.review.audit_digest`), which older entries
lack; later changes in place are then found by ``audit verify``. (What was changed
before the upgrade cannot be told apart.)

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import Connection, select

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_APPEND_ONLY = ("review_events", "detections", "exports")
_NO_DELETE = ("candidates", "users", "runs")
_FIXED = {
    "candidates": ("id", "profile", "site_id"),
    "users": ("id", "name", "role", "created_at"),
    "runs": ("id", "run_id", "profile", "profile_version", "model_sha256", "source_sha256",
             "loaded_by"),
}  # fmt: skip
_HOW = "use the geoscreen commands (review set/note, users, review load)"
_MATCHING_EVENT = """
    SELECT 1 FROM review_events e
    WHERE e.candidate_id = NEW.id AND e.kind = 'status' AND e.version = NEW.version
      AND e.from_status = OLD.status AND e.to_status = NEW.status"""
_SHOWN = ("geom_wkb", "score", "score_mean", "evidence_path", "last_run_pk")
_MATCHING_DETECTION = """
    SELECT 1 FROM detections d
    WHERE d.candidate_id = NEW.id AND d.run_pk = NEW.last_run_pk AND d.geom_wkb = NEW.geom_wkb
      AND d.score {same} NEW.score AND d.score_mean {same} NEW.score_mean
      AND d.evidence_path {same} NEW.evidence_path"""
_DETECTION_MESSAGE = (
    "candidates: outline, score and evidence path come from a detection of the run that "
    "last saw the candidate; load sites with geoscreen review load"
)


def upgrade() -> None:
    """Create the triggers of this dialect."""
    statements = _postgresql() if op.get_bind().dialect.name == "postgresql" else _sqlite()
    for statement in statements:
        op.execute(statement)
    _baseline(op.get_bind())


def _baseline(conn: Connection) -> None:
    """Record digests of what the store holds, for entries written without them."""
    from geoscreen.review import audit
    from geoscreen.review.audit_digest import detections_digest, password_digest
    from geoscreen.review.schema import runs, users

    hashed = select(users.c.name, users.c.password_hash).where(users.c.password_hash.is_not(None))
    passwords = {
        name: password_digest(h) for name, h in conn.execute(hashed.order_by(users.c.name))
    }
    done = select(runs.c.id, runs.c.run_id).where(runs.c.completed_at.is_not(None))
    loaded = {run_id: detections_digest(conn, pk) for pk, run_id in conn.execute(done)}
    if passwords or loaded:
        after = {"revision": revision, "passwords": passwords, "runs": loaded}
        audit.append(conn, actor="geoscreen-upgrade", action="digest_baseline", entity="store",
                     after=after)  # fmt: skip


def downgrade() -> None:
    """Not supported (see revision 0001)."""
    raise NotImplementedError("the review store cannot be downgraded")


def _changed(columns: tuple[str, ...], distinct: str) -> str:
    return " OR ".join(f"NEW.{c} {distinct} OLD.{c}" for c in columns)


def _sqlite() -> list[str]:
    def refuse(name: str, when: str, message: str) -> str:
        return f"CREATE TRIGGER {name} {when} BEGIN SELECT RAISE(ABORT, '{message}'); END"

    out = []
    for table in _APPEND_ONLY:
        for op_name in ("UPDATE", "DELETE"):
            out.append(refuse(f"{table}_no_{op_name.lower()}", f"BEFORE {op_name} ON {table}",
                              f"{table} is append-only: {op_name} refused"))  # fmt: skip
    for table in _NO_DELETE:
        out.append(refuse(f"{table}_no_delete", f"BEFORE DELETE ON {table}",
                          f"{table}: DELETE refused; {_HOW}"))  # fmt: skip
    for table, columns in _FIXED.items():
        when = (f"BEFORE UPDATE OF {', '.join(columns)} ON {table} "
                f"WHEN {_changed(columns, 'IS NOT')}")  # fmt: skip
        out.append(refuse(f"{table}_fixed", when,
                          f"{table}: {', '.join(columns)} cannot change; {_HOW}"))  # fmt: skip
    out.append(refuse(
        "candidates_insert_new",
        "BEFORE INSERT ON candidates WHEN NEW.status IS NOT 'new' OR NEW.version IS NOT 1",
        "candidates: a new candidate is new at version 1; load sites with geoscreen review load",
    ))  # fmt: skip
    out.append(refuse(
        "candidates_status_follows_event",
        "BEFORE UPDATE OF status, version ON candidates "
        "WHEN (NEW.status IS NOT OLD.status OR NEW.version IS NOT OLD.version) "
        f"AND (NEW.version IS NOT OLD.version + 1 OR NOT EXISTS ({_MATCHING_EVENT}))",
        "candidates: status and version change only with a review event; "
        "use geoscreen review set",
    ))  # fmt: skip
    out.append(refuse(
        "candidates_shows_detection",
        f"BEFORE UPDATE OF {', '.join(_SHOWN)} ON candidates "
        f"WHEN NOT EXISTS ({_MATCHING_DETECTION.format(same='IS')})",
        _DETECTION_MESSAGE,
    ))  # fmt: skip
    return out


def _postgresql() -> list[str]:
    out = [
        """CREATE FUNCTION geoscreen_guard_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '%: % refused (%)', TG_TABLE_NAME, TG_OP, TG_ARGV[0];
        END $$""",
        """CREATE FUNCTION geoscreen_candidate_insert() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.status IS DISTINCT FROM 'new' OR NEW.version IS DISTINCT FROM 1 THEN
                RAISE EXCEPTION 'candidates: a new candidate is new at version 1; %',
                    'load sites with geoscreen review load';
            END IF;
            RETURN NEW;
        END $$""",
        f"""CREATE FUNCTION geoscreen_candidate_status() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.status IS DISTINCT FROM OLD.status OR NEW.version IS DISTINCT FROM OLD.version
            THEN
                IF NEW.version IS DISTINCT FROM OLD.version + 1 OR NOT EXISTS ({_MATCHING_EVENT})
                THEN
                    RAISE EXCEPTION 'candidates: status and version change only with a %',
                        'review event; use geoscreen review set';
                END IF;
            END IF;
            RETURN NEW;
        END $$""",
        f"""CREATE FUNCTION geoscreen_candidate_detection() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF NOT EXISTS ({_MATCHING_DETECTION.format(same="IS NOT DISTINCT FROM")}) THEN
                RAISE EXCEPTION '%', '{_DETECTION_MESSAGE}';
            END IF;
            RETURN NEW;
        END $$""",
        f"""CREATE TRIGGER candidates_shows_detection BEFORE UPDATE OF {", ".join(_SHOWN)}
            ON candidates FOR EACH ROW EXECUTE FUNCTION geoscreen_candidate_detection()""",
        """CREATE TRIGGER candidates_insert_new BEFORE INSERT ON candidates
            FOR EACH ROW EXECUTE FUNCTION geoscreen_candidate_insert()""",
        """CREATE TRIGGER candidates_status_follows_event BEFORE UPDATE OF status, version
            ON candidates FOR EACH ROW EXECUTE FUNCTION geoscreen_candidate_status()""",
    ]
    for table in _APPEND_ONLY:
        out.append(f"""CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table}
            FOR EACH ROW EXECUTE FUNCTION geoscreen_guard_refuse('{table} is append-only')""")
    for table in (*_APPEND_ONLY, *_NO_DELETE):
        out.append(f"""CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
            FOR EACH STATEMENT EXECUTE FUNCTION geoscreen_guard_refuse('{_HOW}')""")
    for table in _NO_DELETE:
        out.append(f"""CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table}
            FOR EACH ROW EXECUTE FUNCTION geoscreen_guard_refuse('{_HOW}')""")
    for table, columns in _FIXED.items():
        message = f"{', '.join(columns)} cannot change; {_HOW}"
        out.append(f"""CREATE TRIGGER {table}_fixed BEFORE UPDATE OF {", ".join(columns)}
            ON {table} FOR EACH ROW WHEN ({_changed(columns, "IS DISTINCT FROM")})
            EXECUTE FUNCTION geoscreen_guard_refuse('{message}')""")
    return out
