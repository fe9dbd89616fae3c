"""The review workflow: who may move a candidate from which status to which, and why.

::

    new -> in_review -> confirmed | rejected | needs_imagery
    in_review -> new                      (back to the queue)
    needs_imagery -> in_review            (imagery arrived)
    confirmed -> escalated                (sharing with partners: a supervisor other
                                           than the person who confirmed it)
    confirmed | rejected -> in_review     (reopen: supervisor)

Confirm, reject, escalate and reopen need a written reason, and escalating a second
reviewer, unless the ``review`` section of the profile whose run last saw the candidate
says otherwise (:mod:`geoscreen.review.policy`; the audit entry records which profile
version's rules applied). A candidate only "matches a profile"; the status records what
people decided about it.

Every change is optimistic: it is based on the version the caller read and is
written with ``UPDATE ... WHERE id = ? AND version = ?``; if someone changed the
candidate in between, nothing is written and :class:`ConflictError` says so. The
status event is written before the candidate: the store refuses a status or version
change without its event (revision 0007).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, desc, insert, select, update

from geoscreen.errors import ConfigError
from geoscreen.review import audit
from geoscreen.review.errors import ConflictError, TransitionError
from geoscreen.review.policy import review_rules
from geoscreen.review.records import STATUSES, Candidate, ReviewEvent
from geoscreen.review.schema import candidates, review_events
from geoscreen.review.store import Store
from geoscreen.review.users import require_user

MAX_TEXT = 4000


@dataclass(frozen=True)
class Rule:
    """What a transition needs."""

    role: str
    reason: bool = False
    second_reviewer: bool = False


TRANSITIONS: dict[str, dict[str, Rule]] = {
    "new": {"in_review": Rule("analyst")},
    "in_review": {
        "confirmed": Rule("analyst", reason=True),
        "rejected": Rule("analyst", reason=True),
        "needs_imagery": Rule("analyst"),
        "new": Rule("analyst"),
    },
    "needs_imagery": {"in_review": Rule("analyst")},
    "confirmed": {
        "escalated": Rule("supervisor", reason=True, second_reviewer=True),
        "in_review": Rule("supervisor", reason=True),
    },
    "rejected": {"in_review": Rule("supervisor", reason=True)},
    "escalated": {},
}


def check_status(status: str) -> str:
    """``status`` if it is a known status, else a :class:`ConfigError`."""
    if status not in STATUSES:
        raise ConfigError(f"unknown status {status!r}", fix=f"Use one of {', '.join(STATUSES)}.")
    return status


def set_status(
    store: Store,
    candidate_id: int,
    status: str,
    *,
    user: str,
    reason: str | None = None,
    expected_version: int | None = None,
    claim: bool = False,
) -> Candidate:
    """Move a candidate to ``status`` and return it as it is now.

    ``expected_version`` is the version the decision was based on (default: the one
    read in this transaction). With ``claim``, a decision on a ``new`` candidate first
    records ``new -> in_review`` by the same user (two events, one transaction).
    """
    check_status(status)
    text = _clean(reason)
    with store.write() as conn:
        current = store.candidate(candidate_id, conn)
        if expected_version is not None and expected_version != current.version:
            raise _conflict(current, expected_version)
        if claim and current.status == "new" and status in TRANSITIONS["in_review"]:
            current = _apply(conn, current, "in_review", user, None)
        return _apply(conn, current, status, user, text)


def add_note(store: Store, candidate_id: int, text: str, *, user: str) -> ReviewEvent:
    """Add a note to a candidate (analyst or above); its status and version do not change."""
    note = _clean(text)
    if not note:
        raise TransitionError("a note needs some text", fix="Write what you saw, in TEXT.")
    now = dt.datetime.now(dt.UTC)
    with store.write() as conn:
        require_user(conn, user, "analyst", "add notes")
        found = store.candidate(candidate_id, conn)
        values: dict[str, Any] = {
            "candidate_id": found.id,
            "kind": "note",
            "from_status": None,
            "to_status": None,
            "text": note,
            "user_name": user,
            "at": now,
            "version": found.version,
        }
        event_id = conn.execute(insert(review_events).values(**values)).inserted_primary_key
        assert event_id is not None
        _audit(conn, found, user, "note", None, {"note": note})
        return ReviewEvent(id=int(event_id[0]), **values)


def _apply(
    conn: Connection, current: Candidate, status: str, user: str, reason: str | None
) -> Candidate:
    rule = TRANSITIONS[current.status].get(status)
    if rule is None:
        allowed = ", ".join(TRANSITIONS[current.status]) or "none (final status)"
        raise TransitionError(
            f"candidate {current.id} is {current.status}; it cannot become {status}",
            fix=f"From {current.status} it can become: {allowed}.",
        )
    action = f"move a candidate from {current.status} to {status}"
    require_user(conn, user, rule.role, action)
    rules = review_rules(conn, current.id)  # the profile's review section, as its run recorded
    if rule.reason and rules.reason_required and not reason:
        raise TransitionError(f"to {action} give a reason", fix="Use --reason TEXT.")
    if rule.second_reviewer and rules.second_reviewer:
        confirmer = _who_confirmed(conn, current.id)
        if confirmer == user:
            raise TransitionError(
                f"{user} confirmed candidate {current.id}; escalating needs a second reviewer",
                fix="Another supervisor must escalate it.",
            )
    now = dt.datetime.now(dt.UTC)
    version = current.version + 1
    # The event first: the store's guard lets status and version change only after it.
    conn.execute(
        insert(review_events).values(
            candidate_id=current.id,
            kind="status",
            from_status=current.status,
            to_status=status,
            text=reason,
            user_name=user,
            at=now,
            version=version,
        )
    )
    result = conn.execute(
        update(candidates)
        .where(candidates.c.id == current.id, candidates.c.version == current.version)
        .values(status=status, version=version, status_changed_at=now, status_changed_by=user)
    )
    if result.rowcount != 1:  # raising rolls the event back with the transaction
        latest = conn.execute(
            select(candidates.c.version).where(candidates.c.id == current.id)
        ).scalar_one()
        raise _conflict(current, current.version, latest)
    before = {"status": current.status, "version": current.version}
    after: dict[str, object] = {"status": status, "version": version, "reason": reason}
    if rules.profile is not None:  # which profile version's review rules applied
        after["rules"] = rules.to_dict()
    _audit(conn, current, user, "status", before, after)
    return Candidate.from_row(
        conn.execute(select(candidates).where(candidates.c.id == current.id)).one()
    )


def _audit(
    conn: Connection,
    found: Candidate,
    user: str,
    action: str,
    before: dict[str, object] | None,
    after: dict[str, object],
) -> None:
    audit.append(
        conn,
        actor=user,
        action=action,
        entity="candidate",
        entity_id=found.id,
        before=before,
        after=after,
        profile=found.profile,
        profile_version=found.profile_version,
        model_sha256=found.model_sha256,
    )


def _who_confirmed(conn: Connection, candidate_id: int) -> str | None:
    return conn.execute(
        select(review_events.c.user_name)
        .where(
            review_events.c.candidate_id == candidate_id,
            review_events.c.kind == "status",
            review_events.c.to_status == "confirmed",
        )
        .order_by(desc(review_events.c.id))
        .limit(1)
    ).scalar()


def _conflict(found: Candidate, based_on: int, latest: int | None = None) -> ConflictError:
    now = found.version if latest is None else latest
    by = f" by {found.status_changed_by}" if latest is None and found.status_changed_by else ""
    return ConflictError(
        f"conflict: candidate {found.id} is at version {now} (changed{by}), "
        f"the change was based on version {based_on}; nothing was written",
        current_version=now,
    )


def _clean(text: str | None) -> str | None:
    if text is None:
        return None
    cleaned = text.strip()
    if len(cleaned) > MAX_TEXT:
        raise TransitionError(
            f"text too long ({len(cleaned)} characters, at most {MAX_TEXT})",
            fix="Shorten it, or split it into several notes.",
        )
    return cleaned or None
