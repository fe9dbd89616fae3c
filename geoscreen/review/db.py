"""Database URLs and engines: SQLite (WAL, one writer at a time) or PostgreSQL + PostGIS.

``--db`` takes a file path or a URL (``sqlite:///path``, ``postgresql://...``).
SQLite connections run in autocommit at the driver level and each transaction starts
with ``BEGIN IMMEDIATE`` (writes) or ``BEGIN`` (reads), so writers queue on the busy
timeout instead of failing when they upgrade a read lock.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from geoscreen.errors import ConfigError
from geoscreen.review.errors import StoreError
from geoscreen.review.schema import STORE_KIND

SQLITE_BUSY_TIMEOUT_S = 60.0
PG_CONNECT_TIMEOUT_S = 5
READ_OPTION = "geoscreen_read"


def resolve_url(db: str | os.PathLike[str]) -> URL:
    """A SQLAlchemy URL for a path or URL; PostgreSQL goes through psycopg 3."""
    text = os.fspath(db)
    if "://" not in text:
        return URL.create("sqlite", database=str(Path(text).expanduser().resolve()))
    try:
        url = make_url(text)
    except ArgumentError as exc:
        raise ConfigError(
            f"not a database URL: {text!r}", fix="Use a path or postgresql://..."
        ) from exc
    backend = url.get_backend_name()
    if backend == "postgresql":
        return url.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        if not url.database or url.database == ":memory:":
            raise ConfigError("the store needs a file", where=text, fix="Give a file path.")
        return url.set(drivername="sqlite", database=str(Path(url.database).resolve()))
    raise ConfigError(
        f"unsupported database {backend!r}", where=text, fix="Use SQLite (a path) or postgresql://"
    )


def display_url(url: URL) -> str:
    """The URL without its password, for messages and logs."""
    return url.render_as_string(hide_password=True)


def check_sqlite_file(path: Path, *, create: bool) -> bool:
    """Whether the store file exists; refuse a file that is not a geoscreen store.

    Reads it read-only, so a foreign file is never changed (not even switched to WAL).
    """
    if not path.exists():
        if not create:
            raise StoreError(
                "no review store here",
                where=str(path),
                fix="Create one with 'geoscreen review load' or 'geoscreen users add', "
                "or point --db / $GEOSCREEN_DB at an existing store.",
            )
        if not path.parent.is_dir():
            raise StoreError(
                "folder does not exist",
                where=str(path.parent),
                fix="Create the folder first, or point --db at a store in an existing one.",
            )
        return False
    if not path.is_file():
        raise StoreError(
            "not a file", where=str(path), fix="Point --db at a store file (e.g. geoscreen.sqlite)."
        )
    tables: set[str] | None = None
    kind = None
    probe = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        tables = {r[0] for r in probe.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "store_info" in tables:
            kind = probe.execute("SELECT value FROM store_info WHERE key = 'kind'").fetchone()
    except sqlite3.DatabaseError:
        tables = None
    finally:
        probe.close()
    if tables is not None and not tables:  # an empty database (e.g. a creation cut short)
        if create:
            return False
        raise StoreError(
            "no review store here (empty database)",
            where=str(path),
            fix="Create one with 'geoscreen review load' or 'geoscreen users add'.",
        )
    if kind is None or kind[0] != STORE_KIND:
        raise StoreError(
            "not a geoscreen review store",
            where=str(path),
            fix="Choose another --db; geoscreen never changes a file it did not create.",
        )
    return True


def make_engine(url: URL) -> Engine:
    """An engine with the settings the store relies on."""
    if url.get_backend_name() == "sqlite":
        engine = create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False},
            pool_size=32,
            max_overflow=64,
        )
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(
        url,
        connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S, "application_name": "geoscreen"},
        pool_size=8,
        max_overflow=32,
        pool_pre_ping=True,
        # psycopg's pipelined executemany beats very long multi-row INSERTs (query parsing).
        use_insertmanyvalues=False,
    )


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")  # WAL: durable against process crashes
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _sqlite_begin(conn: Any) -> None:
    read = conn.get_execution_options().get(READ_OPTION, False)
    conn.exec_driver_sql("BEGIN" if read else "BEGIN IMMEDIATE")
