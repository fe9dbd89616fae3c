"""Loading screening results (sites) into the store: idempotent and crash-safe.

A sites file (GeoParquet, GeoPackage, GeoJSON...) needs a geometry and a score
(``score`` or ``score_max``); the sites stage also writes ``site_id``, ``run_id``,
``profile``, ``profile_version``, ``model_sha256``, ``scene_id``, ``acquired``,
``first_seen``, ``last_seen``, ``evidence_path``, ``score_mean``, ``tile_count``,
``area_m2``, ``scene_uri`` (where the scene file is); other columns are kept as JSON
with each detection. Evidence paths and scene uris are stored portably (see
:meth:`geoscreen.review.store.Store.portable_path`).

Natural keys: a candidate is ``(profile, site_id)`` (a geometry hash when there is no
``site_id``); a site whose id the store does not know takes the id of the stored
candidate of its profile at the same place (outlines overlapping by IoU 0.2, as ``scan``
matches them), because each run names its sites afresh. A run is its ``run_id`` (a hash
of profile and file content when there is none); a detection is ``(run, candidate)``.
A run loads in one transaction that ends by marking it complete, so a load killed at
any point leaves nothing behind and loading a complete run again changes nothing.
Loading never touches a candidate's review status, version or history. The run's audit
entry records a digest of its detections, so outlines and scores changed later in place
are found by ``audit verify`` (:mod:`geoscreen.review.audit_digest`).

An objects table (a detection screen's every object, :mod:`geoscreen.sites.detections`)
records the threshold in force: only the objects scoring at least that much are loaded,
as for the sites file beside it, and the run keeps the threshold.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from geoscreen.errors import InputError
from geoscreen.fileio import sha256_file
from geoscreen.matching import MatchRule, assign_one_to_one, candidate_pairs
from geoscreen.review import audit
from geoscreen.review.audit_digest import detections_digest
from geoscreen.review.schema import candidates, detections, run_scenes, runs, scenes
from geoscreen.review.store import Store
from geoscreen.sites.site import THRESHOLD_COLUMN, recorded_threshold

CHUNK = 5000
Progress = Callable[[int, int], None]
_TIMES = ("acquired", "first_seen", "last_seen")
_KNOWN = {
    "geometry",
    "score",
    "score_max",
    "score_mean",
    "tile_count",
    "area_m2",
    "site_id",
    "run_id",
    "profile",
    "profile_version",
    "model_sha256",
    "scene_id",
    "scene_uri",
    "acquired",
    "evidence_path",
    "first_seen",
    "last_seen",
}
_TEXT = ("profile_version", "model_sha256", "scene_id", "scene_uri", "evidence_path")
_LATEST = (
    "geom_wkb",
    "minx",
    "miny",
    "maxx",
    "maxy",
    "lon",
    "lat",
    "score",
    "score_mean",
    "area_m2",
    "tile_count",
    "profile_version",
    "model_sha256",
    "scene_id",
    "acquired",
    "evidence_path",
    "last_seen",
    "last_run_pk",
)


_SITES_FIX = (
    "Give a vector file of sites (GeoParquet, GeoPackage, GeoJSON) with a geometry and a "
    "score, as 'geoscreen sites extract' writes."
)


@dataclass(frozen=True)
class LoadResult:
    """What a load did."""

    run_id: str
    profile: str
    sites: int
    new: int
    seen_again: int
    already_loaded: bool
    seconds: float
    below_threshold: int = 0  # earlier candidates of the re-screened scenes not found again
    found_again: int = 0  # flagged candidates this run found again (flag cleared)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def read_sites(path: str | Path) -> gpd.GeoDataFrame:
    """Read a sites file into EPSG:4326 (a file without a CRS must be in degrees)."""
    source = Path(path)
    if not source.is_file():
        raise InputError(
            "sites file not found",
            where=str(source),
            fix="Give the file written by 'geoscreen sites extract' (or scan's work folder).",
        )
    try:
        if source.suffix.lower() in (".parquet", ".geoparquet"):
            frame = gpd.read_parquet(source)
        else:
            frame = gpd.read_file(source)
    except Exception as exc:  # pyogrio/pyarrow raise many kinds for unreadable files
        raise InputError(
            f"cannot read sites: {exc}".splitlines()[0], where=str(source), fix=_SITES_FIX
        ) from exc
    return in_storage_crs(frame, str(source))


def in_storage_crs(frame: Any, source: str) -> gpd.GeoDataFrame:
    """A site table in EPSG:4326 with its geometry named ``geometry`` (one without a CRS
    must be in degrees); ``source`` names it in errors."""
    if not isinstance(frame, gpd.GeoDataFrame) or frame.geometry.name not in frame:
        raise InputError("no geometry column", where=source, fix=_SITES_FIX)
    if frame.crs is None:
        minx, miny, maxx, maxy = frame.total_bounds if len(frame) else (0, 0, 0, 0)
        if min(minx, miny) < -180 or maxx > 180 or max(abs(miny), abs(maxy)) > 90:
            raise InputError(
                "sites have no CRS and are not in degrees: pixel coordinates of an image "
                "without georeference cannot be stored (the store keeps places on Earth)",
                where=source,
                fix="Extract sites from a georeferenced scene; if the file has a CRS that was "
                "lost, write it again with that CRS.",
            )
        frame = frame.set_crs("EPSG:4326")
    elif not frame.crs.equals("EPSG:4326"):
        frame = frame.to_crs("EPSG:4326")
    if frame.geometry.name != "geometry":
        frame = frame.rename_geometry("geometry")
    return frame


@dataclass(frozen=True)
class PreparedRun:
    """A site table read and checked, ready to load (no store needed yet)."""

    origin: str
    digest: str
    profile: str
    run_id: str
    rows: list[dict[str, Any]]
    threshold: float | None = None  # recorded by an objects table, applied
    below_threshold: int = 0  # its objects scoring less, not loaded


def prepare_sites(
    path: str | Path | gpd.GeoDataFrame,
    *,
    profile: str | None = None,
    run_id: str | None = None,
    source: str | None = None,
) -> PreparedRun:
    """Read and check a sites file or an in-memory site table, so that a bad one is
    refused before a store is touched; ``source`` names an in-memory table."""
    if isinstance(path, gpd.GeoDataFrame):
        frame = in_storage_crs(path, source or "sites")
        digest = frame_sha256(frame)
        origin = source or f"memory:{digest[:24]}"
    else:
        origin = str(Path(path).resolve())
        frame = read_sites(path)
        digest = sha256_file(path)
    where = Path(source or origin)
    profile = _single(frame, "profile", profile, where)
    if profile is None:
        raise InputError(
            "which profile found these sites?",
            where=str(where),
            fix="Give --profile NAME (the file has no 'profile' column).",
        )
    run_id = _single(frame, "run_id", run_id, where) or f"{profile}:file:{digest[:24]}"
    threshold, below = recorded_threshold(frame, str(where)), 0
    if threshold is not None and "score_max" in frame:
        scores = pd.to_numeric(frame["score_max"], errors="coerce")
        kept = scores.isna() | (scores >= threshold)  # no score: refused below, with its row
        below = int((~kept).sum())
        frame = frame[kept].drop(columns=THRESHOLD_COLUMN).reset_index(drop=True)
    else:
        threshold = None
    return PreparedRun(origin, digest, profile, run_id, _rows(frame, where), threshold, below)


def load_sites(
    store: Store,
    path: str | Path | gpd.GeoDataFrame | PreparedRun,
    *,
    profile: str | None = None,
    run_id: str | None = None,
    actor: str,
    progress: Progress | None = None,
    source: str | None = None,
    policy: dict[str, Any] | None = None,
    rescreened: Sequence[str] = (),
    model_sha256: str | None = None,
    warnings: Sequence[str] = (),
) -> LoadResult:
    """Load one run of sites; a run that is already complete is left as it is.

    ``path`` is a sites file, a site table in memory (``scan`` loads what it made
    without writing it out; ``source`` names where it came from), or what
    :func:`prepare_sites` read. ``policy`` is what the run recorded of the profile it
    applied (threshold, review rules) and is stored with the run.

    ``rescreened`` names the scenes the run screened in full (``scan`` gives its
    scene): candidates of the profile found there by an earlier run that this run does
    not find are flagged "below threshold" with this run and ``model_sha256`` (the
    run's model; the sites' own column when not given), never deleted. A flagged
    candidate that a run finds again loses the flag.

    ``warnings`` (lines) are stored with the run: ``scan`` gives those of a scene far
    from the model's training region and of a model that did not beat its baselines,
    and the review page shows them on the run's candidates.
    """
    started = time.perf_counter()
    run = (
        path
        if isinstance(path, PreparedRun)
        else prepare_sites(path, profile=profile, run_id=run_id, source=source)
    )
    if run.threshold is not None and policy is None:
        policy = {"threshold": run.threshold}
    rows = [dict(r) for r in run.rows]  # paths made portable for this store, not in place
    portable = cache(store.portable_path)  # one scene uri for many rows
    for r in rows:
        r["evidence_path"] = store.portable_path(r["evidence_path"])
        r["scene_uri"] = portable(r["scene_uri"])
    for attempt in range(3):
        try:
            origin_run = _Origin(
                run.origin, run.digest, policy, tuple(rescreened), model_sha256, tuple(warnings)
            )
            result = _load_run(store, origin_run, run.profile, run.run_id, rows, actor, progress)
            break
        except IntegrityError:
            # PostgreSQL: a concurrent load committed the same run or new sites first.
            # Retry: the run is then found complete, or those sites exist now.
            if attempt == 2:
                raise
    return LoadResult(**{**asdict(result), "seconds": time.perf_counter() - started})


@dataclass(frozen=True)
class _Origin:
    """Where a run's sites came from, and the profile policy it applied."""

    source: str
    digest: str
    policy: dict[str, Any] | None
    rescreened: tuple[str, ...] = ()
    model_sha256: str | None = None
    warnings: tuple[str, ...] = ()


