"""Matching sites: across screening runs, and (through the same helpers) to ground truth.

Candidate pairs come from a shapely ``STRtree`` (no pairwise loops): by IoU of
the outlines, or by distance between centroids. One-to-one assignment is the
Hungarian algorithm (``scipy.optimize.linear_sum_assignment``) on each connected
group of candidate pairs; it first maximises the number of matched pairs, then
their total similarity. A group larger than :data:`MAX_DENSE` (rows x columns,
e.g. long chains of touching sites) is matched greedily instead, with a warning.

Across runs (:func:`update_sites`): a new site matched to an existing one of the
same profile adds a detection to it (its id stays); an unmatched one becomes a
new site. With a coverage history (:mod:`geoscreen.sites.coverage`), a site whose
place an earlier acquisition covered without a detection is flagged
``new_since`` that acquisition.

Units: IoU is unitless (computed in the sites' own coordinates: for EPSG:4326
sites of up to a few km the lon/lat distortion cancels in the ratio); distances
are metres between centroids (haversine) for georeferenced sites, pixels for
pixel-space sites.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from geoscreen.errors import ConfigError
from geoscreen.sites.coverage import latest_gap
from geoscreen.sites.site import normalise

log = logging.getLogger(__name__)

EARTH_RADIUS_M = 6_371_008.8
METRES_PER_DEGREE = 111_320.0
Method = Literal["iou", "distance"]
# Largest candidate group (rows x columns) solved exactly; larger ones are matched greedily.
MAX_DENSE = 4_000_000
# Columns that describe the latest detection of a site (taken from the newer one).
DETECTION_COLUMNS = (
    "score_max", "score_mean", "tile_count", "area_m2", "scene_id", "acquired",
    "profile_version", "model_sha256", "run_id", "evidence_path", "area_unit", "scene_uri",
)  # fmt: skip


@dataclass(frozen=True)
class MatchRule:
    """When two sites are the same place: IoU at least ``min_iou``, or centroids within
    ``max_distance`` (metres; pixels in pixel space)."""

    method: Method = "iou"
    min_iou: float = 0.2
    max_distance: float | None = None

    def __post_init__(self) -> None:
        if self.method == "iou" and not 0.0 < self.min_iou <= 1.0:
            raise ConfigError(
                f"IoU threshold must be in (0, 1], got {self.min_iou}",
                fix="Use e.g. 0.3 (outlines of one site overlap that much across runs).",
            )
        if self.method == "distance" and (self.max_distance is None or self.max_distance < 0):
            raise ConfigError(
                "centroid matching needs a distance of at least 0",
                fix="Give --distance in metres (pixels for images without georeference).",
            )


@dataclass(frozen=True)
class Pairs:
    """Candidate pairs ``left[i]`` - ``right[j]`` and a similarity in (0, 1] (higher is closer)."""

    left: np.ndarray
    right: np.ndarray
    similarity: np.ndarray

    @classmethod
    def empty(cls) -> Pairs:
        z = np.zeros(0, dtype=np.int64)
        return cls(z, z.copy(), np.zeros(0))


def candidate_pairs(
    left: np.ndarray, right: np.ndarray, rule: MatchRule, geographic: bool = False
) -> Pairs:
    """Every pair of geometries that ``rule`` accepts, with its similarity.

    IoU pairs: the similarity is the IoU. Distance pairs: ``1 - d / (max_distance + 1)``,
    in (0, 1] and decreasing with distance. ``geographic``: coordinates are lon/lat
    degrees and distances are measured in metres.
    """
    left = np.asarray(left, dtype=object)
    right = np.asarray(right, dtype=object)
    if left.size == 0 or right.size == 0:
        return Pairs.empty()
    if rule.method == "iou":
        return _iou_pairs(left, right, rule.min_iou)
    assert rule.max_distance is not None
    return _distance_pairs(left, right, rule.max_distance, geographic)


def _iou_pairs(left: np.ndarray, right: np.ndarray, min_iou: float) -> Pairs:
    points = np.isin(shapely.get_type_id(np.r_[left, right]), (0, 4))
    if points.any():
        raise ConfigError(
            "IoU matching needs areas (polygons or boxes) but some geometries are points",
            fix="Match points by centre distance instead (--distance).",
        )
    tree = shapely.STRtree(right)
    i, j = tree.query(left, predicate="intersects")
    inter = shapely.area(shapely.intersection(left[i], right[j]))
    union = shapely.area(left[i]) + shapely.area(right[j]) - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    keep = iou >= min_iou - 1e-12
    return Pairs(i[keep].astype(np.int64), j[keep].astype(np.int64), iou[keep])


def _distance_pairs(left: np.ndarray, right: np.ndarray, limit: float, geographic: bool) -> Pairs:
    a = shapely.centroid(left)
    b = shapely.centroid(right)
    if geographic:
        lat = np.abs(shapely.get_y(np.r_[a, b]))
        cos = np.cos(np.radians(np.minimum(lat.max(), 89.0)))
        radius = limit / (METRES_PER_DEGREE * cos) * 1.01 + 1e-9
    else:
        radius = limit
    i, j = shapely.STRtree(b).query(a, predicate="dwithin", distance=radius)
    if geographic:
        d = haversine_m(shapely.get_x(a[i]), shapely.get_y(a[i]),
                        shapely.get_x(b[j]), shapely.get_y(b[j]))  # fmt: skip
    else:
        d = shapely.distance(a[i], b[j])
    keep = d <= limit + 1e-9
    similarity = 1.0 - d[keep] / (limit + 1.0) if limit > 0 else np.ones(int(keep.sum()))
    return Pairs(i[keep].astype(np.int64), j[keep].astype(np.int64), similarity)


def haversine_m(
    lon1: np.ndarray, lat1: np.ndarray, lon2: np.ndarray, lat2: np.ndarray
) -> np.ndarray:
    """Great-circle distance in metres between lon/lat degree arrays."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(np.asarray(lon2) - np.asarray(lon1))
    h = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return np.asarray(2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(h, 0, 1))))


