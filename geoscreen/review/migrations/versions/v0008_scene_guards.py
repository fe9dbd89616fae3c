"""Guards on the scene tables, as revision 0007 guards the others: what a run screened
is part of what the audit log accounts for.

* ``scenes``: never deleted; a scene's id, scene id, acquisition time and first load
  time never change. Its ``uri`` may change: the latest load that knows the scene file
  says where it is (:func:`geoscreen.review.loader.load_sites`).
* ``run_scenes``: append-only (a load records each scene of its run once).

On PostgreSQL, TRUNCATE of either is refused too. Whoever owns the database file (or
the PostgreSQL store) can drop these triggers, as those of revision 0007.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_FIXED = ("id", "scene_id", "acquired", "first_loaded_at")
_HOW = "load sites with geoscreen review load"


def upgrade() -> None:
    """Create the triggers of this dialect."""
    statements = _postgresql() if op.get_bind().dialect.name == "postgresql" else _sqlite()
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    """Not supported (see revision 0001)."""
    raise NotImplementedError("the review store cannot be downgraded")


def _changed(distinct: str) -> str:
    return " OR ".join(f"NEW.{c} {distinct} OLD.{c}" for c in _FIXED)


def _sqlite() -> list[str]:
    def refuse(name: str, when: str, message: str) -> str:
        return f"CREATE TRIGGER {name} {when} BEGIN SELECT RAISE(ABORT, '{message}'); END"

    return [
        refuse("run_scenes_no_update", "BEFORE UPDATE ON run_scenes",
               "run_scenes is append-only: UPDATE refused"),
        refuse("run_scenes_no_delete", "BEFORE DELETE ON run_scenes",
               "run_scenes is append-only: DELETE refused"),
        refuse("scenes_no_delete", "BEFORE DELETE ON scenes", f"scenes: DELETE refused; {_HOW}"),
        refuse("scenes_fixed",
               f"BEFORE UPDATE OF {', '.join(_FIXED)} ON scenes WHEN {_changed('IS NOT')}",
               f"scenes: {', '.join(_FIXED)} cannot change; {_HOW}"),
    ]  # fmt: skip


def _postgresql() -> list[str]:
    """Uses ``geoscreen_guard_refuse()`` of revision 0007."""
    return [
        """CREATE TRIGGER run_scenes_no_change BEFORE UPDATE OR DELETE ON run_scenes
            FOR EACH ROW EXECUTE FUNCTION geoscreen_guard_refuse('run_scenes is append-only')""",
        f"""CREATE TRIGGER scenes_no_delete BEFORE DELETE ON scenes
            FOR EACH ROW EXECUTE FUNCTION geoscreen_guard_refuse('{_HOW}')""",
        f"""CREATE TRIGGER scenes_fixed BEFORE UPDATE OF {", ".join(_FIXED)} ON scenes
            FOR EACH ROW WHEN ({_changed("IS DISTINCT FROM")})
            EXECUTE FUNCTION geoscreen_guard_refuse('{", ".join(_FIXED)} cannot change; {_HOW}')""",
        *(f"""CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
            FOR EACH STATEMENT EXECUTE FUNCTION geoscreen_guard_refuse('{_HOW}')"""
          for table in ("scenes", "run_scenes")),
    ]  # fmt: skip
