"""Tile grids: regular windows over a scene's working grid, computed lazily.

A :class:`TileGrid` holds only the (row, col) indexes of its tiles, so a grid over
a 50,000 x 50,000 scene costs a few hundred kilobytes. Tiles at the right and
bottom edges keep the full tile size (readers pad them and mark the padding
invalid); tiles outside an AOI or holding no valid pixel can be dropped.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import shapely
from rasterio.windows import Window
from shapely.geometry.base import BaseGeometry
from tqdm import tqdm

from geoscreen.errors import ConfigError, InputError
from geoscreen.fileio import atomic_write
from geoscreen.imagery.masks import read_valid_mask
from geoscreen.imagery.scene import Scene

if TYPE_CHECKING:
    import geopandas as gpd

MIN_TILE_SIZE = 8
MAX_TILE_SIZE = 4096  # a 4096 px tile of 13 float32 bands is 0.9 GB; larger is a typo


@dataclass(frozen=True)
class Tile:
    """One tile: grid position and its window on the scene's working grid.

    ``window`` always has the full tile size and may reach past the scene's right
    or bottom edge; ``read_window`` is the part inside the scene.
    """

    row: int
    col: int
    window: Window
    read_window: Window

    @property
    def id(self) -> str:
        """Stable id within a grid: ``r<row>c<col>``."""
        return f"r{self.row}c{self.col}"


class TileGrid:
    """Regular tiles of ``tile_size`` pixels overlapping by ``overlap`` pixels."""

    def __init__(
        self,
        scene: Scene,
        tile_size: int = 256,
        overlap: int = 0,
        *,
        selection: np.ndarray | None = None,
    ) -> None:
        if not MIN_TILE_SIZE <= tile_size <= MAX_TILE_SIZE:
            raise ConfigError(
                f"tile size must be {MIN_TILE_SIZE} to {MAX_TILE_SIZE} pixels, got {tile_size}",
                fix="Choose a tile that holds the feature with some context (e.g. 64-512 px).",
            )
        if not 0 <= overlap < tile_size:
            raise ConfigError(
                f"overlap must be between 0 and tile size - 1 ({tile_size - 1}), got {overlap}",
                fix="Use an overlap smaller than the tile (e.g. an eighth of it), or 0.",
            )
        self.scene = scene
        self.tile_size = tile_size
        self.overlap = overlap
        self.stride = tile_size - overlap
        self.n_rows = _count(scene.height, tile_size, self.stride)
        self.n_cols = _count(scene.width, tile_size, self.stride)
        if selection is None:
            selection = np.arange(self.n_rows * self.n_cols, dtype=np.int64)
        self._flat = np.asarray(selection, dtype=np.int64)

    # -- sequence ---------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._flat.size)

    def __iter__(self) -> Iterator[Tile]:
        for i in range(len(self)):
            yield self[i]

    def __getitem__(self, i: int) -> Tile:
        row, col = divmod(int(self._flat[i]), self.n_cols)
        return self.tile_at(row, col)

    def __repr__(self) -> str:
        return (
            f"TileGrid(scene={self.scene.id}, tile_size={self.tile_size}, overlap={self.overlap}, "
            f"tiles={len(self)} of {self.n_rows}x{self.n_cols})"
        )

    def tile_at(self, row: int, col: int) -> Tile:
        """The tile at grid position (row, col)."""
        size, stride = self.tile_size, self.stride
        r0, c0 = row * stride, col * stride
        window = Window(c0, r0, size, size)
        read = Window(c0, r0, min(size, self.scene.width - c0), min(size, self.scene.height - r0))
        return Tile(row=row, col=col, window=window, read_window=read)

    def flat_indexes(self) -> np.ndarray:
        """Flat index (``row * n_cols + col``) of each selected tile; a copy."""
        return self._flat.copy()

    @property
    def rows(self) -> np.ndarray:
        """Grid row of each selected tile."""
        return self._flat // self.n_cols

    @property
    def cols(self) -> np.ndarray:
        """Grid column of each selected tile."""
        return self._flat % self.n_cols

    def _subset(self, keep: np.ndarray) -> TileGrid:
        return TileGrid(self.scene, self.tile_size, self.overlap, selection=self._flat[keep])

    # -- geometry ---------------------------------------------------------------------
    def geometries(self, clip_to_scene: bool = True) -> np.ndarray:
        """Tile outlines as shapely polygons in the scene's CRS (pixel space if none)."""
        size = self.tile_size
        c0 = (self.cols * self.stride).astype(float)
        r0 = (self.rows * self.stride).astype(float)
        c1, r1 = c0 + size, r0 + size
        if clip_to_scene:
            c1 = np.minimum(c1, self.scene.width)
            r1 = np.minimum(r1, self.scene.height)
        t = self.scene.transform
        corners = np.stack(
            [np.stack([t.a * c + t.b * r + t.c, t.d * c + t.e * r + t.f], axis=-1)
             for c, r in ((c0, r0), (c1, r0), (c1, r1), (c0, r1))],
            axis=1,
        )  # fmt: skip
        return np.asarray(shapely.polygons(corners))

    def within(self, aoi: BaseGeometry) -> TileGrid:
        """Only tiles that intersect ``aoi`` (a geometry in the scene's CRS)."""
        if self.scene.crs is None:
            raise InputError(
                "an AOI needs a georeferenced scene, but this one has no CRS",
                where=self.scene.uri,
                fix="Assign the raster's CRS (gdal_edit.py -a_srs EPSG:XXXX FILE) or drop --aoi.",
            )
        shapely.prepare(aoi)
        keep = shapely.intersects(self.geometries(), aoi)
        if not keep.any():
            raise InputError(
                "the AOI does not overlap the scene",
                where=self.scene.uri,
                fix="Check that the AOI covers this scene (both are compared in the scene's CRS).",
            )
        return self._subset(keep)

    def outside(self, area: BaseGeometry) -> TileGrid:
        """Only tiles not wholly inside ``area`` (exclusion zones, in the scene's CRS)."""
        if area.is_empty or len(self) == 0:
            return self
        shapely.prepare(area)
        return self._subset(~shapely.covers(area, self.geometries()))

    # -- validity ---------------------------------------------------------------------
    def drop_empty(
        self,
        progress: bool = False,
        max_chunk_px: int = 8192,
        indexes: list[int] | None = None,
    ) -> TileGrid:
        """Only tiles with at least one valid pixel (exact) in the bands ``indexes`` (default all).

        Reads each strip of tiles once, ``tile_size`` rows by at most ``max_chunk_px``
        columns at a time, so memory stays bounded on any scene size. NaN counts as
        invalid in float scenes, with or without a declared nodata.
        """
        floating = any(np.dtype(d).kind == "f" for d in self.scene.dtypes)
        if self.scene.mask_kind == "all_valid" and not floating:
            return self
        keep = np.zeros(len(self), dtype=bool)
        rows, cols = self.rows, self.cols
        order = np.lexsort((cols, rows))
        tiles_per_chunk = max(1, max_chunk_px // self.stride)
        indexes = indexes or list(range(1, self.scene.count + 1))
        with (
            self.scene.open() as src,
            tqdm(
                total=len(self), desc="checking tiles for data", unit="tile", disable=not progress
            ) as bar,
        ):
            start = 0
            while start < order.size:
                row = rows[order[start]]
                end = start
                while (
                    end < order.size
                    and rows[order[end]] == row
                    and (cols[order[end]] - cols[order[start]] < tiles_per_chunk)
                ):
                    end += 1
                members = order[start:end]
                col_lo, col_hi = cols[members].min(), cols[members].max()
                first = self.tile_at(int(row), int(col_lo))
                last = self.tile_at(int(row), int(col_hi))
                win = Window(
                    first.read_window.col_off,
                    first.read_window.row_off,
                    last.read_window.col_off + last.read_window.width - first.read_window.col_off,
                    first.read_window.height,
                )
                # Float pixels are read so NaN counts as invalid whatever the mask kind.
                data = src.read(indexes, window=win) if floating else None
                valid = read_valid_mask(src, self.scene, win, indexes, data=data)
                # A tile holds data where any column it spans does: prefix sums of the
                # columns holding data count them per tile (no per-tile Python).
                filled = np.concatenate(([0], np.cumsum(valid.any(axis=0))))
                left = (cols[members] - col_lo) * self.stride
                right = np.minimum(left + self.tile_size, valid.shape[1])
                keep[members] = filled[right] > filled[left]
                bar.update(members.size)
                start = end
        return self._subset(keep)

    # -- export -----------------------------------------------------------------------
    def to_geodataframe(self) -> gpd.GeoDataFrame:
        """The grid as a GeoDataFrame (tile id, row, col, window, geometry), QGIS-ready."""
        import geopandas as gpd

        rows, cols = self.rows, self.cols
        col_off, row_off = cols * self.stride, rows * self.stride
        frame = {
            "tile_id": [f"r{r}c{c}" for r, c in zip(rows, cols, strict=True)],
            "scene_id": self.scene.id,
            "row": rows.astype(np.int32),
            "col": cols.astype(np.int32),
            "col_off": col_off.astype(np.int64),
            "row_off": row_off.astype(np.int64),
            "width": np.minimum(self.tile_size, self.scene.width - col_off).astype(np.int32),
            "height": np.minimum(self.tile_size, self.scene.height - row_off).astype(np.int32),
        }
        return gpd.GeoDataFrame(frame, geometry=self.geometries(), crs=self.scene.crs)

    def to_parquet(self, path: str | os.PathLike[str]) -> None:
        """Write the grid as GeoParquet; the file appears whole or not at all."""
        atomic_write(path, lambda tmp: self.to_geodataframe().to_parquet(tmp, index=False))


def _count(length: int, size: int, stride: int) -> int:
    """Tiles needed along one axis so the last one reaches the edge."""
    if length <= size:
        return 1
    return math.ceil((length - size) / stride) + 1
