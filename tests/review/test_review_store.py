"""Opening stores, the migrated schema, and reading candidates (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import hashlib
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
import shapely
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, text

from geoscreen.errors import ConfigError
from geoscreen.review.db import resolve_url
from geoscreen.review.errors import NotFoundError, StoreError
from geoscreen.review.loader import load_sites
from geoscreen.review.migrate import head_revision
from geoscreen.review.records import Candidate
from geoscreen.review.schema import metadata
from geoscreen.review.spatial import BBox
from geoscreen.review.store import CandidateFilter, Store, open_store
from geoscreen.review.testing import pg_base_url, pg_schema


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.filterwarnings("ignore:Did not recognize type 'geometry'")
def test_migrated_schema_matches_tables(store: Store) -> None:
    """The alembic migration and schema.py describe the same tables."""
    spatial = {"candidates_rtree", "geom", "ix_candidates_geom"}

    def include(obj: object, name: str | None, type_: str, reflected: bool, _c: object) -> bool:
        return not (name or "").startswith(("candidates_rtree", "spatial_ref_sys")) and (
            name not in spatial
        )

    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_object": include})
        assert compare_metadata(context, metadata) == []
        assert context.get_current_revision() == head_revision()


def test_reopen_is_idempotent(db_url: str) -> None:
    with open_store(db_url, create=True) as first:
        assert first.count() == 0
    with open_store(db_url) as again:
        assert again.count() == 0


def test_sqlite_store_is_wal_with_rtree(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    open_store(path, create=True).close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE name='candidates_rtree'").fetchone()
    assert "rtree" in sql[0].lower()


def test_missing_sqlite_file_is_not_created_for_reading(tmp_path: Path) -> None:
    path = tmp_path / "nope.sqlite"
    with pytest.raises(StoreError, match="no review store here"):
        open_store(path)
    assert not path.exists()


@pytest.mark.parametrize("kind", ["text", "sqlite"])
def test_foreign_file_is_refused_and_left_alone(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "other.sqlite"
    if kind == "text":
        path.write_text("just some notes\n" * 100)
    else:
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE birds (name TEXT)")
            conn.execute("INSERT INTO birds VALUES ('heron')")
        conn.close()
    before = _digest(path)
    for create in (False, True):
        with pytest.raises(StoreError, match="not a geoscreen review store"):
            open_store(path, create=create)
    assert _digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.sqlite"]


def test_unreachable_postgres_is_a_store_error() -> None:
    with pytest.raises(StoreError, match=r"127\.0\.0\.1"):
        open_store("postgresql://nobody@127.0.0.1:9/none")


def test_bad_urls() -> None:
    with pytest.raises(ConfigError, match="unsupported database"):
        resolve_url("mysql://x@localhost/db")
    with pytest.raises(ConfigError, match="needs a file"):
        resolve_url("sqlite://")


@pytest.mark.skipif(pg_base_url() is None, reason="needs GEOSCREEN_TEST_PG_URL")
def test_postgres_schema_checks() -> None:
    base = pg_base_url()
    assert base is not None
    with pg_schema(base) as url:
        with pytest.raises(StoreError, match="no review store in this database"):
            open_store(url)
        engine = create_engine(resolve_url(url))
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE birds (name text)"))
        with pytest.raises(StoreError, match="not a geoscreen review store"):
            open_store(url, create=True)
        with engine.connect() as conn:
            tables = (
                conn.execute(
                    text(
                        "SELECT table_name FROM information_schema.tables "
                        "WHERE table_schema = current_schema()"
                    )
                )
                .scalars()
                .all()
            )
        engine.dispose()
        assert tables == ["birds"]


def test_unknown_candidate(store: Store) -> None:
    with pytest.raises(NotFoundError, match="no candidate with id 42"):
        store.candidate(42)
    with pytest.raises(NotFoundError):
        store.history(42)


def test_bbox_query_matches_brute_force(store: Store, sites: Callable[..., Path]) -> None:
    load_sites(store, sites(400, bounds=(10.0, 40.0, 12.0, 42.0)), actor="test")
    everything = store.candidates()
    assert len(everything) == 400
    for box in [
        BBox(10.5, 40.5, 11.0, 41.2),
        BBox(9.0, 39.0, 10.2, 40.3),
        BBox(11.9, 41.9, 13, 43),
    ]:
        expected = {
            c.id for c in everything if shapely.intersects(shapely.box(*_bounds(c)), box.polygon)
        }
        found = store.in_bbox(box, limit=10_000)
        assert {c.id for c in found} == expected
        assert [c.score for c in found] == sorted((c.score for c in found), reverse=True)
    assert store.in_bbox(BBox(0, 0, 1, 1)) == []
    drawn = store.in_bbox(BBox(10, 40, 12, 42), statuses=["new"], geometry=True, limit=3)
    assert [d.geom_wkb for d in drawn] == [store.candidate(d.id).geom_wkb for d in drawn]
    assert store.in_bbox(BBox(10, 40, 12, 42), statuses=["confirmed"]) == []
    assert len(store.in_bbox(BBox(10, 40, 12, 42), limit=7)) == 7


def _bounds(c: Candidate) -> tuple[float, float, float, float]:
    return (c.minx, c.miny, c.maxx, c.maxy)


def test_filters_and_frame(store: Store, sites: Callable[..., Path]) -> None:
    load_sites(store, sites(30, acquired="2024-03-01T00:00:00Z"), actor="test")
    load_sites(
        store,
        sites(10, run_id="run-2", first_site=100, acquired="2024-05-01T00:00:00Z", profile="camps"),
        actor="test",
    )
    assert store.count(CandidateFilter(profile="camps")) == 10
    since = CandidateFilter(since=_utc("2024-04-01"))
    assert store.count(since) == 10
    assert store.count(CandidateFilter(until=_utc("2024-04-01"))) == 30
    assert store.count(CandidateFilter(statuses=("new",))) == 40
    assert store.count(CandidateFilter(statuses=("confirmed",))) == 0
    frame = store.frame(CandidateFilter(profile="camps"))
    assert len(frame) == 10 and frame.crs.to_epsg() == 4326
    assert set(frame["match"]) == {"matches profile camps"}
    assert str(frame["last_seen"].dt.tz) == "UTC"
    newest = store.candidates(order="newest", limit=1)[0]
    assert newest.profile == "camps"
    with pytest.raises(ConfigError, match="unknown status"):
        CandidateFilter(statuses=("done",))
    with pytest.raises(ConfigError, match="unknown order"):
        store.candidates(order="random")


def _utc(day: str) -> dt.datetime:
    return dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC)