def _load_run(
    store: Store,
    origin: _Origin,
    profile: str,
    run_id: str,
    rows: list[dict[str, Any]],
    actor: str,
    progress: Progress | None,
) -> LoadResult:
    """One transaction: the run, its candidates, detections and scenes, then the marker."""
    started = time.perf_counter()
    with store.write() as conn:
        done = conn.execute(select(runs.c.id).where(runs.c.run_id == run_id)).first()
        if done is not None:
            return LoadResult(run_id, profile, len(rows), 0, 0, True, time.perf_counter() - started)
        now = dt.datetime.now(dt.UTC)
        _match_places(conn, rows, profile)
        first: dict[str, Any] = rows[0] if rows else {}
        model = origin.model_sha256 or first.get("model_sha256")
        inserted = conn.execute(
            insert(runs).values(
                run_id=run_id,
                profile=profile,
                profile_version=first.get("profile_version"),
                model_sha256=model,
                source=origin.source,
                source_sha256=origin.digest,
                loaded_by=actor,
                started_at=now,
                site_count=len(rows),
                new_count=0,
                threshold=_threshold(origin.policy),
                policy=json.dumps(origin.policy, sort_keys=True) if origin.policy else None,
                warnings=json.dumps(list(origin.warnings)) if origin.warnings else None,
            )
        ).inserted_primary_key
        assert inserted is not None
        run_pk = int(inserted[0])
        new = again = 0
        for start in range(0, len(rows), CHUNK):
            fresh, cleared = _load_chunk(conn, rows[start : start + CHUNK], profile, run_pk, now)
            new, again = new + fresh, again + cleared
            if progress is not None:
                progress(min(start + CHUNK, len(rows)), len(rows))
        _record_scenes(conn, rows, run_pk, now)
        below = _flag_not_found(conn, profile, run_pk, origin.rescreened, model)
        conn.execute(
            update(runs)
            .where(runs.c.id == run_pk)
            .values(completed_at=dt.datetime.now(dt.UTC), new_count=new)
        )
        result = LoadResult(
            run_id, profile, len(rows), new, len(rows) - new, False, 0.0, below, again
        )
        flags = {"below_threshold": below, "found_again": again} if origin.rescreened else {}
        audit.append(
            conn,
            actor=actor,
            action="load_run",
            entity="run",
            entity_id=run_id,
            after={
                "source": origin.source,
                "source_sha256": origin.digest,
                "sites": len(rows),
                "new": new,
                **flags,
                "detections_sha256": detections_digest(conn, run_pk),
            },
            profile=profile,
            profile_version=first.get("profile_version"),
            model_sha256=model,
        )
    return result


