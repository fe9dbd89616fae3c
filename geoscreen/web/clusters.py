"""Grid clusters of candidate points for the map, aligned to the zoom level's tiles.

A cell is a quarter of a 256-pixel Web Mercator tile side at the zoom level (64 px),
in lon/lat degrees, on a grid anchored at 0, 0: panning keeps the same clusters. Each
cluster reports its mean position, count, mean score and count per review status.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from geoscreen.review.records import STATUSES
from geoscreen.review.spatial import BBox

CELLS_PER_TILE = 4
MAX_CELLS = 20_000
COLUMNS = ("lon", "lat", "count", "mean_score", *STATUSES)
_OFFSET = 2**30  # cell indexes are shifted to be positive before packing two in one int64


def cell_size(zoom: int, box: BBox | None = None) -> float:
    """Cell side in degrees; grown so that ``box`` spans at most :data:`MAX_CELLS` cells."""
    cell = 360.0 / (2 ** max(zoom, 0)) / CELLS_PER_TILE
    if box is not None:
        cells = (box.maxx - box.minx) / cell * (box.maxy - box.miny) / cell
        if cells > MAX_CELLS:  # a viewport far wider than the zoom level says
            cell *= math.ceil(math.sqrt(cells / MAX_CELLS))
    return cell


@dataclass(frozen=True)
class CellTable:
    """Sums per non-empty cell of a set of points."""

    cell: float
    gx: np.ndarray
    gy: np.ndarray
    count: np.ndarray
    lon_sum: np.ndarray
    lat_sum: np.ndarray
    score_sum: np.ndarray
    scored: np.ndarray
    by_status: np.ndarray  # (cells, statuses)

    @classmethod
    def build(
        cls, lon: np.ndarray, lat: np.ndarray, score: np.ndarray, status: np.ndarray, cell: float
    ) -> CellTable:
        """Aggregate points (``status`` as codes into :data:`STATUSES`) into cells."""
        gx = np.floor(lon / cell).astype(np.int64)
        gy = np.floor(lat / cell).astype(np.int64)
        keys, inverse = np.unique((gx + _OFFSET) << 32 | (gy + _OFFSET), return_inverse=True)
        size = keys.size
        valid = ~np.isnan(score)
        kinds = len(STATUSES)
        by_status = np.bincount(inverse * kinds + status, minlength=size * kinds)
        return cls(
            cell=cell,
            gx=(keys >> 32) - _OFFSET,
            gy=(keys & 0xFFFFFFFF) - _OFFSET,
            count=np.bincount(inverse, minlength=size),
            lon_sum=np.bincount(inverse, lon, size),
            lat_sum=np.bincount(inverse, lat, size),
            score_sum=np.bincount(inverse[valid], score[valid], size),
            scored=np.bincount(inverse[valid], minlength=size),
            by_status=by_status.reshape(size, kinds),
        )

    def within(self, box: BBox | None = None) -> tuple[int, list[list[float]]]:
        """Candidates in, and rows (see :data:`COLUMNS`) of, the cells touching ``box``."""
        chosen: slice | np.ndarray = slice(None)
        if box is not None:
            x0, x1 = math.floor(box.minx / self.cell), math.floor(box.maxx / self.cell)
            y0, y1 = math.floor(box.miny / self.cell), math.floor(box.maxy / self.cell)
            chosen = np.flatnonzero(
                (self.gx >= x0) & (self.gx <= x1) & (self.gy >= y0) & (self.gy <= y1)
            )
        count = self.count[chosen]
        n = count.astype(np.float64)
        table = np.column_stack(
            [
                np.round(self.lon_sum[chosen] / n, 6),
                np.round(self.lat_sum[chosen] / n, 6),
                n,
                np.round(self.score_sum[chosen] / np.maximum(self.scored[chosen], 1), 4),
                self.by_status[chosen],
            ]
        ).tolist()
        for row in table:
            row[2] = int(row[2])
            row[4:] = [int(v) for v in row[4:]]
        return int(count.sum()), table
