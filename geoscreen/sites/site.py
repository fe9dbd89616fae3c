"""Candidate sites: the unit people review, and its file format.

A *site* is a place whose imagery matched a screening profile: flagged tiles
merged into one outline. Sites are tables (GeoDataFrames, one row per site). The
column schema is stable and the same in GeoParquet and GeoPackage files:

=================  ==========  ========================================================
column             type        meaning
=================  ==========  ========================================================
site_id            str         stable id; kept when a later run sees the site again
geometry           polygon     outline in EPSG:4326 (pixel coordinates, no CRS, for
                               images without georeference)
score_max          float       highest tile score in the site (latest detection)
score_mean         float       mean tile score in the site (latest detection)
tile_count         int         flagged tiles merged into the site (latest detection)
area_m2            float       area in m^2, computed in the UTM zone of the site's
                               centroid; for images without georeference px^2, or m^2
                               from a nominal pixel size (see ``area_unit``)
scene_id           str         scene of the latest detection
acquired           datetime    acquisition time of that scene (UTC; empty if unknown)
profile            str         screening profile name
profile_version    str         screening profile version
model_sha256       str         sha256 of the model weights that scored the tiles
run_id             str         screening run of the latest detection
evidence_path      str         PNG evidence chip of the latest detection (absolute path)
first_seen         datetime    earliest detection (acquisition time, else run time; UTC)
last_seen          datetime    latest detection (acquisition time, else run time; UTC)
new_since          datetime    set when an earlier acquisition covering the place had
                               no detection: the latest such acquisition (UTC)
detections         int         how many times runs have detected the site
area_unit          str         ``m2``, or ``px2`` for pixel-space sites without a pixel size
scene_uri          str         where the scene of the latest detection was read from (path
                               or URI; empty if unknown); the review server shows its
                               imagery from there
=================  ==========  ========================================================

"Latest detection" means the one with the latest ``last_seen``; a site matched in an
older acquisition keeps its newer geometry and scores.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio.errors
import shapely

from geoscreen.errors import InputError
from geoscreen.fileio import atomic_write

STORAGE_CRS = "EPSG:4326"
GPKG_LAYER = "sites"
DATETIME_COLUMNS = ("acquired", "first_seen", "last_seen", "new_since")
SITE_COLUMNS: tuple[str, ...] = (
    "site_id", "score_max", "score_mean", "tile_count", "area_m2", "scene_id", "acquired",
    "profile", "profile_version", "model_sha256", "run_id", "evidence_path", "first_seen",
    "last_seen", "new_since", "detections", "area_unit", "scene_uri",
)  # fmt: skip
_FLOATS = ("score_max", "score_mean", "area_m2")
_INTS = ("tile_count", "detections")
_STRINGS = ("site_id", "scene_id", "profile", "profile_version", "model_sha256", "run_id",
            "evidence_path", "area_unit", "scene_uri")  # fmt: skip
_REQUIRED = ("site_id", "score_max", "profile")
# Not a site column: an objects table (a detection screen's every object, sites.detections)
# records in it the threshold in force, so that evaluation applies the same.
THRESHOLD_COLUMN = "threshold"


def empty_sites(crs: Any = STORAGE_CRS) -> gpd.GeoDataFrame:
    """A site table with no rows and every column typed."""
    return normalise(gpd.GeoDataFrame({c: [] for c in SITE_COLUMNS}, geometry=[], crs=crs))


def normalise(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Columns in schema order with schema types (missing optional columns filled)."""
    out = frame.copy()
    n = len(out)
    for col in _FLOATS:
        out[col] = pd.to_numeric(out[col], errors="coerce") if col in out else np.full(n, np.nan)
        out[col] = out[col].astype("float64")
    for col in _INTS:
        default = 1 if col == "detections" else 0
        values = (
            pd.to_numeric(out[col], errors="coerce") if col in out else pd.Series([default] * n)
        )
        out[col] = np.asarray(values.fillna(default), dtype=np.int64)
    for col in _STRINGS:
        values = out[col] if col in out else pd.Series([None] * n, index=out.index)
        out[col] = values.astype(object).where(values.notna(), None)
    if n and out["area_unit"].isna().all():
        out["area_unit"] = "m2" if out.crs is not None else "px2"
    for col in DATETIME_COLUMNS:
        values = out[col] if col in out else pd.Series([pd.NaT] * n, index=out.index)
        out[col] = pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")
        out[col] = out[col].astype("datetime64[ms, UTC]")
    ordered = [*SITE_COLUMNS, out.geometry.name]
    extra = [c for c in out.columns if c not in ordered]
    return gpd.GeoDataFrame(out[[*ordered, *extra]], geometry=out.geometry.name, crs=out.crs)