def _match_places(
    conn: Connection, rows: list[dict[str, Any]], profile: str, rule: MatchRule | None = None
) -> None:
    """Rename, in place, each site whose id ``profile`` does not have to the id of the
    stored candidate it overlaps (one to one, most overlap first).

    Only areas are matched: points have no outline to overlap, so they keep their ids.
    A candidate that a site of this run already names by id is not matched again.
    """
    keys = [r["site_id"] for r in rows]
    known: set[str] = set()
    for start in range(0, len(keys), CHUNK):
        part = keys[start : start + CHUNK]
        known.update(
            conn.execute(
                select(candidates.c.site_id).where(
                    candidates.c.profile == profile, candidates.c.site_id.in_(part)
                )
            ).scalars()
        )
    unknown = np.array([i for i, key in enumerate(keys) if key not in known], dtype=np.int64)
    if unknown.size == 0:
        return
    geoms = shapely.from_wkb([rows[i]["geom_wkb"] for i in unknown])
    areal = np.isin(shapely.get_type_id(geoms), (3, 6))  # polygons, multipolygons
    unknown, geoms = unknown[areal], geoms[areal]
    if unknown.size == 0:
        return
    west, south, east, north = shapely.total_bounds(geoms)
    stored = [
        (site_id, wkb)
        for site_id, wkb in conn.execute(
            select(candidates.c.site_id, candidates.c.geom_wkb).where(
                candidates.c.profile == profile,
                candidates.c.minx <= east,
                candidates.c.maxx >= west,
                candidates.c.miny <= north,
                candidates.c.maxy >= south,
            )
        )
        if site_id not in known
    ]
    if not stored:
        return
    ids = np.array([site_id for site_id, _ in stored], dtype=object)
    shapes = shapely.from_wkb([wkb for _, wkb in stored])
    keep = np.isin(shapely.get_type_id(shapes), (3, 6))
    ids, shapes = ids[keep], shapes[keep]
    pairs = candidate_pairs(geoms, shapes, rule or MatchRule(), True)
    matched = assign_one_to_one(pairs, len(geoms), len(shapes))
    for left, right in zip(matched.left, matched.right, strict=True):
        rows[int(unknown[left])]["site_id"] = str(ids[right])


