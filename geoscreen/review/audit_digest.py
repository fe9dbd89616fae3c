"""Digests that audit entries record of rows beside the log, and the checks that use them.

The hash chain proves that entries were not changed; these tie rows outside the log to
entries, so that ``audit verify`` finds them changed in place:

* **password hashes**: ``user_add`` and ``user_password`` entries record the SHA-256 of
  the stored argon2 hash (``password_sha256``). A hash replaced directly (to log in as
  someone else) no longer matches. The digest of a salted hash tells nothing about the
  password: testing a guess needs the salt, which only the hash holds.
* **detections**: each ``load_run`` entry records a SHA-256 over every detection of the
  run (candidate, score, mean score, evidence path, outline), in candidate order.
* **candidates**: a candidate shows the outline, score, mean score and evidence path of
  its detection in the run that last updated it (``last_run_pk``), and its bounding box
  is that outline's; so an outline moved or a score changed directly differs either
  from the candidate's audited detection or from the run's digest.

Entries written before this (no digest) are not compared: their runs and users are
checked only as before.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import shapely
from sqlalchemy import Connection, and_, select

from geoscreen.review.schema import candidates, detections, runs

CHUNK = 5000
_PASSWORD_DOMAIN = b"geoscreen password hash\n"
_DETECTION = (
    detections.c.candidate_id,
    detections.c.score,
    detections.c.score_mean,
    detections.c.evidence_path,
    detections.c.geom_wkb,
)


def password_digest(hashed: str) -> str:
    """What the audit log records of a stored password hash."""
    return hashlib.sha256(_PASSWORD_DOMAIN + hashed.encode()).hexdigest()


def _line(cid: int, score: Any, score_mean: Any, path: str | None, geom: bytes) -> bytes:
    outline = hashlib.sha256(bytes(geom)).hexdigest()
    return f"{cid}\t{_num(score)}\t{_num(score_mean)}\t{path}\t{outline}\n".encode()


def _num(value: Any) -> str:
    return "None" if value is None else float(value).hex()  # exact on both databases


def detections_digest(conn: Connection, run_pk: int) -> str:
    """The SHA-256 over a run's detections, as its ``load_run`` entry records it."""
    digest = hashlib.sha256()
    query = select(*_DETECTION).where(detections.c.run_pk == run_pk)
    for row in conn.execute(query.order_by(detections.c.candidate_id)):
        digest.update(_line(*row))
    return digest.hexdigest()


def check_detections(
    conn: Connection, audited: Mapping[str, str | None], add: Callable[[str], None]
) -> None:
    """Report runs whose detections differ from the digest their audit entry recorded."""
    names = {r.id: r.run_id for r in conn.execute(select(runs.c.id, runs.c.run_id))}
    digests: dict[int, Any] = {}
    query = select(detections.c.run_pk, *_DETECTION).order_by(
        detections.c.run_pk, detections.c.candidate_id
    )
    for run_pk, *values in conn.execute(query.execution_options(yield_per=CHUNK)):
        digests.setdefault(run_pk, hashlib.sha256()).update(_line(*values))
    for run_pk, run_id in sorted(names.items()):
        expected = audited.get(run_id)
        if expected is None:
            continue  # no audit entry (reported elsewhere), or one older than digests
        found = digests.get(run_pk, hashlib.sha256()).hexdigest()
        if found != expected:
            add(
                f"run {run_id}: its detections (outlines, scores or evidence paths) differ "
                "from its audit entry: changed directly"
            )


def check_candidates(conn: Connection, add: Callable[[str], None]) -> None:
    """Report candidates whose outline, box, score or evidence path is not their last
    run's detection."""
    last = detections.alias("last")
    query = (
        select(
            candidates.c.id, candidates.c.geom_wkb, candidates.c.score,
            candidates.c.score_mean, candidates.c.evidence_path,
            candidates.c.minx, candidates.c.miny, candidates.c.maxx, candidates.c.maxy,
            candidates.c.lon, candidates.c.lat, last.c.id.label("found"), last.c.geom_wkb,
            last.c.score, last.c.score_mean, last.c.evidence_path,
        )
        .outerjoin(last, and_(last.c.candidate_id == candidates.c.id,
                              last.c.run_pk == candidates.c.last_run_pk))
        .order_by(candidates.c.id)
    )  # fmt: skip
    rows: list[Any] = []
    for row in conn.execute(query.execution_options(yield_per=CHUNK)):
        rows.append(tuple(row))
        if len(rows) == CHUNK:
            _compare(rows, add)
            rows = []
    _compare(rows, add)


def _compare(rows: Iterable[Any], add: Callable[[str], None]) -> None:
    rows = list(rows)
    if not rows:
        return
    bounds = shapely.bounds(shapely.from_wkb([bytes(r[1]) for r in rows], on_invalid="ignore"))
    for row, box in zip(rows, bounds.tolist(), strict=True):
        cid, geom, score, mean, path, minx, miny, maxx, maxy, lon, lat = row[:11]
        found, d_geom, d_score, d_mean, d_path = row[11:]
        what = []
        if found is None:
            add(f"candidate {cid}: no detection in the run that last saw it (added directly)")
            continue
        if bytes(geom) != bytes(d_geom) or box != [minx, miny, maxx, maxy]:
            what.append("outline")
        if not (minx <= lon <= maxx and miny <= lat <= maxy):
            what.append("position")
        if _num(score) != _num(d_score) or _num(mean) != _num(d_mean):
            what.append("score")
        if path != d_path:
            what.append("evidence path")
        if what:
            add(
                f"candidate {cid}: {', '.join(what)} differs from its audited detection "
                "(changed directly)"
            )
