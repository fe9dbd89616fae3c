"""Matching sites across screening runs.

A new site matched to an existing one of the same profile adds a detection to it
(its id stays); an unmatched one becomes a new site. With a coverage history
(:mod:`geoscreen.sites.coverage`), a site whose place an earlier acquisition covered
without a detection is flagged ``new_since`` that acquisition. Candidate pairs and the
one-to-one assignment come from :mod:`geoscreen.matching` (shared with evaluation and
detection training).

Units: see :mod:`geoscreen.matching` (metres for georeferenced sites, pixels otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from geoscreen.errors import ConfigError
from geoscreen.matching import MatchRule, Pairs, assign_one_to_one, candidate_pairs
from geoscreen.sites.coverage import latest_gap
from geoscreen.sites.site import normalise

# Columns that describe the latest detection of a site (taken from the newer one).
DETECTION_COLUMNS = (
    "score_max", "score_mean", "tile_count", "area_m2", "scene_id", "acquired",
    "profile_version", "model_sha256", "run_id", "evidence_path", "area_unit", "scene_uri",
)  # fmt: skip


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
