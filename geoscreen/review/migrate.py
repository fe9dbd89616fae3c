"""Run the alembic migrations from the installed package, on the store's own connection."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection

from geoscreen.review.errors import StoreError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


@cache
def head_revision() -> str:
    """The newest revision shipped with this version of geoscreen."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at (``None`` for an empty database)."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(connection: Connection) -> bool:
    """Bring the database to the newest revision inside the caller's transaction.

    Returns whether anything ran.
    """
    current = current_revision(connection)
    if current == head_revision():
        return False
    if current is not None:
        try:
            ScriptDirectory.from_config(_config()).get_revision(current)
        except CommandError as exc:
            raise StoreError(
                f"the store is at schema revision {current}, unknown to this geoscreen",
                fix="Upgrade geoscreen to open it.",
            ) from exc
    command.upgrade(_config(connection), "head")
    return True
