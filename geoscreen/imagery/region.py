"""Where and on what a model was trained, to warn when it screens something else.

A :class:`TrainingRegion` is the union of the training scenes' outlines in EPSG:4326
and per-band statistics of their valid pixels (read decimated: at most ``max_side``
pixels a side per scene). A model card keeps it as :meth:`TrainingRegion.to_dict`;
before screening, :func:`region_warnings` compares a scene with it: a scene farther
than ``far_km`` from the footprint, or a band whose mean lies more than ``max_shift``
training standard deviations from the training mean, gets a warning. Warnings, never
refusals: the model may work there, it is only unmeasured. This module reads imagery
only, so the vision and batch stages can both use it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from pyproj import Geod
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry
from shapely.ops import nearest_points

from geoscreen.errors import ConfigError
from geoscreen.imagery.masks import valid_from_data
from geoscreen.imagery.scene import Scene

FAR_KM = 100.0
MAX_SHIFT = 3.0
MAX_SIDE = 512
_GEOD = Geod(ellps="WGS84")


@dataclass(frozen=True)
class BandStats:
    """Mean and standard deviation of one band's valid pixels, and how many there were."""

    mean: float
    std: float
    count: int


@dataclass(frozen=True)
class TrainingRegion:
    """Training footprint (EPSG:4326; ``None`` when no scene was georeferenced) and
    per-band statistics, by band name."""

    footprint: BaseGeometry | None
    stats: dict[str, BandStats]

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML-ready (the footprint as GeoJSON)."""
        return {
            "footprint": None if self.footprint is None else _geojson(self.footprint),
            "crs": "EPSG:4326",
            "band_stats": {b: vars(s).copy() for b, s in self.stats.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingRegion:
        """Read :meth:`to_dict` back; a malformed record is a :class:`ConfigError`."""
        try:
            geom = data.get("footprint")
            stats = {
                str(b): BandStats(float(s["mean"]), float(s["std"]), int(s["count"]))
                for b, s in dict(data.get("band_stats") or {}).items()
            }
            return cls(None if geom is None else shape(geom), stats)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(
                f"the model card's training region is malformed ({exc})",
                fix="Train the model again to record it.",
            ) from exc


def band_stats(scene: Scene, *, max_side: int = MAX_SIDE) -> dict[str, BandStats]:
    """Statistics of every band's valid pixels, read decimated to at most ``max_side``."""
    scale = min(1.0, max_side / max(scene.width, scene.height))
    out_h, out_w = max(1, round(scene.height * scale)), max(1, round(scene.width * scale))
    with scene.open() as src:
        data = src.read(out_shape=(scene.count, out_h, out_w))
    valid = valid_from_data(data, scene.nodata)
    out = {}
    for name, band in zip(scene.band_names, data.astype(np.float64), strict=True):
        values = band[valid & np.isfinite(band)]
        if values.size:
            out[name] = BandStats(float(values.mean()), float(values.std()), int(values.size))
    return out


def training_region(scenes: Sequence[Scene], *, max_side: int = MAX_SIDE) -> TrainingRegion:
    """The region of ``scenes``: union of their outlines, pooled band statistics."""
    outlines = [s.footprint for s in scenes if s.footprint is not None]
    footprint = shapely.union_all(outlines) if outlines else None
    pooled: dict[str, list[BandStats]] = {}
    for scene in scenes:
        for name, stats in band_stats(scene, max_side=max_side).items():
            pooled.setdefault(name, []).append(stats)
    return TrainingRegion(footprint, {n: _pool(parts) for n, parts in pooled.items()})


def distance_km(a: BaseGeometry, b: BaseGeometry) -> float:
    """Geodesic distance between the nearest points of two EPSG:4326 geometries (0 when
    they touch)."""
    if a.intersects(b):
        return 0.0
    p, q = nearest_points(a, b)
    return float(_GEOD.inv(p.x, p.y, q.x, q.y)[2]) / 1000.0


def region_warnings(
    region: TrainingRegion,
    scene: Scene,
    *,
    far_km: float = FAR_KM,
    max_shift: float = MAX_SHIFT,
    stats: Mapping[str, BandStats] | None = None,
) -> list[str]:
    """Why ``scene`` is unlike the training data (empty: nothing found)."""
    if far_km <= 0 or max_shift <= 0:
        raise ConfigError(
            "far_km and max_shift must be positive",
            fix="Use e.g. far_km=500 and max_shift=3 (the defaults).",
        )
    found = []
    outline = scene.footprint
    if region.footprint is not None and outline is not None:
        km = distance_km(outline, region.footprint)
        if km > far_km:
            found.append(
                f"{scene.uri}: {km:,.0f} km from where the model was trained "
                f"(more than {far_km:g} km): its scores there are unmeasured"
            )
    seen = band_stats(scene) if stats is None else stats
    for name, train in region.stats.items():
        now = seen.get(name)
        if now is None or not math.isfinite(train.std):
            continue
        shift = abs(now.mean - train.mean) / max(train.std, 1e-9)
        if shift > max_shift:
            found.append(
                f"{scene.uri}: band {name} averages {now.mean:.4g}, {shift:.1f} training "
                f"standard deviations from the training mean {train.mean:.4g}"
            )
    return found


def region_record(scenes: Sequence[Scene]) -> dict[str, Any]:
    """What a model card keeps as its ``region`` (see :meth:`TrainingRegion.to_dict`)."""
    return training_region(scenes).to_dict()


def region_from_card(card: Mapping[str, Any]) -> TrainingRegion | None:
    """The training region a model card records (``None``: an older card without one)."""
    record = card.get("region")
    return None if record is None else TrainingRegion.from_dict(record)


def card_warnings(card: Mapping[str, Any], scene: Scene) -> list[str]:
    """:func:`region_warnings` for a model card's region; none for a card without one."""
    region = region_from_card(card)
    return [] if region is None else region_warnings(region, scene)


def _geojson(geom: BaseGeometry) -> dict[str, Any]:
    """GeoJSON of plain lists and floats (YAML-safe, unlike shapely's tuples)."""
    out: dict[str, Any] = json.loads(shapely.to_geojson(geom))
    return out


def _pool(parts: list[BandStats]) -> BandStats:
    """Mean and standard deviation of the union of samples."""
    n = sum(p.count for p in parts)
    mean = sum(p.mean * p.count for p in parts) / n
    var = sum(p.count * (p.std**2 + (p.mean - mean) ** 2) for p in parts) / n
    return BandStats(mean, math.sqrt(var), n)
