"""The store's guard triggers (revisions 0007 and 0008): direct SQL that bypasses the workflow is
refused by the database, on SQLite and PostgreSQL, while the workflow, loads, re-screens
and purges still work."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import pytest
import shapely
from alembic import command
from argon2 import PasswordHasher
from sqlalchemy import insert, select, text
from sqlalchemy.exc import DBAPIError

from geoscreen.review import audit, db, migrate
from geoscreen.review.loader import load_sites
from geoscreen.review.retention import purge
from geoscreen.review.schema import (
    candidates,
    detections,
    review_events,
    run_scenes,
    runs,
    scenes,
    users,
)
from geoscreen.review.store import Store, open_store
from geoscreen.review.testing import drop_guards
from geoscreen.review.users import set_active, set_password
from geoscreen.review.workflow import add_note, set_status

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
def reviewed(store: Store, sites: Callable[..., Path]) -> Store:
    load_sites(store, sites(5), actor="test")
    set_status(store, 1, "in_review", user="ann")
    set_status(store, 1, "confirmed", user="ann", reason="kiln rows")
    add_note(store, 2, "check the chimney", user="bob")
    return store


REFUSED = [
    "UPDATE candidates SET status = 'escalated' WHERE id = 1",
    "UPDATE candidates SET status = 'escalated', version = version + 1 WHERE id = 1",
    "UPDATE candidates SET version = 7 WHERE id = 2",
    "UPDATE candidates SET site_id = 'elsewhere' WHERE id = 2",
    "UPDATE candidates SET score = 0.999 WHERE id = 2",
    "UPDATE candidates SET geom_wkb = (SELECT geom_wkb FROM candidates WHERE id = 3) WHERE id = 2",
    "UPDATE candidates SET evidence_path = NULL WHERE id = 2",
    "DELETE FROM candidates WHERE id = 3",
    "INSERT INTO candidates (profile, site_id, status, version, geom_wkb, minx, miny, maxx, "
    "maxy, lon, lat, last_run_pk, created_at) SELECT profile, 'forged', 'confirmed', 2, "
    "geom_wkb, minx, miny, maxx, maxy, lon, lat, last_run_pk, created_at FROM candidates "
    "WHERE id = 1",
    "UPDATE review_events SET text = 'other reason' WHERE kind = 'status'",
    "DELETE FROM review_events WHERE kind = 'note'",
    "UPDATE detections SET score = 0.99",
    "DELETE FROM detections",
    "UPDATE users SET role = 'admin' WHERE name = 'vic'",
    "UPDATE users SET name = 'eve' WHERE name = 'vic'",
    "DELETE FROM users WHERE name = 'bob'",
    "UPDATE runs SET model_sha256 = 'cd' WHERE id = 1",
    "DELETE FROM runs",
    "DELETE FROM scenes WHERE scene_id = 'S2_0'",
    "UPDATE scenes SET scene_id = 'S2_9' WHERE scene_id = 'S2_0'",
    "UPDATE scenes SET acquired = NULL",
    "UPDATE scenes SET first_loaded_at = NULL",
    "UPDATE run_scenes SET status = 'failed'",
    "UPDATE run_scenes SET site_count = 0",
    "DELETE FROM run_scenes",
]


@pytest.mark.parametrize("statement", REFUSED)
def test_direct_edits_are_refused(reviewed: Store, statement: str) -> None:
    with pytest.raises(DBAPIError), reviewed.write() as conn:
        conn.execute(text(statement))
    assert audit.verify(reviewed).ok


def test_a_forged_event_lets_the_status_change_but_verify_finds_it(reviewed: Store) -> None:
    """The guards check that status and event agree, not who decided: an event
    inserted by hand opens the way, and has no audit entry."""
    with reviewed.write() as conn:
        conn.execute(insert(review_events).values(
            candidate_id=1, kind="status", from_status="confirmed", to_status="escalated",
            text="forged", user_name="sue", at=NOW, version=4,
        ))  # fmt: skip
        conn.execute(text("UPDATE candidates SET status = 'escalated', version = 4 WHERE id = 1"))
    assert reviewed.candidate(1).status == "escalated"
    assert audit.verify(reviewed).problems == [
        "candidate 1: its review events differ from the audited history",
        "candidate 1: status escalated (version 4) is not what the audit log says (confirmed, "
        "version 3): changed directly",
    ]


def test_exports_are_append_only(reviewed: Store, tmp_path: Path) -> None:
    from geoscreen.review.export import export_candidates

    export_candidates(reviewed, tmp_path / "out.geojson", user="ann")
    for statement in ("UPDATE exports SET count = 0", "DELETE FROM exports"):
        with pytest.raises(DBAPIError), reviewed.write() as conn:
            conn.execute(text(statement))


def test_the_workflow_still_works_under_the_guards(
    reviewed: Store, sites: Callable[..., Path], tmp_path: Path
) -> None:
    set_status(reviewed, 1, "escalated", user="sue", reason="share")
    set_status(reviewed, 3, "rejected", user="bob", reason="a field", claim=True)
    set_active(reviewed, "vic", False, actor="ada")
    set_password(reviewed, "bob", "a long enough password", actor="ada")
    every = ("S2_0", "S2_1", "S2_2")
    fewer = load_sites(reviewed, sites(2, run_id="run-2", seed=1), actor="test",
                       rescreened=every)  # fmt: skip
    more = load_sites(reviewed, sites(8, run_id="run-3", seed=2), actor="test",
                      rescreened=every)  # fmt: skip
    assert (fewer.below_threshold, more.found_again, more.new) == (3, 3, 3)
    chip = tmp_path / "evidence" / "site-0000002.png"
    chip.parent.mkdir()
    chip.write_bytes(b"png")
    purged = purge(reviewed, {}, actor="ada", roots=[tmp_path])
    assert purged.files == 1 and not chip.exists()
    assert reviewed.candidate(1).status == "escalated"
    assert audit.verify(reviewed).ok, audit.verify(reviewed).problems


def test_a_later_load_still_records_where_a_scene_file_is(
    reviewed: Store, sites: Callable[..., Path], tmp_path: Path
) -> None:
    """The one change to a scene the guards allow: its file seen at a new place."""
    path = sites(4, run_id="run-2", seed=3)
    frame = gpd.read_parquet(path)
    frame["scene_uri"] = str(tmp_path / "moved" / "S2.tif")
    frame.to_parquet(path)
    load_sites(reviewed, path, actor="test")
    with reviewed.read() as conn:
        uris = set(conn.execute(select(scenes.c.uri)).scalars())
        screened = conn.execute(select(run_scenes.c.run_pk)).scalars().all()
    moved = str(tmp_path / "moved" / "S2.tif")  # relative to a SQLite store's folder
    assert uris == {"moved/S2.tif" if reviewed.dialect == "sqlite" else moved}
    assert sorted(screened) == [1, 1, 1, 2, 2, 2]
    with pytest.raises(DBAPIError), reviewed.write() as conn:
        conn.execute(text("UPDATE scenes SET uri = NULL, scene_id = 'other'"))
    assert audit.verify(reviewed).ok, audit.verify(reviewed).problems


def test_drop_guards_names_what_an_owner_can_drop(reviewed: Store) -> None:
    with reviewed.write() as conn:
        dropped = drop_guards(conn)
    assert {"candidates_status_follows_event", "audit_log_follows_head"} <= set(dropped)
    with reviewed.write() as conn:  # now nothing stops it: verify must catch it
        conn.execute(text("UPDATE candidates SET status = 'escalated' WHERE id = 1"))
    assert not audit.verify(reviewed).ok


def test_upgrade_from_0006_guards_existing_stores(db_url: str) -> None:
    engine = db.make_engine(db.resolve_url(db_url))
    try:
        with engine.begin() as conn:
            command.upgrade(migrate._config(conn), "0006")
            inserted = conn.execute(insert(runs).values(
                run_id="old", profile="p", loaded_by="t", started_at=NOW, completed_at=NOW,
                site_count=1, new_count=1,
            )).inserted_primary_key  # fmt: skip
            assert inserted is not None
            box = shapely.box(0, 0, 1, 1).wkb
            conn.execute(insert(candidates).values(
                profile="p", site_id="s", status="confirmed", version=3, geom_wkb=box,
                minx=0, miny=0, maxx=1, maxy=1, lon=0.5, lat=0.5, last_run_pk=inserted[0],
                created_at=NOW,
            ))  # fmt: skip
    finally:
        engine.dispose()
    with open_store(db_url) as store:
        with store.read() as conn:
            assert migrate.current_revision(conn) == migrate.head_revision() == "0008"
            row = conn.execute(select(candidates.c.status, candidates.c.version)).one()
        assert tuple(row) == ("confirmed", 3)  # older data is kept as it was
        for statement in REFUSED[:3]:
            with pytest.raises(DBAPIError), store.write() as conn:
                conn.execute(text(statement.replace("id = 2", "id = 1")))


def test_upgrade_from_0007_guards_scenes(db_url: str, sites: Callable[..., Path]) -> None:
    engine = db.make_engine(db.resolve_url(db_url))
    try:
        with engine.begin() as conn:
            command.upgrade(migrate._config(conn), "0007")
            conn.execute(insert(scenes).values(scene_id="old", first_loaded_at=NOW))
    finally:
        engine.dispose()
    with open_store(db_url) as store:
        with store.read() as conn:
            assert migrate.current_revision(conn) == "0008"
            assert conn.execute(select(scenes.c.scene_id)).scalars().all() == ["old"]
        for statement in ("DELETE FROM scenes", "UPDATE scenes SET scene_id = 'new'"):
            with pytest.raises(DBAPIError), store.write() as conn:
                conn.execute(text(statement))
        load_sites(store, sites(3), actor="test")  # loads still record scenes
        with pytest.raises(DBAPIError), store.write() as conn:
            conn.execute(text("DELETE FROM run_scenes"))


def test_truncate_of_scene_tables_is_refused_on_postgresql(reviewed: Store) -> None:
    if reviewed.dialect != "postgresql":
        pytest.skip("TRUNCATE is PostgreSQL's")
    for statement in ("TRUNCATE run_scenes", "TRUNCATE scenes CASCADE"):
        with pytest.raises(DBAPIError, match="refused"), reviewed.write() as conn:
            conn.execute(text(statement))


def test_upgrade_records_a_digest_baseline_for_older_entries(db_url: str) -> None:
    """Entries written before revision 0007 hold no digests: the upgrade records those of
    the store as it is, so a password hash or detection changed later is found."""
    engine = db.make_engine(db.resolve_url(db_url))
    try:
        with engine.begin() as conn:
            command.upgrade(migrate._config(conn), "0006")
            hashed = PasswordHasher().hash("an old password")
            conn.execute(insert(users).values(name="old", role="admin", password_hash=hashed,
                                              active=True, created_at=NOW))  # fmt: skip
            audit.append(conn, actor="t", action="user_add", entity="user", entity_id="old",
                         after={"name": "old", "role": "admin", "password": True,
                                "active": True})  # fmt: skip
            pk = conn.execute(insert(runs).values(
                run_id="old-run", profile="p", loaded_by="t", started_at=NOW, completed_at=NOW,
                site_count=1, new_count=1,
            )).inserted_primary_key[0]  # fmt: skip
            box = shapely.box(0, 0, 1, 1).wkb
            cid = conn.execute(insert(candidates).values(
                profile="p", site_id="s", status="new", version=1, geom_wkb=box, score=0.5,
                minx=0, miny=0, maxx=1, maxy=1, lon=0.5, lat=0.5, last_run_pk=pk,
                created_at=NOW,
            )).inserted_primary_key[0]  # fmt: skip
            conn.execute(insert(detections).values(candidate_id=cid, run_pk=pk, score=0.5,
                                                   geom_wkb=box))  # fmt: skip
            audit.append(conn, actor="t", action="load_run", entity="run", entity_id="old-run",
                         after={"sites": 1, "new": 1})  # fmt: skip
    finally:
        engine.dispose()
    with open_store(db_url) as store:
        baseline = list(audit.entries(store))[-1]
        assert (baseline.seq, baseline.action, baseline.actor) == (3, "digest_baseline",
                                                                   "geoscreen-upgrade")  # fmt: skip
        assert set(baseline.to_dict()["after"]["runs"]) == {"old-run"}
        assert audit.verify(store).ok, audit.verify(store).problems
        with store.write() as conn:
            drop_guards(conn)
            conn.execute(text("UPDATE users SET password_hash = :h"),
                         {"h": PasswordHasher().hash("someone else's")})  # fmt: skip
            conn.execute(text("UPDATE detections SET score = 0.9"))
            conn.execute(text("UPDATE candidates SET score = 0.9"))
        assert audit.verify(store).problems == [
            "user old: password hash replaced without an audit entry",
            "run old-run: its detections (outlines, scores or evidence paths) differ from its "
            "audit entry: changed directly",
        ]
    with open_store(db_url) as again:  # recorded once, not per opening
        assert len(list(audit.entries(again))) == 3
