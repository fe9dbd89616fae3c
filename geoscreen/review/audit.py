"""The audit log: append-only, hash-chained record of every decision and disclosure.

Each entry's hash is ``sha256(prev_hash + "\\n" + canonical JSON of the entry)``, the
first entry's ``prev_hash`` being 64 zeros. ``audit_head`` holds the last sequence
number and hash; appending moves it by exactly one entry. Triggers on both databases
refuse UPDATE and DELETE on ``audit_log`` (and anything but "next entry" on the head),
so a change needs someone who bypasses the store; :func:`verify` then finds it: an
edited entry no longer matches its hash, a deleted one leaves a gap or a broken link,
and deleting the newest entries leaves the head pointing past the end. What the chain
cannot show (a log erased and restarted, rows changed without an entry, a log cut back
or rewritten as a whole) is checked against the other tables and against anchors kept
outside the store (:mod:`geoscreen.review.audit_check`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import Connection, func, insert, inspect, select, update
from sqlalchemy.exc import DBAPIError

from geoscreen.review.audit_check import Anchor, Audited, check_anchor, cross_check, make_anchor
from geoscreen.review.audit_key import entry_mac, env_key, mac_matches
from geoscreen.review.schema import GENESIS_HASH, audit_head, audit_log
from geoscreen.review.store import Store

MAX_PROBLEMS = 50
CHECKED_TABLES = ("audit_log", "audit_head", "users", "runs", "exports", "review_events",
                  "candidates", "detections")  # fmt: skip
_HASHED = (
    "seq",
    "at",
    "actor",
    "action",
    "entity",
    "entity_id",
    "before",
    "after",
    "profile",
    "profile_version",
    "model_sha256",
)


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no spaces, UTF-8 text, datetimes as ISO 8601."""

    def default(obj: Any) -> Any:
        if isinstance(obj, dt.datetime | dt.date):
            return obj.isoformat()
        raise TypeError(f"not JSON serialisable: {type(obj).__name__}")

    return json.dumps(
        value,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=default,
        allow_nan=False,
    )


def entry_hash(prev_hash: str, entry: Mapping[str, Any]) -> str:
    """The hash of an entry (its stored fields) chained to the previous one."""
    body = canonical_json({k: entry.get(k) for k in _HASHED})
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


@dataclass(frozen=True)
class AuditEntry:
    """One stored entry; ``before``/``after`` are canonical JSON text (or ``None``)."""

    seq: int
    at: str
    actor: str
    action: str
    entity: str
    entity_id: str | None
    before: str | None
    after: str | None
    profile: str | None
    profile_version: str | None
    model_sha256: str | None
    prev_hash: str
    hash: str
    mac: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with ``before``/``after`` decoded."""
        out = asdict(self)
        for key in ("before", "after"):
            out[key] = json.loads(out[key]) if out[key] is not None else None
        return out


_LOCAL_OVERRIDE: ContextVar[str | None] = ContextVar("geoscreen_audit_override", default=None)


@contextmanager
def local_override(who: str) -> Iterator[None]:
    """Mark every entry appended inside as made on the store file's authority by ``who``
    (an operating-system account), not by a user who proved who they are."""
    token = _LOCAL_OVERRIDE.set(who)
    try:
        yield
    finally:
        _LOCAL_OVERRIDE.reset(token)


def append(
    conn: Connection,
    *,
    actor: str,
    action: str,
    entity: str,
    entity_id: str | int | None = None,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    profile: str | None = None,
    profile_version: str | None = None,
    model_sha256: str | None = None,
) -> AuditEntry:
    """Add an entry inside the caller's write transaction (call it last: it locks the head)."""
    head = conn.execute(
        select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1).with_for_update()
    ).one()
    overridden_by = _LOCAL_OVERRIDE.get()
    if overridden_by is not None:
        after = {**(after or {}), "local_override": overridden_by}
    fields: dict[str, Any] = {
        "seq": head.seq + 1,
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="microseconds"),
        "actor": actor,
        "action": action,
        "entity": entity,
        "entity_id": None if entity_id is None else str(entity_id),
        "before": None if before is None else canonical_json(before),
        "after": None if after is None else canonical_json(after),
        "profile": profile,
        "profile_version": profile_version,
        "model_sha256": model_sha256,
    }
    digest = entry_hash(head.hash, fields)
    key = env_key()
    mac = entry_mac(key, digest) if key is not None else None
    conn.execute(insert(audit_log).values(**fields, prev_hash=head.hash, hash=digest, mac=mac))
    conn.execute(
        update(audit_head).where(audit_head.c.id == 1).values(seq=fields["seq"], hash=digest)
    )
    return AuditEntry(**fields, prev_hash=head.hash, hash=digest, mac=mac)


def log(store: Store, **entry: Any) -> AuditEntry:
    """Append one entry in its own transaction (e.g. a view of evidence in the server)."""
    with store.write() as conn:
        return append(conn, **entry)


def record_view(
    store: Store, candidate_id: int, *, user: str, what: str = "evidence"
) -> AuditEntry:
    """Record that ``user`` looked at a candidate's ``what`` (evidence chip, imagery)."""
    from geoscreen.review.users import require_user

    with store.write() as conn:
        require_user(conn, user, "viewer", f"view {what}")
        found = store.candidate(candidate_id, conn)
        return append(
            conn,
            actor=user,
            action="view",
            entity="candidate",
            entity_id=candidate_id,
            after={"what": what},
            profile=found.profile,
            profile_version=found.profile_version,
            model_sha256=found.model_sha256,
        )


