"""From a score map to candidate sites.

Tiles scoring at least the threshold are *flagged*. Flagged tiles that overlap,
touch (corners included) or lie within the profile's ``sites.merge_distance_m`` of
each other are merged into one site; its outline is the union of its tiles
(clipped to the scene), and sites smaller than ``sites.min_area_m2`` are dropped.

Everything is vectorised: neighbours are found on the tile grid by sorted-key
lookups (one pass per neighbour offset, no pairwise loops), components by
``scipy.sparse.csgraph``; only sites of several tiles need a polygon union.

Georeferenced scenes: outlines are stored in EPSG:4326; areas are computed in the
UTM zone of each site's centroid and distances converted with the scene's pixel
size. Images without georeference stay in pixel coordinates (no CRS): give their
nominal ``pixel_size_m`` to apply the profile's metre rules and get m^2; without
it areas are in px^2 (``area_unit`` ``px2``), only touching tiles merge and the
minimum area is not applied (a warning says so).
"""

from __future__ import annotations

import hashlib
import logging
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from affine import Affine
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from geoscreen.errors import ConfigError, InputError
from geoscreen.imagery.scene import Scene
from geoscreen.imagery.tiling import TileGrid
from geoscreen.profiles import Profile
from geoscreen.sites.site import STORAGE_CRS, area_m2, empty_sites, normalise
from geoscreen.vision.scoremap import TILES_FILE, ScoreMap

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SiteRules:
    """Threshold and merge rules, in pixels of one scene."""

    threshold: float
    merge_px: float
    min_area: float
    area_unit: str
    pixel_size_m: float | None

    @classmethod
    def for_scene(
        cls,
        profile: Profile,
        scene: Scene,
        threshold: float | None = None,
        pixel_size_m: float | None = None,
    ) -> SiteRules:
        """The profile's rules on ``scene`` (``pixel_size_m`` only for pixel-space images)."""
        thr = profile.threshold if threshold is None else float(threshold)
        if not 0.0 <= thr <= 1.0:
            raise ConfigError(
                f"threshold must be between 0 and 1, got {thr}",
                fix="Give a score between 0 and 1 (e.g. --threshold 0.5), or leave it out to "
                "use the profile's.",
            )
        if pixel_size_m is not None and not pixel_size_m > 0:
            raise ConfigError(
                f"pixel size must be positive, got {pixel_size_m}",
                fix="Give the ground size of one pixel in metres (e.g. --pixel-size 0.1).",
            )
        rules = profile.sites
        res = scene.resolution_m
        if res is not None:
            size = (res[0] + res[1]) / 2
            return cls(thr, rules.merge_distance_m / size, rules.min_area_m2, "m2", None)
        if pixel_size_m is not None:
            merge = rules.merge_distance_m / pixel_size_m
            return cls(thr, merge, rules.min_area_m2, "m2", pixel_size_m)
        if rules.merge_distance_m or rules.min_area_m2:
            log.warning(
                "%s has no georeference and no pixel size was given: only touching tiles "
                "merge, no minimum area applies, and areas are in px^2",
                scene.uri,
            )
        return cls(thr, 0.0, 0.0, "px2", None)


def extract_sites(
    scores: ScoreMap,
    profile: Profile,
    *,
    threshold: float | None = None,
    pixel_size_m: float | None = None,
    run_id: str | None = None,
    acquired: datetime | None = None,
    seen_at: datetime | None = None,
) -> gpd.GeoDataFrame:
    """Candidate sites of one score map, as a site table (see :mod:`geoscreen.sites.site`).

    ``run_id``, ``model_sha256``, ``profile_version`` come from ``scores.meta`` when
    present; ``acquired`` defaults to the scene's acquisition time. ``first_seen`` and
    ``last_seen`` are the acquisition time, else ``seen_at`` (default: now).
    """
    grid = scores.grid
    scene = grid.scene
    rules = SiteRules.for_scene(profile, scene, threshold, pixel_size_m)
    meta = scores.meta
    if meta.get("profile") not in (None, profile.name):
        raise ConfigError(
            f"these scores come from profile {meta['profile']!r}, not {profile.name!r}",
            fix="Extract sites with the profile the scene was screened with.",
        )
    run = run_id or str(meta.get("run_id") or uuid.uuid4().hex[:12])
    crs = STORAGE_CRS if scene.crs is not None else None
    flagged = np.flatnonzero((scores.scores >= rules.threshold) & (scores.valid_fraction > 0))
    if flagged.size == 0:
        return empty_sites(crs)
    rows, cols = grid.rows[flagged], grid.cols[flagged]
    labels = tile_components(rows, cols, grid.tile_size, grid.stride, rules.merge_px)
    outlines = component_outlines(labels, rows, cols, grid)
    counts = np.bincount(labels)
    score = scores.scores[flagged].astype(np.float64)
    order = np.argsort(labels, kind="stable")
    starts = np.r_[0, np.flatnonzero(np.diff(labels[order])) + 1]
    score_max = np.maximum.reduceat(score[order], starts)
    score_mean = np.bincount(labels, weights=score) / counts
    geoms = gpd.GeoSeries(pixel_to_crs(outlines, scene.transform), crs=scene.crs)
    if scene.crs is not None:
        area = area_m2(geoms)
        geoms = geoms.to_crs(STORAGE_CRS)
    else:
        area = shapely.area(outlines) * (rules.pixel_size_m or 1.0) ** 2
    keep = area >= rules.min_area
    frame = gpd.GeoDataFrame(
        {
            "site_id": site_ids(profile.name, scene.id, run, shapely.bounds(outlines[keep])),
            "score_max": score_max[keep],
            "score_mean": score_mean[keep],
            "tile_count": counts[keep],
            "area_m2": area[keep],
            "area_unit": rules.area_unit,
            **run_columns(
                scene,
                profile,
                profile_version=str(meta.get("profile_version") or profile.version),
                model_sha256=meta.get("model_sha256"),
                run_id=run,
                acquired=acquired or scene.acquired,
                seen_at=seen_at,
            ),
        },
        geometry=geoms.values[keep],
        crs=crs,
    )
    frame = frame.sort_values("score_max", ascending=False, kind="stable").reset_index(drop=True)
    return normalise(frame)


