"""Checks of the audit log against the rest of the store and against anchors kept elsewhere.

The hash chain proves that entries were not edited in place; it cannot prove that the
log is *complete*: someone with write access to the file can drop the triggers,
delete every entry and reset the head, or edit ``candidates.status`` without any entry.
So ``audit verify`` also checks that

* every user, completed run and export in the store has its audit entry, and each
  user's role, active flag and having a password are what the log says;
* every status change and note in ``review_events`` is audited, in the same order, by
  the same person, with the same text; and
* each candidate's current status and version are what its audited history says
  (``new``, version 1, without history); and
* password hashes, each run's detections and each candidate's outline, score and
  evidence path match the digests their entries recorded
  (:mod:`geoscreen.review.audit_digest`).

Anchors (:func:`make_anchor`, kept outside the store) catch what no check inside the
file can: a log cut back to an earlier head, or rewritten from some entry on with
recomputed hashes. An anchor is the head (sequence number and hash) at a time, and
the first entry keyed with a MAC; a later log must still hold that entry with that
hash, and its MACs from that entry on.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, select

from geoscreen.errors import InputError
from geoscreen.fileio import atomic_write
from geoscreen.review.audit_digest import check_candidates, check_detections, password_digest
from geoscreen.review.schema import candidates, exports, review_events, runs, users

Event = tuple[str, str | None, str, str | None]  # kind, status, user, text
ANCHOR_FORMAT = "geoscreen-audit-anchor/1"


@dataclass
class Audited:
    """What the audit log says happened, gathered while the chain is verified."""

    users: dict[str, dict[str, Any]] = field(default_factory=dict)  # role, active, password
    passwords: dict[str, str | None] = field(default_factory=dict)  # digest of the hash
    runs: set[str] = field(default_factory=set)
    run_digests: dict[str, str | None] = field(default_factory=dict)  # of the detections
    exports: set[str] = field(default_factory=set)
    events: dict[int, list[Event]] = field(default_factory=lambda: defaultdict(list))
    status: dict[int, tuple[str, int]] = field(default_factory=dict)
    hashes: dict[int, str] = field(default_factory=dict)  # at the anchored sequence numbers

    def add(self, entry: Mapping[str, Any]) -> None:
        """Take note of one entry (its fields as stored)."""
        action, entity_id = entry["action"], entry["entity_id"]
        if action == "user_add":
            after = _json(entry["after"])
            self.users[str(entity_id)] = {
                "role": after.get("role"), "active": True, "password": bool(after.get("password"))
            }  # fmt: skip
            self.passwords[str(entity_id)] = after.get("password_sha256")
        elif action in ("user_enable", "user_disable") and str(entity_id) in self.users:
            self.users[str(entity_id)]["active"] = action == "user_enable"
        elif action == "user_password" and str(entity_id) in self.users:
            self.users[str(entity_id)]["password"] = True
            self.passwords[str(entity_id)] = _json(entry["after"]).get("password_sha256")
        elif action == "digest_baseline":  # schema revision 0007, for older entries
            after = _json(entry["after"])
            self.passwords.update(after.get("passwords") or {})
            self.run_digests.update(after.get("runs") or {})
        elif action == "load_run":
            self.runs.add(str(entity_id))
            self.run_digests[str(entity_id)] = _json(entry["after"]).get("detections_sha256")
        elif action == "export":
            self.exports.add(str(entity_id))
        elif action in ("status", "note") and entry["entity"] == "candidate":
            after = _json(entry["after"])
            key = int(entity_id) if str(entity_id).isdigit() else -1
            if action == "status":
                status = after.get("status")
                self.events[key].append(("status", status, entry["actor"], after.get("reason")))
                self.status[key] = (str(status), int(after.get("version") or 0))
            else:
                self.events[key].append(("note", None, entry["actor"], after.get("note")))


def _json(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def cross_check(conn: Connection, audited: Audited, add: Callable[[str], None]) -> None:
    """Report store rows that the audit log does not account for."""
    people = select(users.c.name, users.c.role, users.c.active, users.c.password_hash)
    for name, role, active, hashed in conn.execute(people.order_by(users.c.name)):
        known = audited.users.get(name)
        if known is None:
            add(f"user {name} has no audit entry (entries deleted, or the user added directly)")
            continue
        now = {"role": role, "active": bool(active), "password": hashed is not None}
        changed = sorted(k for k in now if now[k] != known[k])
        if changed:
            add(f"user {name}: {', '.join(changed)} changed without an audit entry")
        digest = audited.passwords.get(name)
        if hashed is not None and digest is not None and password_digest(hashed) != digest:
            add(f"user {name}: password hash replaced without an audit entry")
    done = select(runs.c.run_id).where(runs.c.completed_at.is_not(None)).order_by(runs.c.id)
    for (run_id,) in conn.execute(done):
        if run_id not in audited.runs:
            add(f"run {run_id} has no audit entry (entries deleted, or loaded directly)")
    for (export_id,) in conn.execute(select(exports.c.id).order_by(exports.c.id)):
        if str(export_id) not in audited.exports:
            add(f"export {export_id} has no audit entry (entries deleted, or added directly)")
    stored: dict[int, list[Event]] = defaultdict(list)
    events = select(review_events).order_by(review_events.c.id)
    for row in conn.execute(events.execution_options(yield_per=5000)):
        status = row.to_status if row.kind == "status" else None
        stored[row.candidate_id].append((row.kind, status, row.user_name, row.text))
    for cid in sorted(set(stored) | set(audited.events)):
        if stored.get(cid, []) != audited.events.get(cid, []):
            add(f"candidate {cid}: its review events differ from the audited history")
    states = select(candidates.c.id, candidates.c.status, candidates.c.version)
    for cid, status, version in conn.execute(states.execution_options(yield_per=5000)):
        expected = audited.status.get(cid, ("new", 1))
        if (status, version) != expected:
            add(
                f"candidate {cid}: status {status} (version {version}) is not what the "
                f"audit log says ({expected[0]}, version {expected[1]}): changed directly"
            )
    check_detections(conn, audited.run_digests, add)
    check_candidates(conn, add)


# -- anchors -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Anchor:
    """The head of the log at a time, to keep outside the store."""

    seq: int
    hash: str
    at: str
    store: str
    keyed_from: int | None = None  # the first entry with a MAC, if any
    format: str = ANCHOR_FORMAT

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def make_anchor(seq: int, digest: str, store: str, keyed_from: int | None = None) -> Anchor:
    """An anchor for the head ``seq``/``digest`` now."""
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return Anchor(seq, digest, now, store, keyed_from)


def write_anchor(anchor: Anchor, path: str | Path) -> Path:
    """Write an anchor file (JSON), atomically."""
    text = json.dumps(anchor.to_dict(), indent=2) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return Path(path)


def read_anchor(path: str | Path) -> Anchor:
    """Read an anchor file written by :func:`write_anchor`."""
    source = Path(path)
    fix = "Give a file written by 'geoscreen audit anchor --out FILE'."
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not JSON"
        raise InputError(f"cannot read the anchor ({reason})", where=str(source), fix=fix) from None
    ok = (
        isinstance(data, dict)
        and data.get("format") == ANCHOR_FORMAT
        and isinstance(data.get("seq"), int)
        and isinstance(data.get("hash"), str)
        and isinstance(data.get("keyed_from"), int | None)
    )
    if not ok:
        raise InputError("not an audit anchor", where=str(source), fix=fix)
    return Anchor(
        data["seq"], data["hash"], str(data.get("at")), str(data.get("store")),
        data.get("keyed_from"),
    )  # fmt: skip


def check_anchor(
    anchor: Anchor, audited: Audited, last_seq: int, add: Callable[[str], None]
) -> None:
    """Report an anchored head that the log no longer holds."""
    name = f"anchor of entry {anchor.seq} ({anchor.at})"
    if anchor.seq == 0:
        return
    if anchor.seq > last_seq:
        add(f"{name}: the log ends at entry {last_seq}, before the anchored entry (cut back)")
    elif anchor.seq not in audited.hashes:
        add(f"{name}: the anchored entry is missing (deleted)")
    elif audited.hashes[anchor.seq] != anchor.hash:
        add(f"{name}: the entry's hash differs from the anchored one (history rewritten)")
