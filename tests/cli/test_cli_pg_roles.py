"""The README's PostgreSQL roles: a reviewer's read-only login cannot change the store.

The SQL is taken from the README as written (schema and role names made unique), run
against the PostgreSQL test database, and then every way of writing is tried with the
read-only login: the geoscreen commands that write, and plain SQL.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError

from geoscreen.review.testing import make_sites, pg_base_url, pg_schema

pytestmark = pytest.mark.skipif(pg_base_url() is None, reason="needs GEOSCREEN_TEST_PG_URL")
README = Path(__file__).resolve().parents[2] / "README.md"
AS_ADMIN = "--as-admin-of-this-file"
Run = Callable[..., tuple[int, str, str]]


def _readme_sql() -> list[str]:
    text_ = README.read_text(encoding="utf-8")
    block = re.search(r"```sql\n(.*?)```", text_, re.S)
    assert block is not None, "the README lost its SQL block"
    lines = [line.split("--")[0] for line in block.group(1).splitlines()]
    return [s.strip() for s in " ".join(lines).split(";") if s.strip()]


@pytest.fixture
def store_and_reader(run: Run, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(owner URL, reader URL) of a store with one run, a user and a decision."""
    base = pg_base_url()
    assert base is not None
    tag = uuid.uuid4().hex[:8]
    group, login = f"gs_read_{tag}", f"gs_rita_{tag}"
    with pg_schema(base) as url:
        schema = re.search(r"search_path%3D(\w+)|search_path=(\w+)", url)
        assert schema is not None
        name = schema.group(1) or schema.group(2)
        assert run("review", "load", make_sites(tmp_path / "s.parquet", 4), "--db", url,
                   AS_ADMIN)[0] == 0  # fmt: skip
        code, _, err = run("users", "add", "ann", "--role", "analyst", "--db", url, AS_ADMIN)
        assert code == 0, err
        assert run("review", "set", "1", "in_review", "--user", "ann", "--db", url,
                   AS_ADMIN)[0] == 0  # fmt: skip
        owner = create_engine(make_url(url), isolation_level="AUTOCOMMIT")
        try:
            with owner.connect() as conn:
                for statement in _readme_sql():
                    statement = re.sub(r"\bpublic\b", f'"{name}"', statement)
                    statement = statement.replace("geoscreen_read", group).replace("rita", login)
                    conn.execute(text(statement))
            yield url, make_url(url).set(username=login).render_as_string(hide_password=False)
        finally:
            with owner.connect() as conn:
                for role in (login, group):
                    conn.execute(text(f"DROP OWNED BY {role}"))
                    conn.execute(text(f"DROP ROLE {role}"))
            owner.dispose()


def test_a_read_only_login_reads(store_and_reader: tuple[str, str], run: Run) -> None:
    _, reader = store_and_reader
    code, out, err = run("review", "list", "--db", reader, "--json")
    assert code == 0 and '"total": 4' in out, err
    code, out, err = run("audit", "verify", "--db", reader)
    assert code == 0 and out.startswith("ok: 3 entries"), err


@pytest.mark.parametrize(
    "args",
    [
        ["review", "set", "2", "in_review", "--user", "ann", AS_ADMIN],
        ["review", "note", "1", "looks like a kiln", "--user", "ann", AS_ADMIN],
        ["users", "add", "bob", "--role", "admin", AS_ADMIN],
        ["users", "disable", "ann", AS_ADMIN],
        ["export", "--user", "ann", AS_ADMIN, "--out", "out.geojson"],
    ],
)
def test_geoscreen_cannot_write_through_it(
    store_and_reader: tuple[str, str], run: Run, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, args: list[str],
) -> None:  # fmt: skip
    owner, reader = store_and_reader
    monkeypatch.chdir(tmp_path)
    code, _, err = run(*args, "--db", reader)
    assert code == 2 and "permission denied" in err and err.count("\n") == 1, err
    assert "connect as the store's owner" in err and not (tmp_path / "out.geojson").exists()
    code, out, _ = run("audit", "verify", "--db", owner)
    assert code == 0 and out.startswith("ok: 3 entries")


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE candidates SET status = 'escalated'",
        "UPDATE audit_head SET seq = 0",
        "DELETE FROM review_events",
        "INSERT INTO users (name, role, active, created_at) VALUES ('eve', 'admin', true, now())",
        "TRUNCATE audit_log",
        "DROP TABLE audit_log",
        "ALTER TABLE audit_log DISABLE TRIGGER ALL",
        "CREATE TABLE shadow (a int)",
    ],
)
def test_plain_sql_cannot_write_through_it(
    store_and_reader: tuple[str, str], run: Run, statement: str
) -> None:
    owner, reader = store_and_reader
    engine = create_engine(make_url(reader))
    try:
        with (
            pytest.raises(ProgrammingError, match=r"permission denied|must be owner"),
            engine.begin() as conn,
        ):
            conn.execute(text(statement))
    finally:
        engine.dispose()
    code, out, _ = run("audit", "verify", "--db", owner)
    assert code == 0 and out.startswith("ok: 3 entries")