def write_sites(frame: gpd.GeoDataFrame, path: str | os.PathLike[str]) -> Path:
    """Write a site table as GeoParquet (``.parquet``) or GeoPackage (``.gpkg``), atomically."""
    target = Path(path)
    suffix = target.suffix.lower()
    table = normalise(frame)
    if suffix in (".parquet", ".geoparquet"):
        atomic_write(target, lambda tmp: table.to_parquet(tmp, index=False))
    elif suffix == ".gpkg":
        atomic_write(target, lambda tmp: _write_gpkg(table, tmp))
    else:
        raise InputError(
            f"unknown site file type {suffix or '(no extension)'!r}",
            where=str(target),
            fix="Name the output .parquet (GeoParquet) or .gpkg (GeoPackage).",
        )
    return target


def _write_gpkg(table: gpd.GeoDataFrame, tmp: str) -> None:
    with warnings.catch_warnings():
        # Without a CRS (pixel space) GDAL records an undefined Cartesian SRS, as intended.
        warnings.filterwarnings("ignore", message=".*crs.* was not provided", category=UserWarning)
        table.to_file(tmp, driver="GPKG", layer=GPKG_LAYER, engine="pyogrio")


def read_sites(path: str | os.PathLike[str]) -> gpd.GeoDataFrame:
    """Read a site table written by :func:`write_sites` (or any file with the schema)."""
    source = Path(path)
    if not source.is_file():
        raise InputError("site file not found", where=str(source), fix="Check the path.")
    try:
        if source.suffix.lower() in (".parquet", ".geoparquet"):
            frame = gpd.read_parquet(source)
        else:
            frame = gpd.read_file(source, engine="pyogrio")
    except (ValueError, OSError, pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError,
            ImportError) as exc:  # fmt: skip
        raise InputError(
            f"cannot read as a site table ({str(exc).splitlines()[0][:160]})",
            where=str(source),
            fix="Give a GeoParquet or GeoPackage file written by 'geoscreen sites extract'.",
        ) from None
    missing = [c for c in _REQUIRED if c not in frame.columns]
    if missing:
        raise InputError(
            f"not a site table: no {', '.join(missing)} column(s)",
            where=str(source),
            fix="Give a file written by 'geoscreen sites extract' (see geoscreen.sites.site).",
        )
    return normalise(frame)


def utm_epsg(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """EPSG code of the UTM zone of each (lon, lat); UPS beyond 84 N and 80 S."""
    lon, lat = np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
    zone = np.clip(np.floor((lon + 180.0) / 6.0).astype(np.int64) + 1, 1, 60)
    code = np.where(lat >= 0, 32600 + zone, 32700 + zone)
    return np.where(lat > 84.0, 32661, np.where(lat < -80.0, 32761, code))


def area_m2(geoms: gpd.GeoSeries) -> np.ndarray:
    """Area of each geometry in m^2, each computed in the UTM zone of its centroid."""
    out = np.full(len(geoms), np.nan)
    if len(geoms) == 0:
        return out
    lonlat = geoms.to_crs(STORAGE_CRS) if geoms.crs != STORAGE_CRS else geoms
    centres = shapely.get_coordinates(shapely.centroid(lonlat.values))
    codes = utm_epsg(centres[:, 0], centres[:, 1])
    for code in np.unique(codes):
        chosen = np.flatnonzero(codes == code)
        out[chosen] = geoms.iloc[chosen].to_crs(int(code)).area.to_numpy()
    return out


def recorded_threshold(frame: pd.DataFrame, where: str) -> float | None:
    """The threshold in force that an objects table records (None: the table has none)."""
    if THRESHOLD_COLUMN not in frame.columns or frame.empty:
        return None
    values = pd.to_numeric(frame[THRESHOLD_COLUMN], errors="coerce").dropna().unique()
    if len(values) == 0:
        return None
    if len(values) > 1:
        raise InputError(
            f"the {THRESHOLD_COLUMN!r} column holds {len(values)} values, not the one threshold "
            "in force of one screening",
            where=where,
            fix="Give one scene's objects.parquet as screen wrote it (evaluate can also "
            "choose one with --score-threshold).",
        )
    return float(values[0])
