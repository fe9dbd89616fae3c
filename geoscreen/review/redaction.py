"""Redaction of candidate locations before they leave the organisation.

* ``internal``: exact outlines.
* ``partner``: donut geomasking. Each site becomes one point moved from its
  representative point in a random direction by a random distance between ``min_m``
  and ``max_m`` metres along the ellipsoid (WGS 84 geodesic), uniform over the ring's
  area, never closer than ``min_m``. The direction and distance are drawn from an
  HMAC of the candidate and the ring under a secret kept in the store
  (:func:`stable_donut`): every export of a candidate with the same ring shows the
  same point, so averaging many exports gets no closer than one. Fresh draws per
  export (:func:`donut_mask`) would average back towards the true place.
* ``public``: only counts, per square cell of ``grid_m`` metres in an equal-area grid
  (EPSG:6933) or per given polygon; a cell or polygon with fewer than ``min_count``
  sites shows no count.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Literal

import geopandas as gpd
import numpy as np
import shapely
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pyproj import Geod

Redaction = Literal["internal", "partner", "public"]
REDACTIONS: tuple[Redaction, ...] = ("internal", "partner", "public")
EQUAL_AREA_CRS = "EPSG:6933"
_GEOD = Geod(ellps="WGS84")


class RedactionConfig(BaseModel):
    """How much of a location an export shows."""

    model_config = ConfigDict(extra="forbid")

    level: Redaction = "internal"
    min_m: float = Field(500.0, ge=0)
    max_m: float = Field(2000.0, gt=0)
    grid_m: float = Field(10_000.0, gt=0)
    min_count: int = Field(3, ge=1)

    @model_validator(mode="after")
    def _ring(self) -> RedactionConfig:
        if self.max_m <= self.min_m:
            raise ValueError(f"max_m ({self.max_m:g}) must be above min_m ({self.min_m:g})")
        return self

    def describe(self) -> dict[str, object]:
        """The settings that matter for this level (for the audit log and the file)."""
        if self.level == "partner":
            return {"level": self.level, "min_m": self.min_m, "max_m": self.max_m}
        if self.level == "public":
            return {"level": self.level, "grid_m": self.grid_m, "min_count": self.min_count}
        return {"level": self.level}


def donut_mask(
    lon: np.ndarray, lat: np.ndarray, *, min_m: float, max_m: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Displaced ``(lon, lat)`` and the distance moved (metres) for each point (fresh draws)."""
    n = len(lon)
    return _displace(lon, lat, rng.random(n), rng.random(n), min_m=min_m, max_m=max_m)


def stable_donut(
    lon: np.ndarray,
    lat: np.ndarray,
    keys: Sequence[str],
    *,
    secret: bytes,
    min_m: float,
    max_m: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Like :func:`donut_mask`, but each point's draws come from ``HMAC(secret, key, ring)``.

    The same key and ring always give the same point; without the secret the draws
    cannot be told from random ones. The ring is part of the message: were only the
    distance rescaled, two exports with different rings would put two points on one
    ray from the true place and give it away.
    """
    if not secret:
        raise ValueError("a geomask secret must not be empty")
    draws = np.array(
        [_unit_pair(secret, f"geomask:v1:{key}:{min_m!r}:{max_m!r}") for key in keys],
        dtype=np.float64,
    ).reshape(len(keys), 2)
    return _displace(lon, lat, draws[:, 0], draws[:, 1], min_m=min_m, max_m=max_m)


def _unit_pair(secret: bytes, message: str) -> tuple[float, float]:
    """Two independent numbers in [0, 1) from one HMAC-SHA256 (53 bits each)."""
    digest = hmac.new(secret, message.encode("utf-8"), hashlib.sha256).digest()
    first, second = (int.from_bytes(digest[i : i + 8], "big") >> 11 for i in (0, 8))
    return first / 2.0**53, second / 2.0**53


def _displace(
    lon: np.ndarray,
    lat: np.ndarray,
    direction: np.ndarray,
    radius: np.ndarray,
    *,
    min_m: float,
    max_m: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Move each point by ``direction`` (share of a turn) and ``radius`` (share of the ring)."""
    azimuth = np.asarray(direction, float) * 360.0
    # Uniform over the ring's area: r^2 uniform between min^2 and max^2.
    distance = np.sqrt(min_m**2 + np.asarray(radius, float) * (max_m**2 - min_m**2))
    distance = np.clip(distance, min_m, max_m)
    new_lon, new_lat, _ = _GEOD.fwd(
        np.asarray(lon, float), np.asarray(lat, float), azimuth, distance
    )
    return np.asarray(new_lon), np.asarray(new_lat), distance


def geodesic_distance(
    lon1: np.ndarray, lat1: np.ndarray, lon2: np.ndarray, lat2: np.ndarray
) -> np.ndarray:
    """Distances in metres between point pairs (WGS 84)."""
    _, _, dist = _GEOD.inv(lon1, lat1, lon2, lat2)
    return np.asarray(dist)


def count_grid(points: gpd.GeoSeries, *, grid_m: float, min_count: int) -> gpd.GeoDataFrame:
    """Counts per equal-area grid cell; cells under ``min_count`` are left out."""
    columns: dict[str, list[object]] = {"cell": [], "count": []}
    if len(points) == 0:
        return gpd.GeoDataFrame(columns, geometry=[], crs="EPSG:4326")
    projected = points.to_crs(EQUAL_AREA_CRS)
    ix = np.floor(projected.x.to_numpy() / grid_m).astype(np.int64)
    iy = np.floor(projected.y.to_numpy() / grid_m).astype(np.int64)
    cells, counts = np.unique(np.stack([ix, iy], axis=1), axis=0, return_counts=True)
    keep = counts >= min_count
    cells, counts = cells[keep], counts[keep]
    boxes = shapely.box(
        cells[:, 0] * grid_m,
        cells[:, 1] * grid_m,
        (cells[:, 0] + 1) * grid_m,
        (cells[:, 1] + 1) * grid_m,
    )
    frame = gpd.GeoDataFrame(
        {"cell": [f"{x}_{y}" for x, y in cells], "count": counts.astype(int)},
        geometry=boxes,
        crs=EQUAL_AREA_CRS,
    )
    return frame.to_crs("EPSG:4326")


def count_regions(
    points: gpd.GeoSeries, regions: gpd.GeoDataFrame, *, min_count: int
) -> gpd.GeoDataFrame:
    """Counts per given polygon; a count under ``min_count`` is shown as missing."""
    zones = regions.to_crs("EPSG:4326") if regions.crs else regions.set_crs("EPSG:4326")
    zones = zones.reset_index(drop=True)
    tree = shapely.STRtree(zones.geometry.values)
    counts = np.zeros(len(zones), dtype=int)
    if len(points):
        _, zone_idx = tree.query(points.values, predicate="intersects")
        counts += np.bincount(zone_idx, minlength=len(zones))
    out = zones.copy()
    out["count"] = [int(c) if c >= min_count else None for c in counts]
    out["suppressed"] = counts < min_count
    return out
