"""Axis-aligned boxes on tiles and scenes: augmentation, clipping, overlap, pixel -> map
coordinates.

Boxes are ``(xmin, ymin, xmax, ymax)`` in pixel coordinates, x = column, y = row,
pixel edges at integers (pixel (0, 0) spans [0, 1] x [0, 1]), as labels,
Pascal VOC and torchvision use them.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import shapely
import torch
from affine import Affine
from rasterio.crs import CRS

from geoscreen.imagery.scene import Scene

BoxArray = np.ndarray


def dihedral_boxes(boxes: torch.Tensor, k: int, height: int, width: int) -> torch.Tensor:
    """Boxes on an ``height x width`` image moved as :func:`geoscreen.vision.augment.dihedral`
    moves the image (``k`` in 0..7: ``k % 4`` quarter turns, then a left-right flip if
    ``k >= 4``)."""
    x0, y0, x1, y1 = boxes.reshape(-1, 4).unbind(-1)
    h, w = float(height), float(width)
    for _ in range(k % 4):
        # torch.rot90(dims=(-2, -1)) sends the point (x, y) to (y, w - x); h and w swap.
        x0, y0, x1, y1 = y0, w - x1, y1, w - x0
        h, w = w, h
    if k % 8 >= 4:
        x0, x1 = w - x1, w - x0
    return torch.stack([x0, y0, x1, y1], dim=-1).reshape(-1, 4)


def clip_boxes(
    boxes: BoxArray,
    col_off: float,
    row_off: float,
    width: float,
    height: float,
    *,
    min_visible: float = 0.4,
    min_size_px: float = 2.0,
) -> tuple[BoxArray, np.ndarray]:
    """Boxes (scene pixels) as seen in a window: shifted to window pixels and clipped.

    A box is kept when at least ``min_visible`` of its area lies in the window and
    both clipped sides are at least ``min_size_px``; smaller remnants are dropped
    (a sliver of a crown at a chip edge teaches the model nothing useful).
    Returns (kept boxes in window coordinates, boolean keep mask over the input).
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    shifted = b - np.array([col_off, row_off, col_off, row_off])
    clipped = np.column_stack(
        [
            np.clip(shifted[:, 0], 0, width),
            np.clip(shifted[:, 1], 0, height),
            np.clip(shifted[:, 2], 0, width),
            np.clip(shifted[:, 3], 0, height),
        ]
    )
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    cw, ch = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    visible = np.divide(cw * ch, area, out=np.zeros_like(area), where=area > 0)
    keep = (cw >= min_size_px) & (ch >= min_size_px) & (visible >= min_visible)
    return clipped[keep], keep


def paired_iou(a: BoxArray, c: BoxArray) -> np.ndarray:
    """IoU of each box of ``a`` with the box in the same row of ``c`` (0 where both are
    empty); a box whose far side lies before its near one counts as empty."""
    iw = np.minimum(a[:, 2], c[:, 2]) - np.maximum(a[:, 0], c[:, 0])
    ih = np.minimum(a[:, 3], c[:, 3]) - np.maximum(a[:, 1], c[:, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_a, area_c = (
        np.clip(x[:, 2] - x[:, 0], 0, None) * np.clip(x[:, 3] - x[:, 1], 0, None) for x in (a, c)
    )
    union = area_a + area_c - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def boxes_to_polygons(boxes: BoxArray, transform: Affine | None = None) -> np.ndarray:
    """Pixel boxes as polygons through an affine ``transform`` (pixel space if None).

    Each box becomes its four corners mapped by the transform: a rectangle for a
    north-up grid, a parallelogram for a rotated one.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    t = transform or Affine.identity()
    cols = np.stack([b[:, 0], b[:, 2], b[:, 2], b[:, 0], b[:, 0]], axis=1)
    rows = np.stack([b[:, 1], b[:, 1], b[:, 3], b[:, 3], b[:, 1]], axis=1)
    xs = t.a * cols + t.b * rows + t.c
    ys = t.d * cols + t.e * rows + t.f
    return np.asarray(shapely.polygons(np.stack([xs, ys], axis=-1)))


def boxes_to_map(boxes: BoxArray, scene: Scene, crs: str | CRS = "EPSG:4326") -> gpd.GeoSeries:
    """Scene pixel boxes as polygons in ``crs``; pixel-space polygons (no CRS) when the
    scene has no georeference. Corners are reprojected exactly; edges stay straight,
    which is exact to well under a pixel for objects of a few hundred metres."""
    polygons = boxes_to_polygons(boxes, scene.transform if scene.georeferenced else None)
    if not scene.georeferenced:
        return gpd.GeoSeries(polygons)
    return gpd.GeoSeries(polygons, crs=scene.crs).to_crs(crs)


def box_areas_m2(boxes: BoxArray, pixel_size_m: tuple[float, float] | None) -> np.ndarray:
    """Box areas in square metres for a pixel size (x, y) in metres; NaN if unknown."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    area_px = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    if pixel_size_m is None:
        return np.full(len(b), np.nan)
    return area_px * pixel_size_m[0] * pixel_size_m[1]
