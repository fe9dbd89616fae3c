"""Retention of evidence chips: ``geoscreen review purge``.

Chips are imagery that may show people, so they are not kept longer than needed. A
chip goes when its candidate is rejected, or when the store has held it longer than
the candidate's profile allows (``review.retain_evidence_days``; none: kept). Only PNG
files are chips: an evidence path naming any other file is counted, never deleted. A chip's
age counts from the load of the run that brought it, not from the acquisition: imagery
from an archive loaded today still gets the whole period to be reviewed. A file that a
candidate or detection still within its period refers to is kept.

What stays: candidates, detections (with the paths they had), review history and the
audit log. For every candidate whose chips go, an audit entry records each file's path,
size and SHA-256 (so a copy held elsewhere can still be matched); the purge ends with
one entry with the counts. Entries are committed (a few hundred candidates per
transaction) before their files are deleted: a crash in between leaves files that the
next purge deletes (and records again), never a deletion without a record.

Imagery caches: the store keeps none. The review page renders imagery from the scene
files on request; the scene files are the analyst's own and are never deleted here.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from geoscreen.errors import ConfigError
from geoscreen.fileio import sha256_file
from geoscreen.review import audit
from geoscreen.review.schema import candidates, detections, runs
from geoscreen.review.store import Store

REJECTED = "rejected"
CHIP_SUFFIX = ".png"  # chips are PNGs (sites/evidence.py); the server serves only these
CHUNK = 200  # candidates recorded (and their files deleted) per transaction
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class PurgeItem:
    """One chip file that goes, and why."""

    candidate_id: int
    profile: str
    reason: str  # "rejected" | "older than N days"
    path: str  # as stored
    file: str  # where it is on this machine
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


@dataclass
class PurgeResult:
    """What a purge did (or, with ``dry_run``, would do)."""

    dry_run: bool
    limits: dict[str, int]
    candidates: int = 0
    files: int = 0
    bytes: int = 0
    rejected_candidates: int = 0
    expired_candidates: int = 0
    kept_shared: int = 0  # files due for one reference but still used by another
    not_chips: int = 0  # evidence paths naming files that are not PNG chips: never deleted
    items: list[PurgeItem] = field(default_factory=list)
    audit_seq: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        out = asdict(self)
        out["items"] = [i.to_dict() for i in self.items]
        return out


@dataclass
class _Ref:
    candidate_id: int
    profile: str
    reason: str | None  # None: still within its period


def check_limits(limits: Mapping[str, int | None]) -> dict[str, int]:
    """The profiles that set a limit, refusing impossible values."""
    out: dict[str, int] = {}
    for name, days in limits.items():
        if days is None:
            continue
        if isinstance(days, bool) or not isinstance(days, int) or days < 1:
            raise ConfigError(
                f"retain_evidence_days of profile {name!r} must be a whole number of days >= 1,"
                f" got {days!r}",
                fix="Fix review.retain_evidence_days in the profile.",
            )
        out[name] = days
    return out


def plan(
    store: Store,
    limits: Mapping[str, int | None],
    *,
    now: dt.datetime | None = None,
    roots: Sequence[Path] = (),
) -> PurgeResult:
    """Which chips would go (nothing is changed). Relative paths are looked for under
    ``roots`` first (as the server's ``--evidence-root``), then as :meth:`Store.locate` does."""
    days = check_limits(limits)
    now = now or dt.datetime.now(dt.UTC)
    refs: dict[Path, list[_Ref]] = {}
    stored: dict[Path, str] = {}
    loaded = func.coalesce(runs.c.completed_at, runs.c.started_at)
    from_detections = (
        select(
            candidates.c.id, candidates.c.profile, candidates.c.status,
            detections.c.evidence_path, loaded,
        )
        .join(detections, detections.c.candidate_id == candidates.c.id)
        .join(runs, runs.c.id == detections.c.run_pk)
        .where(detections.c.evidence_path.is_not(None))
    )  # fmt: skip
    from_candidates = (
        select(
            candidates.c.id, candidates.c.profile, candidates.c.status,
            candidates.c.evidence_path, loaded,
        )
        .join(runs, runs.c.id == candidates.c.last_run_pk)
        .where(candidates.c.evidence_path.is_not(None))
    )  # fmt: skip
    with store.read() as conn:
        rows = [*conn.execute(from_detections), *conn.execute(from_candidates)]
    located: dict[str, Path | None] = {}
    not_chips: set[Path] = set()
    for cid, profile, status, path, when in rows:
        if path not in located:
            found = store.locate(path, tuple(roots))
            located[path] = found.resolve() if found is not None else None
        target = located[path]
        if target is None:  # gone already (purged before, moved) or remote
            continue
        if target.suffix.lower() != CHIP_SUFFIX:  # not a chip (as the server sees it)
            not_chips.add(target)
            continue
        refs.setdefault(target, []).append(
            _Ref(cid, profile, _reason(status, profile, when, days, now))
        )
        stored.setdefault(target, path)
    result = PurgeResult(dry_run=True, limits=days, not_chips=len(not_chips))
    purged: dict[int, str] = {}
    for target, found_refs in sorted(refs.items()):
        if any(r.reason is None for r in found_refs):
            result.kept_shared += any(r.reason is not None for r in found_refs)
            continue
        size = target.stat().st_size
        for ref in {r.candidate_id: r for r in found_refs}.values():
            assert ref.reason is not None
            result.items.append(
                PurgeItem(
                    ref.candidate_id, ref.profile, ref.reason, stored[target], str(target), size
                )
            )
            purged.setdefault(ref.candidate_id, ref.reason)
        result.files += 1
        result.bytes += size
    result.items.sort(key=lambda i: (i.candidate_id, i.file))
    result.candidates = len(purged)
    result.rejected_candidates = sum(r == REJECTED for r in purged.values())
    result.expired_candidates = result.candidates - result.rejected_candidates
    return result


def purge(
    store: Store,
    limits: Mapping[str, int | None],
    *,
    actor: str,
    dry_run: bool = False,
    now: dt.datetime | None = None,
    roots: Sequence[Path] = (),
    progress: Progress | None = None,
) -> PurgeResult:
    """Delete the chips :func:`plan` finds, after recording them in the audit log.

    Candidates are recorded and their files deleted in transactions of
    :data:`CHUNK` candidates, so the review server's writers never wait long.
    """
    result = plan(store, limits, now=now, roots=roots)
    result.dry_run = dry_run
    if dry_run:
        return result
    files = sorted({Path(i.file) for i in result.items})
    blocked = [f for f in files if not os.access(f.parent, os.W_OK | os.X_OK)]
    if blocked:
        raise ConfigError(
            f"cannot delete evidence chips in this folder ({len(blocked)} files); nothing purged",
            where=str(blocked[0].parent),
            fix="Run the purge as a user who may write there.",
        )
    digests = {f: sha256_file(f) for f in files}
    by_candidate: dict[int, list[PurgeItem]] = {}
    for item in result.items:
        by_candidate.setdefault(item.candidate_id, []).append(item)
    groups = list(by_candidate.values())
    for start in range(0, len(groups), CHUNK):
        chunk = groups[start : start + CHUNK]
        with store.write() as conn:
            for items in chunk:
                audit.append(
                    conn,
                    actor=actor,
                    action="evidence_purge",
                    entity="candidate",
                    entity_id=items[0].candidate_id,
                    after={
                        "reason": items[0].reason,
                        "files": [
                            {"path": i.path, "bytes": i.bytes, "sha256": digests[Path(i.file)]}
                            for i in items
                        ],
                    },
                    profile=items[0].profile,
                )
        for items in chunk:  # recorded and committed: now the files go
            for item in items:
                Path(item.file).unlink(missing_ok=True)
        if progress is not None:
            progress(min(start + CHUNK, len(groups)), len(groups))
    with store.write() as conn:
        summary = audit.append(
            conn,
            actor=actor,
            action="purge",
            entity="store",
            after={
                "limits": result.limits,
                "candidates": result.candidates,
                "rejected_candidates": result.rejected_candidates,
                "expired_candidates": result.expired_candidates,
                "files": result.files,
                "bytes": result.bytes,
                "kept_shared": result.kept_shared,
                "not_chips": result.not_chips,
            },
        )
    result.audit_seq = summary.seq
    return result


def _reason(
    status: str,
    profile: str,
    loaded: dt.datetime | None,
    days: Mapping[str, int],
    now: dt.datetime,
) -> str | None:
    if status == REJECTED:
        return REJECTED
    limit = days.get(profile)
    if limit is None or loaded is None:
        return None
    if loaded.tzinfo is None:
        loaded = loaded.replace(tzinfo=dt.UTC)
    return f"older than {limit} days" if now - loaded > dt.timedelta(days=limit) else None
