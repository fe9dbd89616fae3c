"""The review workflow: transitions, reasons, roles, second reviewer, optimistic versions,
and concurrent reviewers in threads and processes (SQLite and PostgreSQL)."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select

from geoscreen.errors import ConfigError
from geoscreen.review import audit
from geoscreen.review.errors import AccessError, ConflictError, NotFoundError, TransitionError
from geoscreen.review.loader import load_sites
from geoscreen.review.schema import review_events
from geoscreen.review.store import Store, open_store
from geoscreen.review.workflow import TRANSITIONS, add_note, set_status


@pytest.fixture
def loaded(store: Store, sites: Callable[..., Path]) -> Store:
    load_sites(store, sites(10), actor="test")
    return store


def test_confirm_then_escalate_by_second_supervisor(loaded: Store) -> None:
    c = set_status(loaded, 1, "in_review", user="ann")
    assert (c.status, c.version, c.status_changed_by) == ("in_review", 2, "ann")
    c = set_status(loaded, 1, "confirmed", user="sue", reason="rows of kilns, chimneys")
    with pytest.raises(
        TransitionError, match="sue confirmed candidate 1; escalating needs a second"
    ):
        set_status(loaded, 1, "escalated", user="sue", reason="share with partner")
    with pytest.raises(AccessError, match=r"role analyst; to move .* needs supervisor"):
        set_status(loaded, 1, "escalated", user="bob", reason="share with partner")
    c = set_status(loaded, 1, "escalated", user="sam", reason="share with partner")
    assert (c.status, c.version) == ("escalated", 4)
    history = loaded.history(1)
    assert [(e.from_status, e.to_status, e.user_name) for e in history] == [
        ("new", "in_review", "ann"),
        ("in_review", "confirmed", "sue"),
        ("confirmed", "escalated", "sam"),
    ]
    assert history[1].text == "rows of kilns, chimneys"
    with pytest.raises(TransitionError, match="final status"):
        set_status(loaded, 1, "in_review", user="ada", reason="reopen")


def test_admin_counts_as_supervisor(loaded: Store) -> None:
    set_status(loaded, 2, "in_review", user="ann")
    set_status(loaded, 2, "confirmed", user="ann", reason="clear match")
    assert set_status(loaded, 2, "escalated", user="ada", reason="share").status == "escalated"


@pytest.mark.parametrize("status", ["confirmed", "rejected"])
@pytest.mark.parametrize("reason", [None, "", "   \n "])
def test_decisions_need_a_reason(loaded: Store, status: str, reason: str | None) -> None:
    set_status(loaded, 3, "in_review", user="ann")
    with pytest.raises(TransitionError, match="give a reason"):
        set_status(loaded, 3, status, user="ann", reason=reason)
    assert loaded.candidate(3).version == 2


def test_illegal_transitions_are_refused(loaded: Store) -> None:
    with pytest.raises(TransitionError, match="candidate 4 is new; it cannot become confirmed"):
        set_status(loaded, 4, "confirmed", user="ann", reason="x")
    with pytest.raises(ConfigError, match="unknown status 'done'"):
        set_status(loaded, 4, "done", user="ann")
    with pytest.raises(NotFoundError, match="no candidate with id 99"):
        set_status(loaded, 99, "in_review", user="ann")
    with pytest.raises(NotFoundError, match="no user named 'zed'"):
        set_status(loaded, 4, "in_review", user="zed")
    with pytest.raises(AccessError, match="role viewer"):
        set_status(loaded, 4, "in_review", user="vic")
    assert loaded.candidate(4).version == 1 and loaded.history(4) == []
    # Every status is reachable and every rule names a known target.
    assert set(TRANSITIONS) == {t for rules in TRANSITIONS.values() for t in rules} | {"new"}


def test_needs_imagery_and_reopen(loaded: Store) -> None:
    set_status(loaded, 5, "in_review", user="ann")
    set_status(loaded, 5, "needs_imagery", user="ann")
    set_status(loaded, 5, "in_review", user="bob")
    set_status(loaded, 5, "rejected", user="bob", reason="a quarry")
    with pytest.raises(AccessError):
        set_status(loaded, 5, "in_review", user="ann", reason="new imagery")
    with pytest.raises(TransitionError, match="give a reason"):
        set_status(loaded, 5, "in_review", user="sue")
    assert set_status(loaded, 5, "in_review", user="sue", reason="new imagery").version == 6


def test_claim_records_both_steps(loaded: Store) -> None:
    c = set_status(loaded, 6, "rejected", user="ann", reason="field boundary", claim=True)
    assert (c.status, c.version) == ("rejected", 3)
    assert [e.to_status for e in loaded.history(6)] == ["in_review", "rejected"]


def test_stale_version_is_a_conflict(loaded: Store) -> None:
    seen = loaded.candidate(7).version
    set_status(loaded, 7, "in_review", user="ann", expected_version=seen)
    with pytest.raises(
        ConflictError, match=r"candidate 7 is at version 2 .*based on version 1"
    ) as e:
        set_status(loaded, 7, "in_review", user="bob", expected_version=seen)
    assert e.value.current_version == 2
    with pytest.raises(ConflictError):
        set_status(loaded, 7, "confirmed", user="bob", reason="yes", expected_version=seen)
    assert loaded.candidate(7).version == 2
    assert (
        set_status(loaded, 7, "confirmed", user="bob", reason="yes", expected_version=2).version
        == 3
    )


def test_disabled_user_cannot_act(loaded: Store) -> None:
    from geoscreen.review.users import set_active

    set_active(loaded, "ann", False, actor="ada")
    with pytest.raises(AccessError, match="disabled"):
        set_status(loaded, 8, "in_review", user="ann")
    with pytest.raises(AccessError, match="disabled"):
        add_note(loaded, 8, "hello", user="ann")


def test_notes(loaded: Store) -> None:
    event = add_note(loaded, 9, "  two rows of kilns, one chimney  ", user="bob")
    assert (event.kind, event.text, event.version) == ("note", "two rows of kilns, one chimney", 1)
    assert loaded.candidate(9).version == 1
    with pytest.raises(TransitionError, match="needs some text"):
        add_note(loaded, 9, "   ", user="bob")
    with pytest.raises(AccessError):
        add_note(loaded, 9, "hi", user="vic")
    notes = [e for e in audit.entries(loaded, entity="candidate", entity_id=9)]
    assert [(e.action, e.actor) for e in notes] == [("note", "bob")]
    assert notes[0].profile == "brick_kilns_s2" and notes[0].model_sha256 == "ab" * 32


# -- concurrency -------------------------------------------------------------------------
def _flip(store: Store, candidate_id: int, user: str, rounds: int) -> tuple[int, int]:
    """Toggle in_review <-> new from the version read first; count successes and conflicts."""
    ok = conflicts = 0
    for _ in range(rounds):
        current = store.candidate(candidate_id)
        target = "new" if current.status == "in_review" else "in_review"
        try:
            set_status(store, candidate_id, target, user=user, expected_version=current.version)
            ok += 1
        except ConflictError:
            conflicts += 1
        except TransitionError:  # read an old status, then someone moved it: also a conflict
            conflicts += 1
    return ok, conflicts


def _status_events(store: Store, candidate_id: int) -> int:
    with store.read() as conn:
        query = select(func.count()).where(review_events.c.candidate_id == candidate_id)
        return int(conn.execute(query).scalar_one())


def _check_no_lost_update(store: Store, results: list[tuple[int, int]], rounds: int) -> None:
    successes = sum(ok for ok, _ in results)
    assert sum(ok + c for ok, c in results) == len(results) * rounds
    assert successes >= 1
    c = store.candidate(1)
    assert c.version == 1 + successes  # every accepted change is there, none overwritten
    assert _status_events(store, 1) == successes
    assert audit.verify(store).ok


def test_concurrent_threads(loaded: Store) -> None:
    results: list[tuple[int, int]] = []
    lock = threading.Lock()
    names = ["ann", "bob", "sue", "sam", "ada", "ann", "bob", "sue"]

    def work(user: str) -> None:
        outcome = _flip(loaded, 1, user, 15)
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=work, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _check_no_lost_update(loaded, results, 15)


def _process_worker(url: str, user: str, rounds: int, queue: multiprocessing.Queue) -> None:
    with open_store(url) as store:
        queue.put(_flip(store, 1, user, rounds))


@pytest.mark.slow
def test_concurrent_processes(loaded: Store, db_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue = ctx.Queue()
    procs = [
        ctx.Process(target=_process_worker, args=(db_url, user, 20, queue))
        for user in ("ann", "bob", "sue", "sam")
    ]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    _check_no_lost_update(loaded, results, 20)
