"""``users`` commands and ``review load`` act for a proven user or on the file's authority."""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from geoscreen.review import audit
from geoscreen.review.store import open_store
from geoscreen.review.testing import make_sites
from geoscreen.review.users import local_actor

AS_ADMIN = "--as-admin-of-this-file"
SECRET = "a long enough secret"
Run = Callable[..., tuple[int, str, str]]


def _stdin(monkeypatch: pytest.MonkeyPatch, *lines: str) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(f"{line}\n" for line in lines)))


def _last(db: Path) -> audit.AuditEntry:
    with open_store(db) as store:
        assert audit.verify(store).ok
        return list(audit.entries(store))[-1]


def _dump(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return list(conn.iterdump())


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run: Run) -> Path:
    """A store whose first user, the admin root (with a password), was added by the override."""
    path = tmp_path / "review.sqlite"
    monkeypatch.setenv("GEOSCREEN_DB", str(path))
    monkeypatch.chdir(tmp_path)
    _stdin(monkeypatch, SECRET)
    code, out, err = run("users", "add", "root", "--role", "admin", "--password-stdin", AS_ADMIN)
    assert (code, out) == (0, "user root added (admin, with password)\n"), err
    first = _last(path)
    assert (first.actor, first.action) == (local_actor(), "user_add")
    assert first.to_dict()["after"]["local_override"] == local_actor()
    return path


def test_users_add_with_the_admins_password(db: Path, monkeypatch: pytest.MonkeyPatch,
                                            run: Run) -> None:  # fmt: skip
    _stdin(monkeypatch, SECRET, "bobs own password")
    code, out, err = run("users", "add", "bob", "--role", "analyst", "--user", "root",
                         "--admin-password-stdin", "--password-stdin")  # fmt: skip
    assert (code, out) == (0, "user bob added (analyst, with password)\n"), err
    entry = _last(db)
    assert (entry.actor, entry.action, entry.entity_id) == ("root", "user_add", "bob")
    assert "local_override" not in entry.to_dict()["after"]
    with open_store(db) as store:
        from geoscreen.review.users import authenticate

        assert authenticate(store, "bob", "bobs own password") is not None


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["users", "add", "kim", "--role", "analyst"], [], "users add must say who acts"),
        (["users", "add", "kim", "--role", "analyst", "--user", "root"], [],
         "who must give a password"),
        (["users", "add", "kim", "--role", "analyst", "--user", "root", "--admin-password-stdin"],
         ["not the secret"], "wrong user name or password"),
        (["users", "add", "kim", "--role", "analyst", "--user", "bob", AS_ADMIN], [],
         "has the role analyst; to change users needs admin"),
        (["users", "add", "kim", "--role", "analyst", "--admin-password-stdin"], [SECRET],
         "no user is named"),
        (["users", "disable", "bob"], [], "users disable must say who acts"),
        (["users", "disable", "bob", "--user", "root", "--password-stdin"], ["nope nope nope"],
         "wrong user name or password"),
        (["users", "disable", "bob", "--user", "bob", "--password-stdin"], ["bobs own password"],
         "has the role analyst"),
        (["review", "load", "sites.parquet"], [], "review load must say who acts"),
        (["review", "load", "sites.parquet", "--user", "bob"], [], "who must give a password"),
        (["review", "load", "sites.parquet", "--user", "bob", "--password-stdin"],
         ["wrong password!"], "wrong user name or password"),
        (["review", "load", "sites.parquet", "--user", "zed", "--password-stdin"], [SECRET],
         "no user named 'zed'"),
        (["review", "load", "sites.parquet", "--password-stdin"], [SECRET], "no user is named"),
    ],
)  # fmt: skip
def test_refused_without_proof_changes_nothing(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run: Run,
    args: list[str], stdin: list[str], message: str,
) -> None:  # fmt: skip
    _stdin(monkeypatch, SECRET, "bobs own password")
    assert run("users", "add", "bob", "--role", "analyst", "--user", "root",
               "--admin-password-stdin", "--password-stdin")[0] == 0  # fmt: skip
    make_sites(tmp_path / "sites.parquet", 3)
    before = _dump(db)
    _stdin(monkeypatch, *stdin)
    code, out, err = run(*args)
    assert code == 2 and out == "" and message in err and err.count("\n") == 1, err
    assert _dump(db) == before


def test_users_disable_and_load_with_passwords(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run: Run
) -> None:
    _stdin(monkeypatch, SECRET, "bobs own password")
    assert run("users", "add", "bob", "--role", "analyst", "--user", "root",
               "--admin-password-stdin", "--password-stdin")[0] == 0  # fmt: skip
    _stdin(monkeypatch, "bobs own password")
    sites = make_sites(tmp_path / "sites.parquet", 4)
    code, out, err = run("review", "load", sites, "--user", "bob", "--password-stdin")
    assert code == 0 and out.startswith("run run-1: 4 sites"), err
    entry = _last(db)
    assert (entry.actor, entry.action) == ("bob", "load_run")
    assert "local_override" not in entry.to_dict()["after"]
    _stdin(monkeypatch, SECRET)
    assert run("users", "disable", "bob", "--user", "root", "--password-stdin")[1] == (
        "user bob disabled\n"
    )
    entry = _last(db)
    assert (entry.actor, entry.action, entry.entity_id) == ("root", "user_disable", "bob")
    _stdin(monkeypatch, "bobs own password")  # a disabled user's password no longer works
    code, _, err = run("review", "load", sites, "--user", "bob", "--password-stdin")
    assert code == 2 and "is disabled" in err


def test_load_on_the_files_authority_is_on_record(db: Path, tmp_path: Path, run: Run) -> None:
    sites = make_sites(tmp_path / "sites.parquet", 2)
    code, _, err = run("review", "load", sites, AS_ADMIN)
    assert code == 0, err
    entry = _last(db)
    assert (entry.actor, entry.action) == (local_actor(), "load_run")
    assert entry.to_dict()["after"]["local_override"] == local_actor()


@pytest.mark.parametrize(
    ("args", "stdin"),
    [
        (["review", "load", "sites.parquet", "--user", "ann", "--password-stdin"], [SECRET]),
        (["review", "load", "sites.parquet", "--user", "ann", AS_ADMIN], []),
        (["review", "load", "sites.parquet"], []),
        (["review", "load", "bad.parquet", AS_ADMIN], []),
        (["review", "load", "noscore.geojson", AS_ADMIN], []),
        (["review", "load", "sites.parquet", "--run-id", "other", AS_ADMIN], []),
        (["users", "add", "ann", "--role", "analyst", "--user", "root",
          "--admin-password-stdin"], [SECRET]),
        (["users", "add", "ann", "--role", "analyst"], []),
    ],
)  # fmt: skip
def test_refused_commands_create_no_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run: Run, args: list[str], stdin: list[str]
) -> None:
    """A refused load or users add leaves no store behind (nor its -wal or -shm files)."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    monkeypatch.chdir(inputs)
    make_sites(inputs / "sites.parquet", 3)
    (inputs / "bad.parquet").write_bytes(b"not parquet")
    point = '{"type": "Feature", "properties": {"a": 1}, "geometry": {"type": "Point", '
    point += '"coordinates": [1, 2]}}'
    (inputs / "noscore.geojson").write_text(
        f'{{"type": "FeatureCollection", "features": [{point}]}}'
    )
    _stdin(monkeypatch, *stdin)
    code, _, err = run(*args, "--db", tmp_path / "new.sqlite")
    assert code == 2 and err.startswith("geoscreen: error: ") and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]
