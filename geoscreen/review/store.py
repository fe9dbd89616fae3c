"""The review store: open it, run transactions, read candidates and their history.

Only commands that add data (``review load``, ``users add``) create a new store
(``open_store(db, create=True)``); every other command refuses a path or database
that holds no store, and no command ever changes a file or database that is not a
geoscreen store. Opening runs the alembic migrations up to the newest revision.

Writes go through :meth:`Store.write` (one transaction; on SQLite ``BEGIN IMMEDIATE``,
so writers queue instead of failing) and reads through :meth:`Store.read`.

File paths (evidence chips, scene files) are stored portably: on SQLite a path under
the store's folder is stored relative to that folder, so the folder can move as a
whole; any other path is stored absolute. PostgreSQL stores have no folder: their
paths stay absolute. Relative paths are found again with :meth:`Store.locate`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import shapely
from sqlalchemy import Connection, Engine, Select, func, inspect, select, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError

from geoscreen.errors import ConfigError
from geoscreen.review import db, migrate
from geoscreen.review.errors import NotFoundError, StoreError
from geoscreen.review.records import ORDERS, STATUSES, Candidate, ReviewEvent, ScoreEntry
from geoscreen.review.schema import (
    STORE_KIND,
    candidates,
    detections,
    review_events,
    runs,
    scenes,
    store_info,
)
from geoscreen.review.spatial import BBox, filter_bbox

if TYPE_CHECKING:
    import geopandas as gpd

_REMOTE_PREFIXES = ("/vsi",)

# Tables that PostGIS itself puts in a database: such a database still counts as empty.
_POSTGIS_TABLES = {"spatial_ref_sys"}
_PG_OPEN_LOCK = 748_213_901  # advisory lock: one process migrates a new database at a time


@dataclass(frozen=True)
class CandidateFilter:
    """Which candidates: statuses (any of), profile, box, area, last-seen window."""

    statuses: tuple[str, ...] = ()
    profile: str | None = None
    bbox: BBox | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    def __post_init__(self) -> None:
        unknown = [s for s in self.statuses if s not in STATUSES]
        if unknown:
            raise ConfigError(
                f"unknown status {unknown[0]!r}", fix=f"Use one of {', '.join(STATUSES)}."
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (for the audit log)."""
        return {
            "statuses": list(self.statuses),
            "profile": self.profile,
            "bbox": None
            if self.bbox is None
            else [self.bbox.minx, self.bbox.miny, self.bbox.maxx, self.bbox.maxy],
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
        }


class MapCandidate(NamedTuple):
    """What a map needs to draw a candidate."""

    id: int
    profile: str
    status: str
    version: int
    score: float | None
    lon: float
    lat: float
    minx: float
    miny: float
    maxx: float
    maxy: float
    geom_wkb: bytes | None = None


