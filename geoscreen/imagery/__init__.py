"""Imagery: open scenes, tile them lazily, preprocess tiles and feed torch.

The names below load on first use, so that ``geoscreen.imagery.sensors`` (the CLI's
help text) does not pull in rasterio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from geoscreen.lazy import lazy_attributes

if TYPE_CHECKING:
    from geoscreen.imagery.scene import Scene, WarpSpec, open_scene
    from geoscreen.imagery.tiling import Tile, TileGrid

_WHERE = {
    "Scene": "scene",
    "WarpSpec": "scene",
    "open_scene": "scene",
    "Tile": "tiling",
    "TileGrid": "tiling",
}

__all__ = ["Scene", "Tile", "TileGrid", "WarpSpec", "open_scene"]


__getattr__, __dir__ = lazy_attributes(__name__, globals(), _WHERE)
