"""Bounding-box queries through each database's spatial index.

SQLite: the ``candidates_rtree`` R*Tree virtual table (kept in step by triggers); its
32-bit float boxes are rounded outwards, so the exact columns refine the result.
PostgreSQL: ``candidates.geom`` (generated from the WKB) with a GiST index and ``&&``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import shapely
from shapely.geometry.base import BaseGeometry
from sqlalchemy import Column, Float, Integer, MetaData, Select, Table, and_, func, literal_column

from geoscreen.errors import ConfigError
from geoscreen.review.schema import candidates

_rtree_md = MetaData()
rtree = Table(
    "candidates_rtree",
    _rtree_md,
    Column("id", Integer, primary_key=True),
    Column("minx", Float),
    Column("maxx", Float),
    Column("miny", Float),
    Column("maxy", Float),
)


@dataclass(frozen=True)
class BBox:
    """A lon/lat box (EPSG:4326); ``minx <= maxx`` (split boxes across the antimeridian)."""

    minx: float
    miny: float
    maxx: float
    maxy: float

    def __post_init__(self) -> None:
        values = (self.minx, self.miny, self.maxx, self.maxy)
        if not all(math.isfinite(v) for v in values):
            raise ConfigError(
                f"bounding box has a non-finite value: {values}",
                fix="Give four numbers in degrees: MINLON,MINLAT,MAXLON,MAXLAT.",
            )
        if self.minx > self.maxx or self.miny > self.maxy:
            raise ConfigError(
                f"bounding box {values} has min above max",
                fix="Give MINLON,MINLAT,MAXLON,MAXLAT (split boxes crossing 180 degrees).",
            )

    @classmethod
    def parse(cls, text: str) -> BBox:
        """``"minlon,minlat,maxlon,maxlat"``."""
        parts = text.replace(" ", "").split(",")
        try:
            values = [float(p) for p in parts]
        except ValueError:
            values = []
        if len(values) != 4:
            raise ConfigError(
                f"not a bounding box: {text!r}", fix="Give MINLON,MINLAT,MAXLON,MAXLAT."
            )
        return cls(*values)

    @property
    def polygon(self) -> BaseGeometry:
        """The box as a polygon."""
        return shapely.box(self.minx, self.miny, self.maxx, self.maxy)


def filter_bbox(query: Select[Any], box: BBox, dialect: str) -> Select[Any]:
    """Restrict a query over ``candidates`` to rows whose box overlaps ``box``."""
    exact = and_(
        candidates.c.maxx >= box.minx,
        candidates.c.minx <= box.maxx,
        candidates.c.maxy >= box.miny,
        candidates.c.miny <= box.maxy,
    )
    if dialect == "postgresql":
        envelope = func.ST_MakeEnvelope(box.minx, box.miny, box.maxx, box.maxy, 4326)
        return query.where(literal_column("candidates.geom").op("&&")(envelope))
    hits = and_(
        rtree.c.maxx >= box.minx,
        rtree.c.minx <= box.maxx,
        rtree.c.maxy >= box.miny,
        rtree.c.miny <= box.maxy,
    )
    return query.join(rtree, rtree.c.id == candidates.c.id).where(hits, exact)