def run_columns(
    scene: Scene,
    profile: Profile,
    *,
    profile_version: str,
    model_sha256: str | None,
    run_id: str,
    acquired: datetime | None,
    seen_at: datetime | None,
) -> dict[str, Any]:
    """The site-table columns shared by every new site one run finds on ``scene``.

    Scene (id and file), acquisition time, profile, model and run; ``first_seen`` and ``last_seen``
    are the acquisition time, else ``seen_at``, else now; no evidence yet, not new
    since an earlier run, one detection.
    """
    seen = acquired or seen_at or datetime.now(UTC)
    return {
        "scene_id": scene.id,
        "scene_uri": scene.uri,  # where the review server finds the imagery
        "acquired": pd.Timestamp(acquired) if acquired else pd.NaT,
        "profile": profile.name,
        "profile_version": profile_version,
        "model_sha256": model_sha256,
        "run_id": run_id,
        "evidence_path": None,
        "first_seen": pd.Timestamp(seen),
        "last_seen": pd.Timestamp(seen),
        "new_since": pd.NaT,
        "detections": 1,
    }


def tile_components(
    rows: np.ndarray, cols: np.ndarray, tile_size: int, stride: int, merge_px: float = 0.0
) -> np.ndarray:
    """Component label (0..k-1) of each tile; tiles within ``merge_px`` share a component.

    Two tiles ``(dr, dc)`` grid steps apart are ``max(0, |d| * stride - tile_size)``
    pixels apart along each axis; overlapping and touching tiles (distance 0) always
    join.
    """
    n = int(rows.size)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    reach = max(1, math.floor((merge_px + tile_size) / stride))
    steps = np.arange(reach + 1)
    gap = np.maximum(0, steps * stride - tile_size).astype(np.float64)
    width = int(cols.max()) + 1
    key = rows * width + cols
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    src, dst = [], []
    for dr in range(reach + 1):
        for dc in range(-reach, reach + 1):
            if (dr == 0 and dc <= 0) or math.hypot(gap[dr], gap[abs(dc)]) > merge_px + 1e-9:
                continue
            inside = (cols + dc >= 0) & (cols + dc < width)
            target = key + dr * width + dc
            pos = np.minimum(np.searchsorted(sorted_key, target), n - 1)
            hit = inside & (sorted_key[pos] == target)
            src.append(np.flatnonzero(hit))
            dst.append(order[pos[hit]])
    i = np.concatenate(src) if src else np.zeros(0, dtype=np.int64)
    j = np.concatenate(dst) if dst else np.zeros(0, dtype=np.int64)
    graph = coo_matrix((np.ones(i.size, dtype=np.int8), (i, j)), shape=(n, n))
    _count, labels = connected_components(graph, directed=False)
    return labels.astype(np.int64)


def component_outlines(
    labels: np.ndarray, rows: np.ndarray, cols: np.ndarray, grid: TileGrid
) -> np.ndarray:
    """Union of each component's tiles in pixel coordinates, clipped to the scene."""
    scene = grid.scene
    c0 = cols.astype(np.float64) * grid.stride
    r0 = rows.astype(np.float64) * grid.stride
    c1 = np.minimum(c0 + grid.tile_size, scene.width)
    r1 = np.minimum(r0 + grid.tile_size, scene.height)
    boxes = shapely.box(c0, r0, c1, r1)
    k = int(labels.max()) + 1 if labels.size else 0
    out = np.empty(k, dtype=object)
    counts = np.bincount(labels, minlength=k)
    single = counts[labels] == 1
    out[labels[single]] = boxes[single]
    multi = np.flatnonzero(~single)
    order = multi[np.argsort(labels[multi], kind="stable")]
    if order.size:
        splits = np.flatnonzero(np.diff(labels[order])) + 1
        for members in np.split(order, splits):
            out[labels[members[0]]] = shapely.union_all(boxes[members])
    return out