def _threshold(policy: dict[str, Any] | None) -> float | None:
    value = (policy or {}).get("threshold")
    return float(value) if isinstance(value, int | float) else None


def _flag_not_found(
    conn: Connection, profile: str, run_pk: int, scene_ids: tuple[str, ...], model: str | None
) -> int:
    """Flag the candidates of ``profile`` that earlier runs found in ``scene_ids`` and
    run ``run_pk`` did not; returns how many."""
    if not scene_ids:
        return 0
    found_now = select(detections.c.candidate_id).where(detections.c.run_pk == run_pk)
    earlier = (
        select(detections.c.candidate_id)
        .join(candidates, candidates.c.id == detections.c.candidate_id)
        .where(
            candidates.c.profile == profile,
            detections.c.scene_id.in_(scene_ids),
            detections.c.run_pk != run_pk,
            detections.c.candidate_id.not_in(found_now),
        )
        .distinct()
    )
    ids = list(conn.execute(earlier).scalars())
    for start in range(0, len(ids), CHUNK):
        conn.execute(
            update(candidates)
            .where(candidates.c.id.in_(ids[start : start + CHUNK]))
            .values(below_run_pk=run_pk, below_model_sha256=model)
        )
    return len(ids)


def _load_chunk(
    conn: Connection, rows: list[dict[str, Any]], profile: str, run_pk: int, now: dt.datetime
) -> tuple[int, int]:
    """Insert new candidates, update re-seen ones, add the detections; returns how many
    candidates are new and how many flagged ones were found again (flag cleared)."""
    keys = [r["site_id"] for r in rows]
    existing = {
        r.site_id: r
        for r in conn.execute(
            select(
                candidates.c.id,
                candidates.c.site_id,
                candidates.c.last_seen,
                candidates.c.first_seen,
                candidates.c.below_run_pk,
            ).where(candidates.c.profile == profile, candidates.c.site_id.in_(keys))
        )
    }
    fresh = [r for r in rows if r["site_id"] not in existing]
    ids: dict[str, int] = {k: e.id for k, e in existing.items()}
    if fresh:
        values = [
            {
                **_candidate_values(r),
                "profile": profile,
                "site_id": r["site_id"],
                "status": "new",
                "version": 1,
                "first_seen": r["first_seen"],
                "last_run_pk": run_pk,
                "created_at": now,
            }
            for r in fresh
        ]
        conn.execute(insert(candidates), values)
        fresh_keys = [r["site_id"] for r in fresh]
        created = conn.execute(
            select(candidates.c.site_id, candidates.c.id).where(
                candidates.c.profile == profile, candidates.c.site_id.in_(fresh_keys)
            )
        )
        ids.update({r.site_id: r.id for r in created})
    # Detections first: the store lets a candidate show only a detection of its run.
    conn.execute(
        insert(detections),
        [
            {
                "candidate_id": ids[r["site_id"]],
                "run_pk": run_pk,
                "scene_id": r["scene_id"],
                "acquired": r["acquired"],
                "score": r["score"],
                "score_mean": r["score_mean"],
                "tile_count": r["tile_count"],
                "area_m2": r["area_m2"],
                "evidence_path": r["evidence_path"],
                "geom_wkb": r["geom_wkb"],
                "extra": r["extra"],
            }
            for r in rows
        ],
    )
    newer = [r for r in rows if r["site_id"] in existing and _is_newer(r, existing[r["site_id"]])]
    if newer:
        stmt = (
            update(candidates)
            .where(candidates.c.id == bindparam("cid"))
            .values({c: bindparam(f"v_{c}") for c in _LATEST})
        )
        params = [
            {
                "cid": ids[r["site_id"]],
                **{f"v_{k}": v for k, v in _candidate_values(r).items()},
                "v_last_run_pk": run_pk,
            }
            for r in newer
        ]
        conn.execute(stmt, params)
    flagged = [e.id for e in existing.values() if e.below_run_pk is not None]
    if flagged:  # found again: no longer below the threshold
        conn.execute(
            update(candidates)
            .where(candidates.c.id.in_(flagged))
            .values(below_run_pk=None, below_model_sha256=None)
        )
    return len(fresh), len(flagged)