def entries(
    store: Store,
    *,
    entity: str | None = None,
    entity_id: str | int | None = None,
    since_seq: int = 0,
) -> Iterator[AuditEntry]:
    """Entries in order, optionally for one entity."""
    query = select(audit_log).where(audit_log.c.seq > since_seq).order_by(audit_log.c.seq)
    if entity is not None:
        query = query.where(audit_log.c.entity == entity)
    if entity_id is not None:
        query = query.where(audit_log.c.entity_id == str(entity_id))
    with store.read() as conn:
        for row in conn.execute(query.execution_options(yield_per=2000)):
            yield AuditEntry(**row._mapping)


@dataclass
class VerifyReport:
    """The outcome of :func:`verify`."""

    entries: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS_HASH
    keyed_from: int | None = None  # the first entry with a MAC
    macs_checked: bool = False
    problems: list[str] = field(default_factory=list)
    more_problems: int = 0

    @property
    def ok(self) -> bool:
        """Whether the chain is intact."""
        return not self.problems

    def add(self, problem: str) -> None:
        """Record a problem (the first :data:`MAX_PROBLEMS` are kept)."""
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)
        else:
            self.more_problems += 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {**asdict(self), "ok": self.ok}


def verify(store: Store, anchors: Sequence[Anchor] = (), key: bytes | None = None) -> VerifyReport:
    """Recompute the chain, compare it with the head, the store's tables and ``anchors``.

    With ``key``, every entry's MAC is checked, and once one entry has a MAC every
    later one must. A missing (dropped) audit table is a problem, not an error.
    """
    report = VerifyReport(macs_checked=key is not None)
    audited = Audited()
    wanted = {a.seq for a in anchors}
    try:
        with store.read() as conn:
            present = set(inspect(conn).get_table_names())
            for name in CHECKED_TABLES:
                if name not in present:
                    report.add(f"table {name} is missing (dropped)")
            if not report.ok:
                return report
            last_seq = _verify_chain(conn, report, audited, wanted, key)
            cross_check(conn, audited, report.add)
    except DBAPIError as exc:
        reason = str(exc.orig).splitlines()[0][:200] if exc.orig else type(exc).__name__
        report.add(f"the audit log or a table it accounts for cannot be read: {reason}")
        return report
    for anchored in anchors:
        check_anchor(anchored, audited, last_seq, report.add)
        if anchored.keyed_from is not None and (
            report.keyed_from is None or report.keyed_from > anchored.keyed_from
        ):
            report.add(
                f"anchor of entry {anchored.seq} ({anchored.at}): entries were keyed from "
                f"entry {anchored.keyed_from} on, but their MACs were removed"
            )
    return report


def _verify_chain(
    conn: Connection, report: VerifyReport, audited: Audited, wanted: set[int], key: bytes | None
) -> int:
    """Check links, hashes, MACs and the head; returns the last sequence number in the log."""
    prev_hash, expected_seq = GENESIS_HASH, 1
    head = conn.execute(select(audit_head.c.seq, audit_head.c.hash)).all()
    rows = conn.execute(
        select(audit_log).order_by(audit_log.c.seq).execution_options(yield_per=5000)
    )
    for row in rows:
        entry = dict(row._mapping)
        report.entries += 1
        if entry["seq"] != expected_seq:
            report.add(f"entries {expected_seq}..{entry['seq'] - 1} are missing (deleted)")
        if entry["prev_hash"] != prev_hash:
            report.add(f"entry {entry['seq']}: does not link to the entry before it")
        if entry_hash(entry["prev_hash"], entry) != entry["hash"]:
            report.add(f"entry {entry['seq']}: content does not match its hash (edited)")
        _check_mac(entry, report, key)
        audited.add(entry)
        if entry["seq"] in wanted:
            audited.hashes[entry["seq"]] = entry["hash"]
        prev_hash, expected_seq = entry["hash"], entry["seq"] + 1
    if len(head) != 1:
        report.add(f"the audit head has {len(head)} rows instead of 1")
        return expected_seq - 1
    report.head_seq, report.head_hash = head[0].seq, head[0].hash
    if head[0].seq != expected_seq - 1 or head[0].hash != prev_hash:
        report.add(
            f"the log ends at entry {expected_seq - 1} but the head says {head[0].seq}: "
            "entries were deleted or the head was changed"
        )
    return expected_seq - 1


def _check_mac(entry: Mapping[str, Any], report: VerifyReport, key: bytes | None) -> None:
    seq, mac = entry["seq"], entry.get("mac")
    if mac is not None and report.keyed_from is None:
        report.keyed_from = seq
    if key is None:
        return
    if mac is None:
        if report.keyed_from is not None:
            report.add(f"entry {seq}: no MAC after keyed entries (added without the key)")
    elif not mac_matches(key, entry["hash"], mac):
        report.add(f"entry {seq}: MAC does not match (forged, or keyed with another key)")


def anchor(store: Store) -> Anchor:
    """The current head as an anchor (see :mod:`geoscreen.review.audit_check`)."""
    with store.read() as conn:
        head = conn.execute(select(audit_head.c.seq, audit_head.c.hash)).one()
        keyed = conn.execute(select(func.min(audit_log.c.seq)).where(audit_log.c.mac.is_not(None)))
        keyed_from = keyed.scalar()
    return make_anchor(int(head.seq), str(head.hash), store.display, keyed_from)