class Store:
    """An open review store (SQLite file or PostgreSQL database)."""

    def __init__(self, engine: Engine, url: URL) -> None:
        self.engine = engine
        self.url = url

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.engine.dialect.name

    @property
    def folder(self) -> Path | None:
        """The SQLite file's folder, which stored relative paths start from (else ``None``)."""
        return Path(str(self.url.database)).parent if self.dialect == "sqlite" else None

    def portable_path(self, value: str | None) -> str | None:
        """A file path as it is stored: relative to :attr:`folder` when under it.

        A relative path that names a file here (the working directory) is made absolute
        first; remote URIs and other relative paths are kept as they are.
        """
        if not value or is_remote(value):
            return value or None
        path = Path(value)
        if not path.is_absolute():
            if not path.exists():
                return value
            path = path.resolve()
        return relative_to(str(path), self.folder) if self.folder is not None else str(path)

    def locate(self, value: str | None, roots: Sequence[Path | None] = ()) -> Path | None:
        """The existing local file a stored path names, or ``None``.

        A relative path is tried under each of ``roots``, then :attr:`folder`, then the
        working directory.
        """
        if not value or is_remote(value):
            return None
        path = Path(value)
        if path.is_absolute():
            return path if path.is_file() else None
        for root in (*roots, self.folder, Path.cwd()):
            if root is not None and (root / path).is_file():
                return root / path
        return None

    def scene_uri(self, scene_id: str) -> str | None:
        """Where a scene's file was when it was last loaded, as stored (see :meth:`locate`)."""
        with self.read() as conn:
            query = select(scenes.c.uri).where(scenes.c.scene_id == scene_id)
            found: str | None = conn.execute(query).scalar()
            return found

    @property
    def display(self) -> str:
        """Where the store is, without a password."""
        return db.display_url(self.url) if self.dialect != "sqlite" else str(self.url.database)

    def close(self) -> None:
        """Release the connections."""
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction: committed when the block ends, rolled back on error."""
        with self._errors(), self.engine.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """One read transaction (a consistent snapshot; never blocks writers on SQLite)."""
        with self._errors(), self.engine.connect() as conn:
            conn.execution_options(**{db.READ_OPTION: True})
            with conn.begin():
                yield conn

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except OperationalError as exc:
            raise StoreError(_first_line(exc), where=self.display, fix=_db_fix(exc)) from exc
        except ProgrammingError as exc:
            if getattr(exc.orig, "sqlstate", None) != INSUFFICIENT_PRIVILEGE:
                raise  # a bug, not the user's database role
            raise StoreError(
                _first_line(exc),
                where=self.display,
                fix="This database role may not change the store (a read-only role?); act "
                "through the review server, or connect as the store's owner.",
            ) from exc

    # -- reads -------------------------------------------------------------------------
    def candidate(self, candidate_id: int, conn: Connection | None = None) -> Candidate:
        """One candidate; :class:`NotFoundError` if there is no such id."""
        if conn is None:
            with self.read() as own:
                return self.candidate(candidate_id, own)
        row = conn.execute(select(candidates).where(candidates.c.id == candidate_id)).first()
        if row is None:
            raise NotFoundError(
                f"no candidate with id {candidate_id}",
                where=self.display,
                fix="List them with 'geoscreen review list'.",
            )
        return Candidate.from_row(row)

    def candidates(
        self,
        where: CandidateFilter | None = None,
        *,
        order: str = "score",
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Candidate]:
        """Candidates matching ``where``, best score first (or ``newest``, ``id``, or
        ``diverse``: see :func:`geoscreen.review.queue.diverse_candidates`)."""
        if order == "diverse":
            from geoscreen.review.queue import diverse_candidates

            ranked = diverse_candidates(self.candidates(where, order="score"))
            return ranked[offset : None if limit is None else offset + limit]
        query = self._select(where or CandidateFilter(), order)
        if limit is not None:
            query = query.limit(limit)
        if offset:
            query = query.offset(offset)
        with self.read() as conn:
            return [Candidate.from_row(r) for r in conn.execute(query)]

    def in_bbox(
        self,
        box: BBox,
        *,
        statuses: Sequence[str] = (),
        profile: str | None = None,
        limit: int = 5000,
        geometry: bool = False,
    ) -> list[MapCandidate]:
        """Candidates overlapping a map viewport, best score first (at most ``limit``).

        Returns light rows for drawing (no dates or paths); with ``geometry`` the outline
        WKB too. Load one candidate in full with :meth:`candidate`.
        """
        where = CandidateFilter(statuses=tuple(statuses), profile=profile, bbox=box)
        columns = [candidates.c[name] for name in MapCandidate._fields if name != "geom_wkb"]
        if geometry:
            columns.append(candidates.c.geom_wkb)
        query = self._select(where, "score").with_only_columns(*columns).limit(limit)
        with self.read() as conn:
            return [MapCandidate(*row) for row in conn.execute(query)]

    def count(self, where: CandidateFilter | None = None) -> int:
        """How many candidates match."""
        query = self._select(where or CandidateFilter(), None)
        with self.read() as conn:
            counted = select(func.count()).select_from(query.subquery())
            return int(conn.execute(counted).scalar_one())

    def history(self, candidate_id: int) -> list[ReviewEvent]:
        """Status changes and notes of a candidate, oldest first."""
        with self.read() as conn:
            self.candidate(candidate_id, conn)
            rows = conn.execute(
                select(review_events)
                .where(review_events.c.candidate_id == candidate_id)
                .order_by(review_events.c.id)
            )
            return [ReviewEvent.from_row(r) for r in rows]

    def score_history(self, candidate_id: int) -> list[ScoreEntry]:
        """Every run's score of a candidate with the model that gave it, oldest first."""
        query = (
            select(
                runs.c.run_id,
                runs.c.model_sha256,
                runs.c.profile_version,
                detections.c.scene_id,
                detections.c.score,
                runs.c.started_at.label("loaded_at"),
            )
            .join(runs, runs.c.id == detections.c.run_pk)
            .where(detections.c.candidate_id == candidate_id)
            .order_by(detections.c.id)
        )
        with self.read() as conn:
            self.candidate(candidate_id, conn)
            return [ScoreEntry(**r._mapping) for r in conn.execute(query)]

    def scene_warnings(self, candidate_id: int) -> list[str]:
        """What the run that last found the candidate warned: its scene far from the
        model's training region or statistics, its model no better than its simple
        baselines in training (each line says which); empty when nothing."""
        query = (
            select(runs.c.warnings)
            .join(candidates, candidates.c.last_run_pk == runs.c.id)
            .where(candidates.c.id == candidate_id)
        )
        with self.read() as conn:
            self.candidate(candidate_id, conn)
            text_ = conn.execute(query).scalar()
        found = json.loads(text_) if text_ else []
        return [str(w) for w in found] if isinstance(found, list) else []

    def run_thresholds(self) -> dict[str, float]:
        """Each profile's decision threshold, as its latest complete run recorded it."""
        query = (
            select(runs.c.profile, runs.c.threshold)
            .where(runs.c.threshold.is_not(None), runs.c.completed_at.is_not(None))
            .order_by(runs.c.id)
        )
        with self.read() as conn:
            return {r.profile: float(r.threshold) for r in conn.execute(query)}

    def frame(self, where: CandidateFilter | None = None) -> gpd.GeoDataFrame:
        """Candidates as a GeoDataFrame (EPSG:4326), e.g. for maps and exports."""
        import geopandas as gpd
        import pandas as pd

        found = self.candidates(where)
        rows = [c.to_dict(geometry=False) for c in found]
        geometry = shapely.from_wkb([c.geom_wkb for c in found]) if found else []
        frame = gpd.GeoDataFrame(rows, geometry=list(geometry), crs="EPSG:4326")
        for name in ("acquired", "first_seen", "last_seen", "created_at", "status_changed_at"):
            if name in frame:
                frame[name] = pd.to_datetime(frame[name], utc=True, format="ISO8601")
        return frame

    def _select(self, where: CandidateFilter, order: str | None) -> Select[Any]:
        query = select(candidates)
        if where.statuses:
            query = query.where(candidates.c.status.in_(where.statuses))
        if where.profile:
            query = query.where(candidates.c.profile == where.profile)
        if where.since:
            query = query.where(candidates.c.last_seen >= where.since)
        if where.until:
            query = query.where(candidates.c.last_seen <= where.until)
        if where.bbox is not None:
            query = filter_bbox(query, where.bbox, self.dialect)
        if order is None:
            return query
        if order == "score":
            return query.order_by(candidates.c.score.desc(), candidates.c.id)
        if order == "newest":
            return query.order_by(candidates.c.last_seen.desc(), candidates.c.id)
        if order == "id":
            return query.order_by(candidates.c.id)
        raise ConfigError(f"unknown order {order!r}", fix=f"Use one of {', '.join(ORDERS)}.")


