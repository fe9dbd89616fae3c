"""Exports of candidates: GeoJSON, GeoPackage, GeoParquet, CSV, KML, with redaction.

Who may export what: ``internal`` (exact outlines, review fields) needs an analyst;
``partner`` (displaced points, see :mod:`geoscreen.review.redaction`) and ``public``
(counts only) need a supervisor, and a partner export holds only ``escalated``
candidates (escalating is the decision to share). A partner export moves each
candidate to the same displaced point every time (the draws come from a secret kept
in the store's ``store_info``, which no export contains), so several exports average
to no better than one. Public counts leave rejected candidates out: a reviewer
decided they do not match. Every export is written
atomically and recorded, with its sha256 and redaction, in the ``exports`` table and
the audit log, in the same step that publishes the file.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from shapely.geometry.base import BaseGeometry
from sqlalchemy import insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from geoscreen.errors import ConfigError
from geoscreen.fileio import atomic_write, sha256_file
from geoscreen.review import audit
from geoscreen.review.records import STATUSES
from geoscreen.review.redaction import RedactionConfig, count_grid, count_regions, stable_donut
from geoscreen.review.schema import exports, store_info
from geoscreen.review.store import CandidateFilter, Store
from geoscreen.review.users import require_user

# format name -> (GDAL driver or None for pandas writers, file suffix)
FORMATS: dict[str, tuple[str | None, str]] = {
    "geojson": ("GeoJSON", ".geojson"),
    "gpkg": ("GPKG", ".gpkg"),
    "parquet": (None, ".parquet"),
    "csv": (None, ".csv"),
    "kml": ("KML", ".kml"),
}
_SUFFIXES = {
    ".json": "geojson",
    ".geoparquet": "parquet",
    **{s: f for f, (_, s) in FORMATS.items()},
}
INTERNAL_COLUMNS = (
    "id",
    "site_id",
    "profile",
    "profile_version",
    "model_sha256",
    "status",
    "version",
    "score",
    "score_mean",
    "area_m2",
    "tile_count",
    "scene_id",
    "acquired",
    "first_seen",
    "last_seen",
    "evidence_path",
    "status_changed_by",
    "status_changed_at",
    "match",
)
PARTNER_COLUMNS = ("id", "profile", "profile_version", "status", "score", "last_seen", "match")
ROLE_FOR = {"internal": "analyst", "partner": "supervisor", "public": "supervisor"}
GEOMASK_SECRET = "geomask_secret"  # store_info key; never written to any export
NOT_COUNTED = ("rejected",)  # public counts: reviewers decided these do not match


@dataclass(frozen=True)
class ExportResult:
    """What was written and recorded."""

    path: str
    format: str
    redaction: str
    features: int
    candidates: int
    sha256: str
    export_id: int
    audit_seq: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def infer_format(out: Path, format: str | None) -> str:
    """The format asked for, else the one the file suffix names."""
    if format is not None:
        if format not in FORMATS:
            raise ConfigError(
                f"unknown export format {format!r}", fix=f"Use one of {', '.join(FORMATS)}."
            )
        return format
    guessed = _SUFFIXES.get(out.suffix.lower())
    if guessed is None:
        raise ConfigError(
            f"cannot tell the format of {out.name!r}", fix=f"Give --format ({', '.join(FORMATS)})."
        )
    return guessed


def export_candidates(
    store: Store,
    out: str | Path,
    *,
    user: str,
    redaction: RedactionConfig | None = None,
    where: CandidateFilter | None = None,
    format: str | None = None,
    area: BaseGeometry | None = None,
    regions: gpd.GeoDataFrame | None = None,
    seed: int | None = None,
) -> ExportResult:
    """Write the candidates matching ``where`` (and touching ``area``, EPSG:4326) to ``out``.

    ``regions`` (polygons) replace the grid of a public export; ``seed`` fixes the row
    order of a partner export (default: random). A partner export's points do not
    depend on it: they are fixed per candidate and ring by the store's secret.
    """
    target = Path(out)
    fmt = infer_format(target, format)
    config = redaction or RedactionConfig()
    where = where or CandidateFilter()
    if config.level == "partner":
        if where.statuses and "escalated" not in where.statuses:
            raise ConfigError(
                "partner exports hold escalated candidates only",
                fix="Escalate candidates first (a second supervisor decides).",
            )
        where = CandidateFilter(**{**where.__dict__, "statuses": ("escalated",)})
    if config.level == "public":
        asked = where.statuses or None
        if asked and set(asked) <= set(NOT_COUNTED):
            raise ConfigError(
                "public counts never include rejected candidates",
                fix="Leave out --status rejected (reviewers decided those do not match).",
            )
        kept = tuple(s for s in (asked or STATUSES) if s not in NOT_COUNTED)
        where = CandidateFilter(**{**where.__dict__, "statuses": kept})
    with store.read() as conn:
        require_user(conn, user, ROLE_FOR[config.level], f"make {config.level} exports")
    found = store.frame(where)
    if area is not None and len(found):
        found = found[found.intersects(area)]
    if config.level == "internal" and len(found):
        # Stored paths may be relative to the store's folder: write ones usable from anywhere.
        found = found.assign(
            evidence_path=[
                str(store.locate(p) or p) if isinstance(p, str) and p else p
                for p in found["evidence_path"]
            ]
        )
    rng = np.random.default_rng(seed if seed is not None else secrets.randbits(128))
    secret = geomask_secret(store) if config.level == "partner" and len(found) else b""
    layer = _redact(found, config, rng, regions, secret)
    recorded: dict[str, Any] = {}

    def write(tmp: str) -> None:
        _write(layer, tmp, fmt)
        digest = sha256_file(tmp)
        params = {
            "format": fmt,
            "redaction": config.describe(),
            "filters": where.to_dict(),
            "area": area is not None,
            "regions": regions is not None,
            "seeded": seed is not None,
        }
        with store.write() as conn:
            require_user(conn, user, ROLE_FOR[config.level], f"make {config.level} exports")
            row = {
                "at": dt.datetime.now(dt.UTC),
                "user_name": user,
                "format": fmt,
                "redaction": config.level,
                "path": str(target.resolve()),
                "sha256": digest,
                "count": len(layer),
                "params": audit.canonical_json(params),
            }
            inserted = conn.execute(insert(exports).values(**row)).inserted_primary_key
            assert inserted is not None
            entry = audit.append(
                conn,
                actor=user,
                action="export",
                entity="export",
                entity_id=int(inserted[0]),
                after={
                    **params,
                    "path": row["path"],
                    "sha256": digest,
                    "features": len(layer),
                    "candidates": len(found),
                },
            )
        recorded.update(export_id=int(inserted[0]), sha256=digest, audit_seq=entry.seq)

    atomic_write(target, write)
    return ExportResult(
        path=str(target.resolve()),
        format=fmt,
        redaction=config.level,
        features=len(layer),
        candidates=len(found),
        **recorded,
    )


def _redact(
    found: gpd.GeoDataFrame,
    config: RedactionConfig,
    rng: np.random.Generator,
    regions: gpd.GeoDataFrame | None,
    secret: bytes,
) -> gpd.GeoDataFrame:
    if config.level == "internal":
        return found[[*INTERNAL_COLUMNS, "geometry"]] if len(found) else _empty(INTERNAL_COLUMNS)
    if config.level == "partner":
        if not len(found):
            return _empty((*PARTNER_COLUMNS, "location"))
        lon, lat, _ = stable_donut(
            found["lon"].to_numpy(),
            found["lat"].to_numpy(),
            [str(int(i)) for i in found["id"]],
            secret=secret,
            min_m=config.min_m,
            max_m=config.max_m,
        )
        out = pd.DataFrame(found[list(PARTNER_COLUMNS)]).copy()
        out["score"] = out["score"].round(3)
        out["last_seen"] = out["last_seen"].dt.strftime("%Y-%m-%d")
        out["location"] = (
            f"moved {config.min_m:g}-{config.max_m:g} m in a random direction "
            "(the same point in every export)"
        )
        # Shuffle the rows so their order does not leak the score ranking or the ids' order.
        order = rng.permutation(len(out))
        return gpd.GeoDataFrame(
            out.iloc[order].reset_index(drop=True),
            geometry=shapely.points(lon[order], lat[order]),
            crs="EPSG:4326",
        )
    points = gpd.GeoSeries(
        shapely.points(found["lon"], found["lat"]) if len(found) else [], crs="EPSG:4326"
    )
    profiles = ", ".join(sorted(set(found["profile"]))) if len(found) else ""
    if regions is not None:
        counted = count_regions(points, regions, min_count=config.min_count)
    else:
        counted = count_grid(points, grid_m=config.grid_m, min_count=config.min_count)
    counted["match"] = f"places matching profile {profiles}" if profiles else ""
    counted["note"] = (
        f"counts under {config.min_count} are not shown; rejected candidates are not counted"
    )
    return counted


def geomask_secret(store: Store) -> bytes:
    """The store's geomask secret, made on first use (32 random bytes in ``store_info``).

    Two first exports racing both insert "if absent" and read back the one that won.
    """
    query = select(store_info.c.value).where(store_info.c.key == GEOMASK_SECRET)
    with store.read() as conn:
        found = conn.execute(query).scalar()
    if found is None:
        make = sqlite_insert if store.dialect == "sqlite" else pg_insert
        row = {"key": GEOMASK_SECRET, "value": secrets.token_hex(32)}
        with store.write() as conn:
            conn.execute(make(store_info).values(**row).on_conflict_do_nothing())
            found = conn.execute(query).scalar_one()
    return bytes.fromhex(str(found))


def _empty(columns: tuple[str, ...]) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {c: pd.Series(dtype=object) for c in columns}, geometry=[], crs="EPSG:4326"
    )


def _write(layer: gpd.GeoDataFrame, path: str, fmt: str) -> None:
    driver = FORMATS[fmt][0]
    frame = layer.copy()
    if fmt == "parquet":
        frame.to_parquet(path)
        return
    for name in frame.columns:
        if name != frame.geometry.name and isinstance(frame[name].dtype, pd.DatetimeTZDtype):
            frame[name] = frame[name].map(lambda v: None if pd.isna(v) else v.isoformat())
    if fmt == "csv":
        table = pd.DataFrame(frame.drop(columns=frame.geometry.name))
        table["wkt"] = shapely.to_wkt(frame.geometry.values, rounding_precision=-1)
        table.to_csv(path, index=False)
        return
    if fmt == "kml":
        frame.insert(0, "Name", [_kml_name(r) for r in frame.to_dict("records")])
    geometry_type = "Unknown" if not len(frame) else None
    pyogrio.write_dataframe(
        frame, path, driver=driver, layer="candidates", geometry_type=geometry_type
    )


def _kml_name(row: dict[str, Any]) -> str:
    if "id" in row:
        return f"{row['id']}: {row.get('match', '')}"
    count = row.get("count")
    return "fewer than the minimum" if count is None or pd.isna(count) else f"{int(count)} places"