def _is_newer(row: dict[str, Any], existing: Any) -> bool:
    seen = row["last_seen"] or row["acquired"]
    old = existing.last_seen
    if old is not None and old.tzinfo is None:
        old = old.replace(tzinfo=dt.UTC)
    return old is None or seen is None or seen >= old


def _candidate_values(r: dict[str, Any]) -> dict[str, Any]:
    return {k: r[k] for k in _LATEST if k in r and k != "last_run_pk"}


def _record_scenes(
    conn: Connection, rows: list[dict[str, Any]], run_pk: int, now: dt.datetime
) -> None:
    counts: dict[str, int] = {}
    acquired: dict[str, dt.datetime | None] = {}
    uris: dict[str, str] = {}
    for r in rows:
        if r["scene_id"]:
            counts[r["scene_id"]] = counts.get(r["scene_id"], 0) + 1
            acquired.setdefault(r["scene_id"], r["acquired"])
            if r["scene_uri"]:
                uris.setdefault(r["scene_id"], r["scene_uri"])
    if not counts:
        return
    known = dict(
        conn.execute(
            select(scenes.c.scene_id, scenes.c.id).where(scenes.c.scene_id.in_(list(counts)))
        ).all()
    )
    for s, pk in known.items():  # the latest load that knows the file says where it is
        if s in uris:
            conn.execute(update(scenes).where(scenes.c.id == pk).values(uri=uris[s]))
    missing = [s for s in counts if s not in known]
    if missing:
        conn.execute(
            insert(scenes),
            [
                {"scene_id": s, "acquired": acquired[s], "first_loaded_at": now, "uri": uris.get(s)}
                for s in missing
            ],
        )
        known.update(
            conn.execute(
                select(scenes.c.scene_id, scenes.c.id).where(scenes.c.scene_id.in_(missing))
            ).all()
        )
    conn.execute(
        insert(run_scenes),
        [
            {
                "run_pk": run_pk,
                "scene_pk": known[s],
                "status": "done",
                "error": None,
                "site_count": n,
                "finished_at": now,
            }
            for s, n in counts.items()
        ],
    )