def open_store(path_or_url: str | os.PathLike[str], *, create: bool = False) -> Store:
    """Open (and migrate) a store; with ``create`` make a new one if there is none."""
    url = db.resolve_url(path_or_url)
    sqlite = url.get_backend_name() == "sqlite"
    if sqlite:
        db.check_sqlite_file(Path(str(url.database)), create=create)
    engine = db.make_engine(url)
    store = Store(engine, url)
    try:
        with store._errors(), engine.begin() as conn:
            if not sqlite:
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_OPEN_LOCK})
                _check_database(conn, store.display, create=create)
            migrate.upgrade(conn)
    except DBAPIError as exc:
        engine.dispose()
        raise StoreError(_first_line(exc), where=store.display, fix=_db_fix(exc)) from exc
    except BaseException:
        engine.dispose()
        raise
    return store


def _check_database(conn: Connection, where: str, *, create: bool) -> None:
    """Refuse a PostgreSQL database (schema) that holds something other than a store."""
    tables = set(inspect(conn).get_table_names()) - _POSTGIS_TABLES
    if "store_info" in tables:
        kind = conn.execute(select(store_info.c.value).where(store_info.c.key == "kind")).scalar()
        if kind == STORE_KIND:
            return
    elif not tables:
        if create:
            return
        raise StoreError(
            "no review store in this database",
            where=where,
            fix="Create one with 'geoscreen review load' or 'geoscreen users add'.",
        )
    raise StoreError(
        "not a geoscreen review store (it holds other tables)",
        where=where,
        fix="Use an empty database or schema for the store.",
    )


def is_remote(value: str) -> bool:
    """Whether a path is a URI or GDAL virtual path rather than a local file."""
    return "://" in value or value.startswith(_REMOTE_PREFIXES)


def relative_to(value: str, folder: Path) -> str:
    """``value`` relative to ``folder`` (POSIX separators) when it is an absolute path under
    it, else unchanged."""
    path = Path(os.path.abspath(value)) if os.path.isabs(value) else None
    if path is None:
        return value
    for base in {folder, folder.resolve()}:
        if path.is_relative_to(base):
            return path.relative_to(base).as_posix()
    return value


INSUFFICIENT_PRIVILEGE = "42501"  # PostgreSQL's SQLSTATE for "permission denied"


def _db_fix(exc: BaseException) -> str:
    """How to get past a database error, by its kind."""
    text = str(getattr(exc, "orig", None) or exc).lower()
    if "locked" in text or "busy" in text:
        return "Another process holds the store; try again when it has finished writing."
    if any(w in text for w in ("readonly", "read-only", "permission", "unable to open")):
        return "Check that you may read and write the store file and its folder."
    if any(w in text for w in ("connect", "authentication", "password", "host", "does not exist")):
        return "Check the URL (user, password, host, port, database name) and that the server runs."
    return "Check the store with 'geoscreen audit verify', or restore a backup."


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    return lines[0] if lines else type(orig).__name__
