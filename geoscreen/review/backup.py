"""Consistent copies of a live SQLite store, with SQLite's online backup API.

Copying ``geoscreen.sqlite`` with ``cp`` while the server runs loses whatever sits in
``geoscreen.sqlite-wal`` (committed decisions and audit entries included), and the
copy still looks whole. :func:`backup_store` copies one consistent snapshot of the
store, WAL included, while others keep reading and writing, checks the copy
(``integrity_check`` and the audit chain) and only then moves it into place.

PostgreSQL stores are backed up with the server's own tools (:data:`PG_DUMP_HINT`).
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from geoscreen.errors import ConfigError, InputError
from geoscreen.fileio import atomic_write, sha256_file
from geoscreen.review import audit
from geoscreen.review.errors import StoreError
from geoscreen.review.store import Store, open_store

PG_DUMP_HINT = (
    "Back up PostgreSQL with pg_dump, e.g. "
    "'pg_dump --format=custom --file store.dump \"$GEOSCREEN_DB\"' "
    "(restore into an empty database with pg_restore)."
)
BUSY_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class BackupResult:
    """The copy, and what the checks of it found."""

    path: str
    bytes: int
    sha256: str
    candidates: int
    audit_entries: int
    audit_head_seq: int | None
    audit_ok: bool
    audit_problems: list[str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def backup_store(store: Store, out: str | os.PathLike[str]) -> BackupResult:
    """Copy a SQLite ``store`` to ``out`` (a new file), consistent even while it is in use."""
    if store.dialect != "sqlite":
        raise ConfigError(
            "geoscreen backs up SQLite stores only", where=store.display, fix=PG_DUMP_HINT
        )
    source = Path(str(store.url.database)).resolve()
    target = Path(out)
    if target.exists() or Path(f"{target}-wal").exists():
        same = target.exists() and target.resolve() == source
        raise InputError(
            "that is the store itself" if same else "the backup file already exists",
            where=str(target),
            fix="Give a new file name (backups are never written over).",
        )
    found: dict[str, Any] = {}

    def write(tmp: str) -> None:
        _copy(source, Path(tmp))
        found.update(_check(Path(tmp)))

    atomic_write(target, write)
    return BackupResult(
        path=str(target.resolve()),
        bytes=target.stat().st_size,
        sha256=sha256_file(target),
        **found,
    )


def _copy(source: Path, tmp: Path) -> None:
    """One backup step over all pages: a consistent snapshot, WAL included."""
    src = sqlite3.connect(source.as_uri() + "?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
    dst = sqlite3.connect(tmp)
    try:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
        (result,) = dst.execute("PRAGMA integrity_check").fetchone()
    except sqlite3.Error as exc:
        raise StoreError(
            f"backup failed: {exc}",
            where=str(source),
            fix="Check the store opens ('geoscreen audit verify') and OUT's folder has room.",
        ) from None
    finally:
        dst.close()
        src.close()
    if result != "ok":
        raise StoreError(
            f"the copy fails SQLite's integrity check: {result}",
            where=str(source),
            fix="The store itself is damaged: restore the last good backup and compare.",
        )


def _check(copy: Path) -> dict[str, Any]:
    """Open the copy as a store: its candidates and the audit chain it carries."""
    opened = open_store(copy)
    try:
        report = audit.verify(opened)
        with opened.read() as conn:
            count = conn.exec_driver_sql("SELECT count(*) FROM candidates").scalar_one()
    finally:
        opened.close()  # the last connection checkpoints the copy's WAL and removes it
    _set_rollback_journal(copy)
    return {
        "candidates": int(count),
        "audit_entries": report.entries,
        "audit_head_seq": report.head_seq,
        "audit_ok": report.ok,
        "audit_problems": list(report.problems),
    }


def _set_rollback_journal(copy: Path) -> None:
    """The copy as one file, so that moving or mailing it takes everything."""
    conn = sqlite3.connect(copy)
    try:
        conn.execute("PRAGMA journal_mode = DELETE")
    finally:
        conn.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{copy}{suffix}").unlink(missing_ok=True)