def assign_one_to_one(pairs: Pairs, n_left: int, n_right: int) -> Pairs:
    """The subset of ``pairs`` forming a one-to-one matching: most pairs, then most similar.

    Solved exactly per connected group of pairs (Hungarian algorithm); a group of
    one pair is taken as is. Ties resolve deterministically (lowest indexes first).
    """
    if pairs.left.size == 0:
        return Pairs.empty()
    left, right, sim = pairs.left, pairs.right, pairs.similarity
    n = n_left + n_right
    graph = coo_matrix((np.ones(left.size), (left, right + n_left)), shape=(n, n))
    _k, labels = connected_components(graph, directed=False)
    group = labels[left]
    sizes = np.bincount(group, minlength=labels.max() + 1)
    lone = sizes[group] == 1
    chosen = [np.flatnonzero(lone)]
    rest = np.flatnonzero(~lone)
    order = rest[np.lexsort((rest, group[rest]))]
    for members in np.split(order, np.flatnonzero(np.diff(group[order])) + 1) if order.size else []:
        rows, row_of = np.unique(left[members], return_inverse=True)
        cols, col_of = np.unique(right[members], return_inverse=True)
        if rows.size * cols.size > MAX_DENSE:
            log.warning("a group of %d x %d candidate matches is matched greedily "
                        "(too large for an exact assignment)", rows.size, cols.size)  # fmt: skip
            chosen.append(_greedy(members, left, right, sim))
            continue
        # Each pair scores more than any number of extra similarity: count first.
        weight = np.zeros((rows.size, cols.size))
        weight[row_of, col_of] = (min(rows.size, cols.size) + 1) + sim[members]
        edge = np.full((rows.size, cols.size), -1, dtype=np.int64)
        edge[row_of, col_of] = members
        r, c = linear_sum_assignment(weight, maximize=True)
        picked = edge[r, c]
        chosen.append(picked[picked >= 0])
    keep = np.sort(np.concatenate(chosen))
    return Pairs(left[keep], right[keep], sim[keep])


def _greedy(
    members: np.ndarray, left: np.ndarray, right: np.ndarray, sim: np.ndarray
) -> np.ndarray:
    """Most similar pairs first, each side used once (for groups too large to solve exactly)."""
    order = members[np.lexsort((members, -sim[members]))]
    used_l: set[int] = set()
    used_r: set[int] = set()
    keep = []
    for k, i, j in zip(order.tolist(), left[order].tolist(), right[order].tolist(), strict=True):
        if i not in used_l and j not in used_r:
            used_l.add(i)
            used_r.add(j)
            keep.append(k)
    return np.asarray(keep, dtype=np.int64)


@dataclass(frozen=True)
class SiteUpdate:
    """Result of adding one run's sites to a site table."""

    sites: gpd.GeoDataFrame
    reseen: list[str]
    added: list[str]


