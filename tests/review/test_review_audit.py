"""The audit log: chained entries, triggers refusing changes, and tampering detected."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from geoscreen.review import audit
from geoscreen.review.loader import load_sites
from geoscreen.review.schema import GENESIS_HASH
from geoscreen.review.store import Store
from geoscreen.review.workflow import add_note, set_status

_DROP = {
    "sqlite": [
        "DROP TRIGGER audit_log_no_update",
        "DROP TRIGGER audit_log_no_delete",
        "DROP TRIGGER audit_head_next",
    ],
    "postgresql": [
        "DROP TRIGGER audit_log_no_change ON audit_log",
        "DROP TRIGGER audit_head_next ON audit_head",
    ],
}


@pytest.fixture
def reviewed(store: Store, sites: Callable[..., Path]) -> Store:
    load_sites(store, sites(5), actor="test")
    set_status(store, 1, "in_review", user="ann")
    set_status(store, 1, "confirmed", user="ann", reason="kiln rows")
    add_note(store, 2, "check the chimney", user="bob")
    audit.record_view(store, 1, user="vic")
    return store


def _raw(store: Store, *statements: str) -> None:
    with store.write() as conn:
        for statement in statements:
            conn.execute(text(statement))


def test_chain_is_complete(reviewed: Store) -> None:
    entries = list(audit.entries(reviewed))
    actions = [e.action for e in entries]
    assert actions == ["user_add"] * 6 + ["load_run", "status", "status", "note", "view"]
    assert entries[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
    assert all(audit.entry_hash(e.prev_hash, e.__dict__) == e.hash for e in entries)
    status = entries[8].to_dict()
    assert status["before"] == {"status": "in_review", "version": 2}
    assert status["after"] == {"status": "confirmed", "version": 3, "reason": "kiln rows"}
    assert (status["actor"], status["entity_id"], status["profile"]) == (
        "ann",
        "1",
        "brick_kilns_s2",
    )
    assert status["profile_version"] == "0.1.0"
    report = audit.verify(reviewed)
    assert report.ok and report.entries == 11 and report.head_hash == entries[-1].hash


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET actor = 'mallory' WHERE seq = 8",
        "DELETE FROM audit_log WHERE seq = 8",
        "DELETE FROM audit_log",
        "UPDATE audit_head SET seq = 3",
        "DELETE FROM audit_head",
        "INSERT INTO audit_log (seq, at, actor, action, entity, prev_hash, hash) "
        "VALUES (99, 'now', 'x', 'y', 'z', 'p', 'h')",
    ],
)
def test_triggers_refuse_changes(reviewed: Store, statement: str) -> None:
    with pytest.raises(DBAPIError, match="audit"):
        _raw(reviewed, statement)
    assert audit.verify(reviewed).ok


def test_truncate_refused_on_postgres(reviewed: Store) -> None:
    if reviewed.dialect != "postgresql":
        pytest.skip("TRUNCATE exists on PostgreSQL only")
    with pytest.raises(DBAPIError, match="append-only"):
        _raw(reviewed, "TRUNCATE audit_log")


def test_edit_is_detected(reviewed: Store) -> None:
    forged = json.dumps({"status": "rejected", "version": 3, "reason": "kiln rows"})
    _raw(reviewed, *_DROP[reviewed.dialect],
         f"UPDATE audit_log SET after = '{forged}' WHERE seq = 9")  # fmt: skip
    report = audit.verify(reviewed)
    assert not report.ok
    assert report.problems == [
        "entry 9: content does not match its hash (edited)",
        "candidate 1: its review events differ from the audited history",
        "candidate 1: status confirmed (version 3) is not what the audit log says "
        "(rejected, version 3): changed directly",
    ]


def test_edit_with_recomputed_hash_is_detected(reviewed: Store) -> None:
    entry = next(e for e in audit.entries(reviewed) if e.seq == 9)
    fields = {**entry.__dict__, "actor": "mallory"}
    new_hash = audit.entry_hash(entry.prev_hash, fields)
    _raw(reviewed, *_DROP[reviewed.dialect],
         f"UPDATE audit_log SET actor = 'mallory', hash = '{new_hash}' WHERE seq = 9")  # fmt: skip
    problems = audit.verify(reviewed).problems
    assert problems == [
        "entry 10: does not link to the entry before it",
        "candidate 1: its review events differ from the audited history",  # mallory did not
    ]


def test_deleted_entry_is_detected(reviewed: Store) -> None:
    _raw(reviewed, *_DROP[reviewed.dialect], "DELETE FROM audit_log WHERE seq = 5")
    problems = audit.verify(reviewed).problems
    assert problems[0] == "entries 5..5 are missing (deleted)"
    assert "entry 6: does not link to the entry before it" in problems


def test_deleted_tail_is_detected(reviewed: Store) -> None:
    _raw(reviewed, *_DROP[reviewed.dialect], "DELETE FROM audit_log WHERE seq >= 10")
    problems = audit.verify(reviewed).problems
    assert problems == [
        "the log ends at entry 9 but the head says 11: entries were deleted or the head was "
        "changed",
        "candidate 2: its review events differ from the audited history",  # its note
    ]


def test_view_needs_a_user(reviewed: Store) -> None:
    from geoscreen.review.errors import NotFoundError

    with pytest.raises(NotFoundError):
        audit.record_view(reviewed, 1, user="nobody")
    assert audit.verify(reviewed).entries == 11
