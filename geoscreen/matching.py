"""Matching geometries one-to-one: sites across runs, predictions to ground truth.

A neutral module (it imports no stage): :mod:`geoscreen.sites.match` matches a run's
sites to earlier ones, :mod:`geoscreen.evaluate.metrics` and detection training match
predictions to truth, all with these primitives.

Candidate pairs come from a shapely ``STRtree`` (no pairwise loops): by IoU of
the outlines, or by distance between centroids. One-to-one assignment is the
Hungarian algorithm (``scipy.optimize.linear_sum_assignment``) on each connected
group of candidate pairs; it first maximises the number of matched pairs, then
their total similarity. A group larger than :data:`MAX_DENSE` (rows x columns,
e.g. long chains of touching sites) is matched greedily instead, with a warning.
:func:`match_in_score_order` is the VOC-style greedy alternative used for AP.

Units: IoU is unitless (computed in the geometries' own coordinates: for EPSG:4326
sites of up to a few km the lon/lat distortion cancels in the ratio); distances
are metres between centroids (haversine) for georeferenced geometries, pixels for
pixel-space ones.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import shapely
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from geoscreen.errors import ConfigError

log = logging.getLogger(__name__)

EARTH_RADIUS_M = 6_371_008.8
METRES_PER_DEGREE = 111_320.0
Method = Literal["iou", "distance"]
# Largest candidate group (rows x columns) solved exactly; larger ones are matched greedily.
MAX_DENSE = 4_000_000


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


def match_hungarian(pred: np.ndarray, truth: np.ndarray, rule: MatchRule) -> Pairs:
    """One-to-one matching (most pairs, then most similar) of predictions to truth."""
    pairs = candidate_pairs(pred, truth, rule)
    return assign_one_to_one(pairs, len(pred), len(truth))


def match_in_score_order(
    pred: np.ndarray, scores: np.ndarray, truth: np.ndarray, rule: MatchRule
) -> np.ndarray:
    """VOC-style greedy matching: index of the matched truth per prediction, -1 if none.

    Predictions in descending score order (stable for ties) each take the most
    similar truth object not yet taken.
    """
    matched = np.full(len(pred), -1, dtype=np.int64)
    pairs = candidate_pairs(pred, truth, rule)
    if pairs.left.size == 0:
        return matched
    rank = np.empty(len(pred), dtype=np.int64)
    rank[np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")] = np.arange(len(pred))
    order = np.lexsort((pairs.right, -pairs.similarity, rank[pairs.left]))
    taken = np.zeros(len(truth), dtype=bool)
    for i, j in zip(pairs.left[order].tolist(), pairs.right[order].tolist(), strict=True):
        if matched[i] < 0 and not taken[j]:
            matched[i] = j
            taken[j] = True
    return matched
