"""Rows changed in place beside the audit log: password hashes, outlines and scores.

A password hash may change in the database (logins rehash), so only ``audit verify``
can find one replaced; outlines and scores change only to a detection of the run that
last saw the candidate, a guard that the store's owner can drop. Either way ``audit
verify`` finds the change through the digests the audit entries recorded
(:mod:`geoscreen.review.audit_digest`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import shapely
from argon2 import PasswordHasher
from shapely import affinity
from sqlalchemy import select, text, update
from sqlalchemy.exc import DBAPIError

from geoscreen.cli.app import main
from geoscreen.review import audit, users
from geoscreen.review.loader import load_sites
from geoscreen.review.schema import candidates
from geoscreen.review.store import Store
from geoscreen.review.testing import drop_guards
from geoscreen.review.workflow import add_note, set_status

EVERY_SCENE = ("S2_0", "S2_1", "S2_2")


@pytest.fixture
def looped(store: Store, sites: Callable[..., Path]) -> Store:
    """The normal loop: load, review, note, re-screen with other scores, password change."""
    load_sites(store, sites(6, run_id="run-1"), actor="test")
    set_status(store, 1, "in_review", user="ann")
    set_status(store, 1, "confirmed", user="ann", reason="kiln rows")
    add_note(store, 2, "check the chimney", user="bob")
    rescan = sites(4, run_id="run-2", seed=7, acquired="2024-06-01T05:31:21Z")
    load_sites(store, rescan, actor="test", rescreened=EVERY_SCENE)  # flags 5 and 6
    users.set_password(store, "bob", "another long password", actor="ada")
    return store


def _verify_cli(db_url: str, store: Store, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    store.close()
    capsys.readouterr()
    code = main(["audit", "verify", "--db", db_url])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_the_normal_loop_verifies(
    looped: Store, db_url: str, password: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert looped.candidate(5).below_threshold
    assert [s.run_id for s in looped.score_history(1)] == ["run-1", "run-2"]
    assert users.authenticate(looped, "ann", password) is not None
    code, output = _verify_cli(db_url, looped, capsys)
    assert code == 0, output
    assert output.startswith("ok: ")


def test_a_replaced_password_hash_is_tampering(
    looped: Store, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Someone with the store sets their own password on a supervisor's account."""
    with looped.write() as conn:  # no guard refuses it: a rehash changes the hash too
        conn.execute(text("UPDATE users SET password_hash = :h WHERE name = 'sue'"),
                     {"h": PasswordHasher().hash("the attacker's password")})  # fmt: skip
    assert users.authenticate(looped, "sue", "the attacker's password") is not None
    code, output = _verify_cli(db_url, looped, capsys)
    assert code == 1
    assert "audit: user sue: password hash replaced without an audit entry" in output
    assert "TAMPERED: 1 problems" in output and "Traceback" not in output


def test_a_moved_outline_is_tampering(
    looped: Store, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The outline, its box and its point moved consistently by 0.1 degrees."""
    found = looped.candidate(3)
    moved = affinity.translate(shapely.from_wkb(found.geom_wkb), xoff=0.1)
    minx, miny, maxx, maxy = moved.bounds
    move = update(candidates).where(candidates.c.id == 3).values(
        geom_wkb=moved.wkb, minx=minx, miny=miny, maxx=maxx, maxy=maxy, lon=found.lon + 0.1,
    )  # fmt: skip
    with pytest.raises(DBAPIError, match="come from a detection"), looped.write() as conn:
        conn.execute(move)
    with looped.write() as conn:  # the store's owner can drop the guards
        drop_guards(conn)
        conn.execute(move)
    code, output = _verify_cli(db_url, looped, capsys)
    assert code == 1
    assert "audit: candidate 3: outline differs from its audited detection (changed directly)" in (
        output
    )


def test_a_box_moved_without_its_outline_is_tampering(looped: Store) -> None:
    with looped.write() as conn:  # the map and spatial filters use the box
        conn.execute(text("UPDATE candidates SET minx = minx + 1, maxx = maxx + 1 WHERE id = 4"))
    assert audit.verify(looped).problems == [
        "candidate 4: outline, position differs from its audited detection (changed directly)"
    ]


def test_a_changed_score_is_tampering(
    looped: Store, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A score raised so that a candidate comes first in the queue."""
    raise_score = text("UPDATE candidates SET score = 0.999 WHERE id = 2")
    with pytest.raises(DBAPIError, match="come from a detection"), looped.write() as conn:
        conn.execute(raise_score)
    with looped.write() as conn:
        drop_guards(conn)
        conn.execute(raise_score)
    code, output = _verify_cli(db_url, looped, capsys)
    assert code == 1
    assert "audit: candidate 2: score differs from its audited detection (changed directly)" in (
        output
    )


def test_a_detection_changed_with_its_candidate_is_tampering(looped: Store) -> None:
    """Detections are append-only; their owner can drop that guard and change a detection
    and its candidate together: the run's digest then differs."""
    with looped.write() as conn:
        drop_guards(conn)
        run_pk = conn.execute(select(candidates.c.last_run_pk).where(candidates.c.id == 2))
        pk = run_pk.scalar_one()
        conn.execute(text("UPDATE candidates SET score = 0.999 WHERE id = 2"))
        conn.execute(text(f"UPDATE detections SET score = 0.999 WHERE candidate_id = 2 "
                          f"AND run_pk = {pk}"))  # fmt: skip
    assert audit.verify(looped).problems == [
        "run run-2: its detections (outlines, scores or evidence paths) differ from its audit "
        "entry: changed directly"
    ]


def test_a_rehash_at_login_is_audited(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hash made with older argon2 parameters is replaced at the next login: that is
    written to the log too, so the store still verifies."""
    weak = PasswordHasher(time_cost=1, memory_cost=8 * 1024)
    with monkeypatch.context() as patched:  # a store written by an older geoscreen
        patched.setattr(users, "_hasher", weak)
        users.set_password(store, "vic", "an old style password", actor="ada")
    assert users.authenticate(store, "vic", "an old style password") is not None
    rehash = list(audit.entries(store, entity="user", entity_id="vic"))[-1]
    assert (rehash.action, rehash.actor) == ("user_password", "vic")
    assert rehash.to_dict()["after"]["rehash"] is True
    assert audit.verify(store).ok, audit.verify(store).problems


def test_a_dropped_detections_table_is_tampering(looped: Store) -> None:
    with looped.write() as conn:
        drop_guards(conn)
        conn.execute(text("DROP TABLE detections"))
    assert audit.verify(looped).problems == ["table detections is missing (dropped)"]
