"""An in-memory index of candidate points for the map and the review queue.

The review page asks for the candidates in its viewport many times a second; with
100,000+ candidates a zoomed-out viewport would mean aggregating the whole table in
SQL for every pan. The server instead keeps one small array per field (id, lon, lat,
score, status, profile, last seen; about 60 bytes a candidate) and answers viewport
and queue requests with numpy: points when few enough are in view, else counts on a
grid aligned to the map's zoom level (clusters, :mod:`geoscreen.web.clusters`). The
arrays are sorted by longitude, so a viewport starts from a binary search; wide views
(many candidates) come from per-zoom cell tables kept until the next status change.

It stays in step with the store through the audit log, which every change passes
through: at most every ``check_every_s`` a request reads the audit head; status changes
since then are re-read for those candidates only, anything else that may change
candidates (a run loaded) reloads the whole index. Decisions made through this server
update it at once.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import select

from geoscreen.review.records import STATUSES
from geoscreen.review.schema import audit_head, audit_log, candidates
from geoscreen.review.spatial import BBox
from geoscreen.review.store import Store
from geoscreen.web.clusters import COLUMNS, CellTable, cell_size

QUEUE_ORDERS = ("score", "uncertainty", "newest")
DEFAULT_THRESHOLD = 0.5
MAX_PENDING_ENTRIES = 5_000
WIDE_VIEW = 20_000  # candidates in a viewport's longitude band above which cell tables answer
CACHED_TABLES = 32
# Audit actions that never change what the index holds; "status" is applied per candidate.
_NO_CHANGE = frozenset(
    {"note", "view", "export", "login", "logout", "user_add", "user_enable", "user_disable",
     "user_password"}
)  # fmt: skip
_CODES = {s: i for i, s in enumerate(STATUSES)}
_LOAD_SQL = "SELECT id, lon, lat, score, status, profile, last_seen FROM candidates ORDER BY id"


class Snapshot:
    """The arrays, sorted by longitude; ``status`` is updated in place (``version`` counts)."""

    def __init__(self, rows: Sequence[Sequence[Any]], seq: int) -> None:
        """From rows of (id, lon, lat, score, status, profile, last_seen) sorted by id."""
        self.seq = seq
        self.version = 0
        self._versions = itertools.count(1)
        ids, lon, lat, score, status, profile, seen = (
            list(column) for column in zip(*rows, strict=True)
        ) if rows else ([], [], [], [], [], [], [])  # fmt: skip
        by_id = np.array(ids, dtype=np.int64)
        order = np.argsort(np.array(lon, dtype=np.float64), kind="stable")
        self._sorted_ids = by_id
        self._row_of = np.empty_like(order)
        self._row_of[order] = np.arange(order.size)
        self.ids = by_id[order]
        self.lon = np.array(lon, dtype=np.float64)[order]
        self.lat = np.array(lat, dtype=np.float64)[order]
        self.score = np.array(score, dtype=np.float64)[order]  # None becomes NaN
        self.status = np.array([_CODES[s] for s in status], dtype=np.int8)[order]
        codes, names = pd.factorize(pd.Series(profile, dtype=object), sort=True)
        self.profiles: tuple[str, ...] = tuple(str(p) for p in names)
        self.profile = codes.astype(np.int16)[order]
        # naive UTC as stored (text on SQLite, datetimes on PostgreSQL); None becomes NaN
        when = pd.to_datetime(pd.Series(seen, dtype=object), utc=True, format="ISO8601")
        self.last_seen = (when - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()[order]

    def __len__(self) -> int:
        return int(self.ids.size)

    def position(self, candidate_id: int) -> int | None:
        """Row of a candidate id, if indexed."""
        pos = int(np.searchsorted(self._sorted_ids, candidate_id))
        if pos < self._sorted_ids.size and self._sorted_ids[pos] == candidate_id:
            return int(self._row_of[pos])
        return None

    def set_status(self, row: int, code: int) -> None:
        """Change one status in place."""
        self.status[row] = code
        self.version = next(self._versions)


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
        wide_view: int = WIDE_VIEW,
    ) -> None:
        self.store = store
        self.thresholds = dict(thresholds or {})
        self.check_every_s = check_every_s
        self.wide_view = wide_view
        self._sync_lock = threading.Lock()
        self._tables: OrderedDict[tuple[Any, ...], tuple[Snapshot, int, CellTable]] = OrderedDict()
        self._tables_lock = threading.Lock()
        self._checked = time.monotonic()
        self.snapshot = self._load()

    def threshold(self, profile: str) -> float:
        """The score threshold of a profile (see :func:`~geoscreen.web.app.create_app`)."""
        return self.thresholds.get(profile, DEFAULT_THRESHOLD)

    # -- keeping in step -------------------------------------------------------------------
    def _load(self) -> Snapshot:
        # Plain driver rows: SQLAlchemy's per-row datetime handling would double the time.
        with self.store.read() as conn:
            seq = int(conn.execute(select(audit_head.c.seq)).scalar_one())
            rows = conn.exec_driver_sql(_LOAD_SQL).fetchall()
        return Snapshot(rows, seq)

    def reload(self) -> None:
        """Read every candidate again."""
        with self._sync_lock:
            self.snapshot = self._load()

    def due(self) -> bool:
        """Whether :meth:`sync` would look at the store now."""
        return time.monotonic() - self._checked >= self.check_every_s

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
            reload = len(entries) > MAX_PENDING_ENTRIES or any(
                e.action != "status" for e in entries
            )
            if not reload:
                changed = sorted({int(e.entity_id) for e in entries})
                query = select(candidates.c.id, candidates.c.status)
                rows = conn.execute(query.where(candidates.c.id.in_(changed))).all()
        if reload:  # e.g. a run was loaded: new candidates, new scores and outlines
            self.snapshot = self._load()
            return
        for row in rows:
            self.set_status(row.id, row.status)
        snap.seq = seq

    def set_status(self, candidate_id: int, status: str) -> None:
        """Record a status change made through the server."""
        snap = self.snapshot
        pos = snap.position(candidate_id)
        if pos is not None and snap.status[pos] != _CODES[status]:
            snap.set_status(pos, _CODES[status])

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

    def _select(
        self, statuses: Sequence[str], profile: str | None, rows: slice = slice(None)
    ) -> np.ndarray | None:
        """Boolean mask of the status/profile filter over ``rows`` (``None``: all of them)."""
        snap = self.snapshot
        mask = None
        if statuses:
            mask = np.isin(snap.status[rows], [_CODES[s] for s in statuses])
        if profile is not None:
            code = snap.profiles.index(profile) if profile in snap.profiles else -1
            chosen = snap.profile[rows] == code
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
        """Candidates in a viewport: ``points`` if at most ``max_points``, else ``clusters``.

        Clusters from a cell table cover whole cells touching the viewport.
        """
        snap = self.snapshot
        lo = int(np.searchsorted(snap.lon, box.minx, side="left"))
        hi = int(np.searchsorted(snap.lon, box.maxx, side="right"))
        if hi - lo > self.wide_view:
            table = self._table(snap, zoom, tuple(statuses), profile)
            total, clusters = table.within(box)
            if total > max_points:
                return _clusters(total, table.cell, clusters)
        band = slice(lo, hi)
        inside = (snap.lat[band] >= box.miny) & (snap.lat[band] <= box.maxy)
        chosen = self._select(statuses, profile, band)
        if chosen is not None:
            inside &= chosen
        rows = lo + np.flatnonzero(inside)
        if rows.size > max_points:
            cell = cell_size(zoom, box)
            table = CellTable.build(
                snap.lon[rows], snap.lat[rows], snap.score[rows], snap.status[rows], cell
            )
            return _clusters(int(rows.size), cell, table.within()[1])
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

    def _table(
        self, snap: Snapshot, zoom: int, statuses: tuple[str, ...], profile: str | None
    ) -> CellTable:
        """The cell table of every (chosen) candidate at a zoom, rebuilt after changes."""
        key = (zoom, statuses, profile)
        with self._tables_lock:
            cached = self._tables.get(key)
            if cached is not None and cached[0] is snap and cached[1] == snap.version:
                self._tables.move_to_end(key)
                return cached[2]
        version = snap.version
        chosen = self._select(statuses, profile)
        rows = slice(None) if chosen is None else np.flatnonzero(chosen)
        table = CellTable.build(
            snap.lon[rows], snap.lat[rows], snap.score[rows], snap.status[rows], cell_size(zoom)
        )
        with self._tables_lock:
            self._tables[key] = (snap, version, table)
            while len(self._tables) > CACHED_TABLES:
                self._tables.popitem(last=False)
        return table

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


def _clusters(total: int, cell: float, rows: list[list[float]]) -> dict[str, Any]:
    return {
        "kind": "clusters",
        "total": total,
        "cell_deg": cell,
        "columns": list(COLUMNS),
        "clusters": rows,
    }
