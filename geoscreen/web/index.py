"""An in-memory index of candidate points for the map and the review queue.

The review page asks for the candidates in its viewport many times a second; with
100,000+ candidates a zoomed-out viewport would mean aggregating the whole table in
SQL for every pan. The server instead keeps one small array per field (id, lon, lat,
score, status, profile, last seen; about 40 bytes a candidate) and answers viewport
and queue requests with numpy: points when few enough are in view, else counts on a
grid aligned to the map's zoom level (clusters).

It stays in step with the store through the audit log, which every change passes
through: at most every ``check_every_s`` a request reads the audit head; status changes
since then are re-read for those candidates only, anything else that may change
candidates (a run loaded) reloads the whole index. Decisions made through this server
update it at once.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select

from geoscreen.review.records import STATUSES
from geoscreen.review.schema import audit_head, audit_log, candidates
from geoscreen.review.spatial import BBox
from geoscreen.review.store import Store

QUEUE_ORDERS = ("score", "uncertainty", "newest")
DEFAULT_THRESHOLD = 0.5
CELLS_PER_TILE = 4  # a cluster cell is a quarter of a 256-pixel map tile: 64 px
MAX_CELLS = 20_000
MAX_PENDING_ENTRIES = 5_000
# Audit actions that never change what the index holds; "status" is applied per candidate.
_NO_CHANGE = frozenset(
    {"note", "view", "export", "login", "logout", "user_add", "user_enable", "user_disable",
     "user_password"}
)  # fmt: skip
CLUSTER_COLUMNS = ("lon", "lat", "count", "mean_score", *STATUSES)
_CODES = {s: i for i, s in enumerate(STATUSES)}


class Snapshot:
    """The arrays, sorted by id; ``status`` is updated in place."""

    def __init__(self, rows: Sequence[Any], seq: int) -> None:
        self.seq = seq
        n = len(rows)
        self.ids = np.fromiter((r.id for r in rows), np.int64, n)
        self.lon = np.fromiter((r.lon for r in rows), np.float64, n)
        self.lat = np.fromiter((r.lat for r in rows), np.float64, n)
        self.score = np.fromiter(
            (np.nan if r.score is None else r.score for r in rows), np.float64, n
        )
        self.status = np.fromiter((_CODES[r.status] for r in rows), np.int8, n)
        self.profiles = tuple(sorted({r.profile for r in rows}))
        codes = {p: i for i, p in enumerate(self.profiles)}
        self.profile = np.fromiter((codes[r.profile] for r in rows), np.int16, n)
        self.last_seen = np.fromiter(
            (np.nan if r.last_seen is None else r.last_seen.timestamp() for r in rows),
            np.float64,
            n,
        )

    def __len__(self) -> int:
        return int(self.ids.size)

    def position(self, candidate_id: int) -> int | None:
        """Row of a candidate id, if indexed."""
        pos = int(np.searchsorted(self.ids, candidate_id))
        return pos if pos < self.ids.size and self.ids[pos] == candidate_id else None


@dataclass(frozen=True)
class QueueItem:
    """One entry of the review queue."""

    id: int
    score: float | None
    status: str
    profile: str
    lon: float
    lat: float
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return self.__dict__.copy()


class CandidateIndex:
    """Viewport and queue queries over every candidate of a store."""

    def __init__(
        self,
        store: Store,
        thresholds: Mapping[str, float] | None = None,
        *,
        check_every_s: float = 1.0,
    ) -> None:
        self.store = store
        self.thresholds = dict(thresholds or {})
        self.check_every_s = check_every_s
        self._sync_lock = threading.Lock()
        self._checked = time.monotonic()
        self.snapshot = self._load()

    def threshold(self, profile: str) -> float:
        """The score threshold of a profile (0.5 unless the server was given the profile)."""
        return self.thresholds.get(profile, DEFAULT_THRESHOLD)

    # -- keeping in step -------------------------------------------------------------------
    def _load(self) -> Snapshot:
        query = select(
            candidates.c.id,
            candidates.c.lon,
            candidates.c.lat,
            candidates.c.score,
            candidates.c.status,
            candidates.c.profile,
            candidates.c.last_seen,
        ).order_by(candidates.c.id)
        with self.store.read() as conn:
            seq = int(conn.execute(select(audit_head.c.seq)).scalar_one())
            rows = conn.execute(query).all()
        return Snapshot(rows, seq)

    def reload(self) -> None:
        """Read every candidate again."""
        with self._sync_lock:
            self.snapshot = self._load()

    def sync(self, *, force: bool = False) -> None:
        """Catch up with changes made elsewhere (at most every ``check_every_s``)."""
        now = time.monotonic()
        if not force and now - self._checked < self.check_every_s:
            return
        if not self._sync_lock.acquire(blocking=force):
            return  # another request is catching up; answer from the current snapshot
        try:
            self._checked = now
            self._catch_up()
        finally:
            self._sync_lock.release()

    def _catch_up(self) -> None:
        snap = self.snapshot
        with self.store.read() as conn:
            seq = int(conn.execute(select(audit_head.c.seq)).scalar_one())
            if seq == snap.seq:
                return
            entries = conn.execute(
                select(audit_log.c.action, audit_log.c.entity_id)
                .where(audit_log.c.seq > snap.seq, audit_log.c.action.not_in(_NO_CHANGE))
                .order_by(audit_log.c.seq)
                .limit(MAX_PENDING_ENTRIES + 1)
            ).all()
            if len(entries) > MAX_PENDING_ENTRIES or any(e.action != "status" for e in entries):
                reload = True
            else:
                reload = False
                changed = sorted({int(e.entity_id) for e in entries})
            if not reload:
                rows = conn.execute(
                    select(candidates.c.id, candidates.c.status).where(candidates.c.id.in_(changed))
                ).all()
                for row in rows:
                    self.set_status(row.id, row.status)
                snap.seq = seq
        if reload:
            self.snapshot = self._load()

    def set_status(self, candidate_id: int, status: str) -> None:
        """Record a status change made through the server."""
        snap = self.snapshot
        pos = snap.position(candidate_id)
        if pos is not None:
            snap.status[pos] = _CODES[status]

    # -- queries ---------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Counts per status, profiles with their thresholds, and the area covered."""
        snap = self.snapshot
        counts = np.bincount(snap.status, minlength=len(STATUSES))
        bounds = None
        if len(snap):
            bounds = [snap.lon.min(), snap.lat.min(), snap.lon.max(), snap.lat.max()]
        return {
            "total": len(snap),
            "by_status": {s: int(c) for s, c in zip(STATUSES, counts, strict=True)},
            "profiles": {p: self.threshold(p) for p in snap.profiles},
            "bounds": None if bounds is None else [float(b) for b in bounds],
        }

    def _select(self, statuses: Sequence[str], profile: str | None) -> np.ndarray | None:
        """Boolean mask of the status/profile filter (``None``: everything)."""
        snap = self.snapshot
        mask = None
        if statuses:
            mask = np.isin(snap.status, [_CODES[s] for s in statuses])
        if profile is not None:
            code = snap.profiles.index(profile) if profile in snap.profiles else -1
            chosen = snap.profile == code
            mask = chosen if mask is None else mask & chosen
        return mask

    def view(
        self,
        box: BBox,
        *,
        zoom: int,
        statuses: Sequence[str] = (),
        profile: str | None = None,
        max_points: int = 2000,
    ) -> dict[str, Any]:
        """Candidates in a viewport: ``points`` if at most ``max_points``, else ``clusters``."""
        snap = self.snapshot
        inside = (snap.lon >= box.minx) & (snap.lon <= box.maxx)
        inside &= (snap.lat >= box.miny) & (snap.lat <= box.maxy)
        chosen = self._select(statuses, profile)
        if chosen is not None:
            inside &= chosen
        rows = np.flatnonzero(inside)
        if rows.size <= max_points:
            points = np.column_stack(
                [
                    snap.ids[rows],
                    np.round(snap.lon[rows], 6),
                    np.round(snap.lat[rows], 6),
                    np.round(snap.score[rows], 4),
                    snap.status[rows],
                ]
            ).tolist()
            for p in points:
                p[0], p[4] = int(p[0]), STATUSES[int(p[4])]
                if math.isnan(p[3]):
                    p[3] = None
            return {"kind": "points", "total": int(rows.size), "points": points}
        cell, clusters = _clusters(snap, rows, box, zoom)
        return {
            "kind": "clusters",
            "total": int(rows.size),
            "cell_deg": cell,
            "columns": list(CLUSTER_COLUMNS),
            "clusters": clusters,
        }

    def queue(
        self,
        order: str = "score",
        *,
        statuses: Sequence[str] = ("new", "in_review"),
        profile: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[int, list[QueueItem]]:
        """The review queue: best score first, closest to the threshold first, or newest."""
        snap = self.snapshot
        chosen = self._select(statuses, profile)
        rows = np.arange(len(snap)) if chosen is None else np.flatnonzero(chosen)
        thresholds = np.array([self.threshold(p) for p in snap.profiles] or [DEFAULT_THRESHOLD])
        if order == "score":
            key = -snap.score[rows]
        elif order == "uncertainty":
            key = np.abs(snap.score[rows] - thresholds[snap.profile[rows]])
        elif order == "newest":
            key = -snap.last_seen[rows]
        else:
            raise ValueError(f"unknown queue order {order!r}")
        key = np.where(np.isnan(key), np.inf, key)
        want = offset + limit
        if 0 < want < rows.size:
            kth = np.partition(key, want - 1)[want - 1]
            near = key <= kth
            rows, key = rows[near], key[near]
        ordered = rows[np.lexsort((snap.ids[rows], key))][offset : offset + limit]
        items = [
            QueueItem(
                id=int(snap.ids[r]),
                score=None if np.isnan(snap.score[r]) else float(snap.score[r]),
                status=STATUSES[int(snap.status[r])],
                profile=snap.profiles[int(snap.profile[r])],
                lon=float(snap.lon[r]),
                lat=float(snap.lat[r]),
                threshold=float(thresholds[snap.profile[r]]),
            )
            for r in ordered
        ]
        total = len(snap) if chosen is None else int(np.count_nonzero(chosen))
        return total, items


def _clusters(
    snap: Snapshot, rows: np.ndarray, box: BBox, zoom: int
) -> tuple[float, list[list[float]]]:
    """Counts per grid cell (aligned to the zoom level's tiles, so pans keep clusters)."""
    cell = 360.0 / (2 ** max(zoom, 0)) / CELLS_PER_TILE
    nx = math.floor(box.maxx / cell) - math.floor(box.minx / cell) + 1
    ny = math.floor(box.maxy / cell) - math.floor(box.miny / cell) + 1
    if nx * ny > MAX_CELLS:  # a viewport far wider than the zoom level says
        cell *= math.ceil(math.sqrt(nx * ny / MAX_CELLS))
        nx = math.floor(box.maxx / cell) - math.floor(box.minx / cell) + 1
        ny = math.floor(box.maxy / cell) - math.floor(box.miny / cell) + 1
    lon, lat = snap.lon[rows], snap.lat[rows]
    gx = np.floor(lon / cell).astype(np.int64) - math.floor(box.minx / cell)
    gy = np.floor(lat / cell).astype(np.int64) - math.floor(box.miny / cell)
    local = np.clip(gx, 0, nx - 1) * ny + np.clip(gy, 0, ny - 1)
    size = nx * ny
    count = np.bincount(local, minlength=size)
    used = np.flatnonzero(count)
    n = count[used].astype(np.float64)
    score = snap.score[rows]
    valid = ~np.isnan(score)
    scored = np.bincount(local[valid], minlength=size)[used]
    columns = [
        np.round(np.bincount(local, lon, size)[used] / n, 6),
        np.round(np.bincount(local, lat, size)[used] / n, 6),
        n,
        np.round(np.bincount(local[valid], score[valid], size)[used] / np.maximum(scored, 1), 4),
    ]
    status = snap.status[rows]
    for code in range(len(STATUSES)):
        columns.append(np.bincount(local[status == code], minlength=size)[used].astype(float))
    table = np.column_stack(columns).tolist()
    for row in table:
        for i in range(2, len(row)):
            if i != 3:
                row[i] = int(row[i])
    return cell, table
