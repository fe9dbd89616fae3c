"""Tile-level ground truth: which tiles of a grid hold a labelled object."""

from __future__ import annotations

import numpy as np

from geoscreen.imagery.tiling import TileGrid


def tiles_containing(grid: TileGrid, points_px: np.ndarray) -> np.ndarray:
    """For each tile of ``grid``, whether any point (N x 2, pixel col/row) lies inside it."""
    points = np.asarray(points_px, dtype=np.float64).reshape(-1, 2)
    truth = np.zeros(len(grid), dtype=bool)
    if points.size == 0 or len(grid) == 0:
        return truth
    c0 = (grid.cols * grid.stride).astype(np.float64)
    r0 = (grid.rows * grid.stride).astype(np.float64)
    size = grid.tile_size
    # Sort points by column so each tile only scans the points in its column range.
    order = np.argsort(points[:, 0])
    xs, ys = points[order, 0], points[order, 1]
    lo = np.searchsorted(xs, c0, side="left")
    hi = np.searchsorted(xs, c0 + size, side="left")
    for i in range(len(grid)):
        if hi[i] > lo[i]:
            y = ys[lo[i] : hi[i]]
            truth[i] = bool(np.any((y >= r0[i]) & (y < r0[i] + size)))
    return truth