def _rows(frame: gpd.GeoDataFrame, source: Path) -> list[dict[str, Any]]:
    """Validated rows with the store's field names."""
    where = str(source)
    score_col = "score" if "score" in frame else "score_max" if "score_max" in frame else None
    if score_col is None:
        raise InputError("no 'score' or 'score_max' column", where=where, fix=_SITES_FIX)
    geoms = frame.geometry.values
    bad = np.flatnonzero(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    if len(bad):
        raise InputError(f"row {int(bad[0])} has no geometry ({len(bad)} rows)", where=where)
    wkb = shapely.to_wkb(geoms, output_dimension=2)
    bounds = shapely.bounds(geoms)
    if "site_id" in frame:
        site_ids = [str(s) for s in frame["site_id"]]
    else:
        site_ids = ["g" + hashlib.sha256(w).hexdigest()[:20] for w in wkb]
    seen: set[str] = set()
    for i, s in enumerate(site_ids):
        if s in seen:
            raise InputError(f"site_id {s!r} appears twice (row {i})", where=where)
        seen.add(s)
    scores = pd.to_numeric(frame[score_col], errors="coerce")
    if scores.isna().any():
        raise InputError(
            f"row {int(np.flatnonzero(scores.isna())[0])} has no numeric score", where=where
        )
    times = {name: _times(frame, name, where) for name in _TIMES}
    times["last_seen"] = [
        s or a for s, a in zip(times["last_seen"], times["acquired"], strict=True)
    ]
    times["first_seen"] = [
        f or s for f, s in zip(times["first_seen"], times["last_seen"], strict=True)
    ]
    points = shapely.point_on_surface(geoms)
    columns: dict[str, list[Any]] = {
        "site_id": site_ids,
        "geom_wkb": list(wkb),
        **{k: bounds[:, i].tolist() for i, k in enumerate(("minx", "miny", "maxx", "maxy"))},
        "lon": shapely.get_x(points).tolist(),
        "lat": shapely.get_y(points).tolist(),
        "score": scores.astype(float).tolist(),
        "score_mean": _column(frame, "score_mean", float),
        "area_m2": _column(frame, "area_m2", float),
        "tile_count": _column(frame, "tile_count", int),
        **{k: _column(frame, k, str) for k in _TEXT},
        **times,
    }
    extra_cols = [c for c in frame.columns if c not in _KNOWN]
    if extra_cols:
        records = pd.DataFrame(frame[extra_cols]).to_dict("records")
        columns["extra"] = [
            json.dumps({c: _jsonable(v) for c, v in r.items()}, default=str) for r in records
        ]
    else:
        columns["extra"] = [None] * len(frame)
    names = list(columns)
    return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def _column(frame: gpd.GeoDataFrame, name: str, kind: type) -> list[Any]:
    """A column as Python values of ``kind``, missing values as ``None``."""
    if name not in frame:
        return [None] * len(frame)
    missing = frame[name].isna().tolist()
    return [None if m else kind(v) for v, m in zip(frame[name].tolist(), missing, strict=True)]


def _times(frame: gpd.GeoDataFrame, name: str, where: str) -> list[dt.datetime | None]:
    if name not in frame:
        return [None] * len(frame)
    try:
        values = pd.to_datetime(frame[name], utc=True, format="mixed")
    except (ValueError, TypeError) as exc:
        raise InputError(f"column {name!r} has values that are not dates", where=where) from exc
    return [None if pd.isna(v) else v.to_pydatetime() for v in values]


def _single(frame: gpd.GeoDataFrame, column: str, given: str | None, source: Path) -> str | None:
    if column not in frame or not len(frame):
        return given
    values = {str(v) for v in frame[column].dropna().unique()}
    if len(values) > 1:
        raise InputError(
            f"the file has several values of {column!r}: {sorted(values)[:3]}",
            where=str(source),
            fix="Load one run (one profile) per file.",
        )
    value = values.pop() if values else None
    if given is not None and value is not None and value != given:
        raise InputError(
            f"--{column.replace('_', '-')} {given!r} but the file says {value!r}", where=str(source)
        )
    return given or value


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp | dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


def screened_scenes(
    store: Store, *, profile: str, profile_version: str | None, model_sha256: str | None
) -> set[str]:
    """Scene ids with a complete run of this profile version and model (for incremental scans)."""
    query = (
        select(scenes.c.scene_id)
        .join(run_scenes, run_scenes.c.scene_pk == scenes.c.id)
        .join(runs, runs.c.id == run_scenes.c.run_pk)
        .where(
            runs.c.profile == profile,
            runs.c.profile_version.is_(None)
            if profile_version is None
            else runs.c.profile_version == profile_version,
            runs.c.model_sha256.is_(None)
            if model_sha256 is None
            else runs.c.model_sha256 == model_sha256,
            runs.c.completed_at.is_not(None),
            run_scenes.c.status == "done",
        )
        .distinct()
    )
    with store.read() as conn:
        return set(conn.execute(query).scalars())


def frame_sha256(frame: gpd.GeoDataFrame) -> str:
    """A content hash of a site table in memory (what ``source_sha256`` is for a file)."""
    digest = hashlib.sha256()
    digest.update(shapely.to_wkb(frame.geometry.values, output_dimension=2).tobytes())
    others = pd.DataFrame(frame.drop(columns=frame.geometry.name)).astype(str)
    digest.update(pd.util.hash_pandas_object(others, index=False).to_numpy().tobytes())
    digest.update(",".join(map(str, others.columns)).encode())
    return digest.hexdigest()
