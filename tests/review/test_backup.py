"""Backing up a live SQLite store, and ``audit verify`` on copies whose WAL hides entries.

The store stays open (as under a running server) so that recent decisions and audit
entries sit in ``live.sqlite-wal``, as in the report that prompted this: a ``cp`` of
the store file alone held 8 of 41 audit entries and still verified.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from geoscreen.cli.app import EXIT_USER_ERROR, main
from geoscreen.review import audit
from geoscreen.review.loader import load_sites
from geoscreen.review.store import Store, open_store
from geoscreen.review.users import add_user
from geoscreen.review.walcheck import WAL_HEADER, inspect_wal
from geoscreen.review.workflow import set_status


def _run(*args: str | Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def _entries(path: Path) -> int:
    """Audit entries in a store file as SQLite reads it (no geoscreen code)."""
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM audit_log").fetchone()[0])
    finally:
        conn.close()


@pytest.fixture
def live(tmp_path: Path, sites: Callable[..., Path]) -> Iterator[tuple[Store, Path]]:
    """An open store: the first entries checkpointed into the file, the rest in its WAL."""
    path = tmp_path / "live.sqlite"
    store = open_store(path, create=True)
    add_user(store, "ann", "analyst", actor="test")
    load_sites(store, sites(30), actor="test")
    raw = sqlite3.connect(path)  # as a checkpoint by the server would
    try:
        assert raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    finally:
        raw.close()
    for cid in range(1, 17):
        set_status(store, cid, "in_review", user="ann", reason="look closer", claim=True)
    state = inspect_wal(path)
    assert state is not None and state.used > 0  # the recent decisions are only in the WAL
    yield store, path
    store.close()


def test_backup_holds_what_a_file_copy_loses(live: tuple[Store, Path], tmp_path: Path) -> None:
    store, path = live
    total = len(list(audit.entries(store)))
    shutil.copy(path, tmp_path / "copied.sqlite")
    assert _entries(tmp_path / "copied.sqlite") < total  # the problem: cp misses the WAL
    out = tmp_path / "backups" / "store-backup.sqlite"
    out.parent.mkdir()
    code, stdout, err = _run("review", "backup", "--db", path, out)
    assert code == 0, err
    assert f"30 candidates, {total} audit entries (audit chain ok)" in stdout
    assert _entries(out) == total
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # one file, no -wal
    with open_store(out) as copy:
        assert audit.verify(copy).ok and len(copy.frame()) == 30
    # the live store carries on, and the backup is a snapshot
    set_status(store, 17, "in_review", user="ann", reason="next", claim=True)
    assert len(list(audit.entries(store))) > total == _entries(out)
    code, stdout, _ = _run("review", "backup", path, tmp_path / "second.sqlite", "--json")
    result = json.loads(stdout)
    assert code == 0 and result["audit_entries"] == total + 1 and result["audit_ok"]


def _torn(path: Path, folder: Path, how: str) -> Path:
    """A copy of the store file with a damaged copy of its WAL beside it."""
    folder.mkdir()
    copy = folder / "copy.sqlite"
    shutil.copy(path, copy)
    wal = Path(f"{path}-wal").read_bytes()
    state = inspect_wal(path)
    assert state is not None
    frame = (len(wal) - WAL_HEADER) // state.frames
    if how == "cut":  # copied while a frame was being appended
        data = wal[: WAL_HEADER + frame * (state.frames // 2) + frame // 3]
    else:  # one byte of a page in the middle changed
        middle = WAL_HEADER + frame * (state.frames // 2) + 100
        data = wal[:middle] + bytes([wal[middle] ^ 0xFF]) + wal[middle + 1 :]
    Path(f"{copy}-wal").write_bytes(data)
    return copy


@pytest.mark.parametrize("how", ["cut", "flipped"])
def test_verify_warns_when_the_wal_hides_entries(
    live: tuple[Store, Path], tmp_path: Path, how: str
) -> None:
    _, path = live
    copy = _torn(path, tmp_path / "torn", how)
    code, stdout, err = _run("audit", "verify", "--db", copy)
    assert code == 0 and stdout.startswith("ok: ")  # the shorter chain is consistent ...
    assert err.startswith("geoscreen: warning: ") and "were not read" in err  # ... but says so
    assert "geoscreen review backup" in err and err.count("\n") == 1


def test_verify_is_quiet_when_the_wal_was_read(live: tuple[Store, Path], tmp_path: Path) -> None:
    store, path = live
    code, stdout, err = _run("audit", "verify", "--db", path, "--json")  # the live store
    report = json.loads(stdout)
    assert code == 0 and report["warnings"] == [] and err == ""
    assert report["entries"] == len(list(audit.entries(store)))
    whole = tmp_path / "whole"
    whole.mkdir()
    shutil.copy(path, whole / "copy.sqlite")
    shutil.copy(f"{path}-wal", whole / "copy.sqlite-wal")
    code, stdout, err = _run("audit", "verify", "--db", whole / "copy.sqlite")
    assert code == 0 and err == "" and f"ok: {report['entries']} entries" in stdout


def test_old_wal_generations_are_not_a_warning(tmp_path: Path) -> None:
    """After a checkpoint the WAL restarts at its start; older frames behind are normal."""
    path = tmp_path / "plain.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute("CREATE TABLE t (x BLOB)")
        for _ in range(40):
            conn.execute("INSERT INTO t VALUES (randomblob(3000))")
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        conn.execute("INSERT INTO t VALUES (1)")  # restarts the WAL with new salts
        state = inspect_wal(path)
        assert state is not None and state.frames > state.used > 0
        assert state.unused == 0 and not state.hides_data
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--db", "postgresql://u:secret@localhost/x", "b.sqlite"], "pg_dump"),
        (["a.sqlite", "b.sqlite", "c.sqlite"], "takes OUT (or DB OUT), got 3"),
        (["live.sqlite", "live.sqlite"], "that is the store itself"),
        (["live.sqlite", "exists.sqlite"], "already exists"),
        (["live.sqlite", "no/such/folder/b.sqlite"], "output folder does not exist"),
        (["--db", "live.sqlite", "live.sqlite", "b.sqlite"], "given twice"),
    ],
)
def test_backup_bad_input_one_line_nothing_written(
    live: tuple[Store, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    args: list[str], message: str,
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exists.sqlite").write_text("keep me")
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, err = _run("review", "backup", *args)
    assert code == EXIT_USER_ERROR
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("geoscreen: error:") and message in lines[0]
    assert "secret" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "exists.sqlite").read_text() == "keep me"