def pixel_to_crs(geoms: np.ndarray, transform: Affine) -> np.ndarray:
    """Geometries from pixel coordinates (col, row) to the CRS of ``transform``."""
    t = transform

    def apply(xy: np.ndarray) -> np.ndarray:
        x, y = xy[:, 0], xy[:, 1]
        return np.column_stack([t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f])

    return np.asarray(shapely.transform(geoms, apply), dtype=object)


def site_ids(profile: str, scene_id: str, run_id: str, bounds: np.ndarray) -> list[str]:
    """Deterministic ids from profile, scene, run and each outline's bounds in scene pixels
    (x min, y min, x max, y max: a detector's boxes as they are)."""
    prefix = f"{profile}|{scene_id}|{run_id}|"
    return [
        hashlib.sha256(f"{prefix}{b[0]:.3f},{b[1]:.3f},{b[2]:.3f},{b[3]:.3f}".encode()).hexdigest()[
            :16
        ]
        for b in bounds
    ]


def load_scoremap(folder: str | Path, scene: Scene, profile: Profile | None = None) -> ScoreMap:
    """A score map written by ``ScoreMap.write`` (``tiles.parquet``), on its scene's grid.

    The grid's tile size and overlap are the ones recorded in the file; files written
    before they were recorded need the ``profile`` they were screened with.
    """
    path = Path(folder) / TILES_FILE
    if not path.is_file():
        raise InputError(
            f"no {TILES_FILE} here", where=str(folder), fix="Give a folder written by 'screen'."
        )
    again = "Screen the scene again with 'geoscreen screen'."
    try:
        tiles = pd.read_parquet(path, columns=None)
    except (OSError, ValueError) as exc:  # not Parquet, truncated, unreadable
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise InputError(f"cannot read the scores ({reason})", where=str(path),
                         fix=again) from None  # fmt: skip
    missing = [c for c in ("row", "col", "score", "valid_fraction") if c not in tiles]
    if missing:
        raise InputError(f"{TILES_FILE} lacks column(s) {', '.join(missing)}", where=str(path),
                         fix=again)  # fmt: skip
    types = pd.api.types
    numeric = all(types.is_integer_dtype(tiles[c]) for c in ("row", "col")) and all(
        types.is_numeric_dtype(tiles[c]) for c in ("score", "valid_fraction")
    )
    if not numeric or (len(tiles) and (tiles["row"].min() < 0 or tiles["col"].min() < 0)):
        raise InputError(f"{TILES_FILE} holds non-numeric or negative rows, columns or scores",
                         where=str(path), fix=again)  # fmt: skip
    if "scene_id" in tiles and len(tiles) and str(tiles["scene_id"].iloc[0]) != scene.id:
        raise InputError(
            f"these scores are for scene {tiles['scene_id'].iloc[0]}, not {scene.id}",
            where=str(path),
            fix="Give the image that was screened (unchanged since).",
        )
    base = _recorded_grid(tiles, scene, profile, str(path))
    rows, cols = tiles["row"].to_numpy(np.int64), tiles["col"].to_numpy(np.int64)
    if len(tiles) and (rows.max() >= base.n_rows or cols.max() >= base.n_cols):
        raise InputError(
            "the tiles do not fit this scene with the profile's tiling",
            where=str(path),
            fix="Use the profile the scene was screened with.",
        )
    grid = TileGrid(scene, base.tile_size, base.overlap, selection=rows * base.n_cols + cols)
    skip = {"tile_id", "row", "col", "col_off", "row_off", "width", "height", "score",
            "valid_fraction", "geometry", "scene_id", "tile_size", "overlap"}  # fmt: skip
    meta = {c: tiles[c].iloc[0] for c in tiles.columns if c not in skip and len(tiles)}
    return ScoreMap(
        grid,
        tiles["score"].to_numpy(np.float32),
        tiles["valid_fraction"].to_numpy(np.float32),
        None,
        {k: (v.item() if isinstance(v, np.generic) else v) for k, v in meta.items()},
    )


def _recorded_grid(
    tiles: pd.DataFrame, scene: Scene, profile: Profile | None, where: str
) -> TileGrid:
    """The full grid the tiles were cut from: tile size and overlap as recorded, else the
    profile's."""
    if {"tile_size", "overlap"} <= set(tiles.columns) and len(tiles):
        size, overlap = int(tiles["tile_size"].iloc[0]), int(tiles["overlap"].iloc[0])
        if profile is not None and (size, overlap) != (
            profile.tiling.tile_size,
            profile.tiling.overlap,
        ):
            raise InputError(
                f"these scores are on {size} px tiles overlapping by {overlap} px, but profile "
                f"{profile.name} cuts {profile.tiling.tile_size} px overlapping by "
                f"{profile.tiling.overlap} px",
                where=where,
                fix="Use the profile the scene was screened with.",
            )
        return TileGrid(scene, size, overlap)
    if profile is None:
        if len(tiles) == 0:  # nothing was screened: any grid will do
            return TileGrid(scene, 256, 0)
        raise InputError(
            "these scores do not record their tile size and overlap (an older screening)",
            where=where,
            fix="Give --profile with the profile the scene was screened with.",
        )
    return TileGrid(scene, profile.tiling.tile_size, profile.tiling.overlap)