def update_sites(
    existing: gpd.GeoDataFrame | None,
    new: gpd.GeoDataFrame,
    rule: MatchRule | None = None,
    coverage: gpd.GeoDataFrame | None = None,
) -> SiteUpdate:
    """Merge ``new`` sites (one run) into ``existing`` ones; see the module doc.

    Matched sites keep their id, gain the new detections, widen ``first_seen`` /
    ``last_seen``, and take the geometry, scores and evidence of whichever detection
    is later. ``new_since`` is (re)computed for every matched or added site from
    ``coverage`` (earlier runs only: add the current run's coverage afterwards).
    """
    rule = rule or MatchRule()
    new = normalise(new).reset_index(drop=True)
    if existing is None or len(existing) == 0:
        base = new.iloc[:0]
    else:
        base = normalise(existing).reset_index(drop=True)
        if (base.crs is None) != (new.crs is None):
            raise ConfigError(
                "cannot match pixel-space sites with georeferenced ones",
                fix="Keep sites of images without georeference in their own site file.",
            )
        if base.crs is not None and base.crs != new.crs:
            base = base.to_crs(new.crs)
    geographic = new.crs is not None and new.crs.is_geographic
    pairs = candidate_pairs(new.geometry.values, base.geometry.values, rule, geographic)
    same = (
        new["profile"].to_numpy(object)[pairs.left] == base["profile"].to_numpy(object)[pairs.right]
    )
    pairs = Pairs(pairs.left[same], pairs.right[same], pairs.similarity[same])
    matched = assign_one_to_one(pairs, len(new), len(base))
    merged = base.copy()
    _absorb(merged, new, matched.right, matched.left)
    unmatched = np.setdiff1d(np.arange(len(new)), matched.left)
    added = new.iloc[unmatched]
    frames = [f for f in (merged, added) if len(f)]
    combined = pd.concat(frames, ignore_index=True) if frames else new.iloc[:0]
    result = gpd.GeoDataFrame(combined, geometry=new.geometry.name, crs=new.crs)
    touched = np.r_[matched.right, len(merged) + np.arange(len(added))].astype(np.int64)
    if touched.size:
        points = gpd.GeoSeries(
            shapely.point_on_surface(result.geometry.values[touched]), crs=result.crs
        )
        gaps = latest_gap(
            points,
            result["profile"].to_numpy(object)[touched],
            result["first_seen"].iloc[touched].reset_index(drop=True),
            coverage,
        )
        column = result["new_since"].to_numpy(dtype="datetime64[ms]").copy()
        column[touched] = gaps.to_numpy(dtype="datetime64[ms]")
        result["new_since"] = pd.to_datetime(column).tz_localize("UTC")
    reseen = base["site_id"].iloc[matched.right].tolist()
    return SiteUpdate(normalise(result), reseen, added["site_id"].tolist())


def _absorb(
    base: gpd.GeoDataFrame, new: gpd.GeoDataFrame, into: np.ndarray, src: np.ndarray
) -> None:
    """Add the detections of ``new.iloc[src]`` to ``base.iloc[into]`` (in place)."""
    if into.size == 0:
        return
    old, fresh = base.iloc[into], new.iloc[src]
    newer = (fresh["last_seen"].to_numpy() >= old["last_seen"].to_numpy()) | old[
        "last_seen"
    ].isna().to_numpy()
    rows = base.index[into]
    # Extracting the same run of the same scene again is not another detection.
    repeat = (old["run_id"].to_numpy(object) == fresh["run_id"].to_numpy(object)) & (
        old["scene_id"].to_numpy(object) == fresh["scene_id"].to_numpy(object)
    )
    added = np.where(repeat, 0, fresh["detections"].to_numpy())
    base.loc[rows, "detections"] = old["detections"].to_numpy() + added
    for col, pick in (("first_seen", np.minimum), ("last_seen", np.maximum)):
        a = old[col].to_numpy(dtype="datetime64[ms]")
        b = fresh[col].to_numpy(dtype="datetime64[ms]")
        both = np.where(np.isnat(a), b, np.where(np.isnat(b), a, pick(a, b)))
        base.loc[rows, col] = pd.to_datetime(both).tz_localize("UTC")
    take = rows[newer]
    if take.size:
        for col in (*DETECTION_COLUMNS, base.geometry.name):
            base.loc[take, col] = fresh[col].to_numpy()[newer]
