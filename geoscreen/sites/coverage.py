"""Coverage history: which places each screening run looked at, and when they were imaged.

Telling "new here" from "never looked here before" needs to know where earlier
runs screened. A coverage table has one row per screened scene:

===========  =========  =====================================================
column       type       meaning
===========  =========  =====================================================
scene_id     str        the scene
run_id       str        the screening run
profile      str        screening profile name
acquired     datetime   acquisition time of the scene (UTC; empty if unknown)
tiles        int        tiles screened
geometry     polygon    footprint of the screened tiles, EPSG:4326 (pixel
                        coordinates without CRS for images without georeference)
===========  =========  =====================================================

It is stored beside a site file as ``<name>.coverage.parquet`` (see
:func:`coverage_path`) and grows with every run added to that site file.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from affine import Affine
from rasterio import features

from geoscreen.errors import InputError
from geoscreen.fileio import atomic_write
from geoscreen.imagery.tiling import TileGrid
from geoscreen.sites.site import STORAGE_CRS
from geoscreen.vision.scoremap import ScoreMap

COVERAGE_COLUMNS = ("scene_id", "run_id", "profile", "acquired", "tiles")


def coverage_path(sites_path: str | os.PathLike[str]) -> Path:
    """The coverage file that belongs to a site file."""
    path = Path(sites_path)
    return path.with_name(f"{path.stem}.coverage.parquet")


def empty_coverage(crs: str | None = STORAGE_CRS) -> gpd.GeoDataFrame:
    return _typed(gpd.GeoDataFrame({c: [] for c in COVERAGE_COLUMNS}, geometry=[], crs=crs))


def coverage_of(
    scores: ScoreMap | TileGrid, *, run_id: str, profile: str, acquired: datetime | None
) -> gpd.GeoDataFrame:
    """One coverage row: the footprint of the tiles screened (those of a score map, or a
    grid of them for detection runs), as stride cells merged."""
    grid = scores if isinstance(scores, TileGrid) else scores.grid
    scene = grid.scene
    crs = STORAGE_CRS if scene.crs is not None else None
    row = {"scene_id": [scene.id], "run_id": [run_id], "profile": [profile],
           "acquired": [acquired], "tiles": [len(grid)]}  # fmt: skip
    if len(grid) == 0:
        return _typed(gpd.GeoDataFrame(row, geometry=[shapely.Polygon()], crs=crs))
    mask = np.zeros((grid.n_rows, grid.n_cols), dtype=np.uint8)
    mask[grid.rows, grid.cols] = 1
    cell = Affine.scale(grid.stride)
    shapes = [shapely.geometry.shape(g) for g, _ in features.shapes(mask, mask=mask > 0,
                                                                       transform=cell)]  # fmt: skip
    outline = shapely.clip_by_rect(shapely.union_all(shapes), 0, 0, scene.width, scene.height)
    outline = shapely.affinity.affine_transform(outline, scene.transform.to_shapely())
    frame = gpd.GeoDataFrame(row, geometry=[outline], crs=scene.crs)
    return _typed(frame.to_crs(STORAGE_CRS) if crs is not None else frame)


def latest_gap(
    points: gpd.GeoSeries,
    profiles: np.ndarray,
    before: pd.Series,
    coverage: gpd.GeoDataFrame | None,
) -> pd.Series:
    """For each point, the latest coverage acquisition earlier than ``before`` (same profile).

    That acquisition looked at the place and found nothing there (had it found a
    site, the site would carry an earlier ``first_seen``). NaT where there is none.
    """
    out = pd.Series(pd.NaT, index=points.index, dtype="datetime64[ms, UTC]")
    if coverage is None or len(coverage) == 0 or len(points) == 0:
        return out
    cov = coverage[coverage["acquired"].notna()]
    if points.crs is not None and cov.crs is not None and cov.crs != points.crs:
        cov = cov.to_crs(points.crs)
    if len(cov) == 0:
        return out
    tree = shapely.STRtree(cov.geometry.values)
    pi, ci = tree.query(points.values, predicate="within")
    when = cov["acquired"].to_numpy(dtype="datetime64[ms]")[ci]
    limit = before.to_numpy(dtype="datetime64[ms]")[pi]
    same = np.asarray(profiles, dtype=object)[pi] == cov["profile"].to_numpy(dtype=object)[ci]
    keep = same & (when < limit)
    if not keep.any():
        return out
    gaps = pd.Series(when[keep]).groupby(pi[keep]).max()
    out.iloc[gaps.index.to_numpy()] = pd.to_datetime(gaps.to_numpy()).tz_localize("UTC")
    return out


def write_coverage(frame: gpd.GeoDataFrame, path: str | os.PathLike[str]) -> Path:
    """Write a coverage table as GeoParquet, atomically."""
    table = _typed(frame)
    atomic_write(path, lambda tmp: table.to_parquet(tmp, index=False))
    return Path(path)


def read_coverage(path: str | os.PathLike[str]) -> gpd.GeoDataFrame:
    """Read a coverage table written by :func:`write_coverage`."""
    source = Path(path)
    try:
        frame = gpd.read_parquet(source)
    except (ValueError, OSError) as exc:
        raise InputError(
            f"cannot read the coverage history ({str(exc).splitlines()[0][:160]})",
            where=str(source),
            fix="Give the .coverage.parquet file written with the site file, or delete it "
            "to start a new history.",
        ) from None
    missing = [c for c in COVERAGE_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(
            f"not a coverage history: no {', '.join(missing)} column(s)",
            where=str(source),
            fix="Give the .coverage.parquet file written with the site file.",
        )
    return _typed(frame)


def _typed(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    out = frame.copy()
    out["acquired"] = pd.to_datetime(out["acquired"], utc=True).astype("datetime64[ms, UTC]")
    out["tiles"] = np.asarray(out["tiles"], dtype=np.int64)
    for col in ("scene_id", "run_id", "profile"):
        out[col] = out[col].astype(object)
    return out
