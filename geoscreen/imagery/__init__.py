"""Imagery: open scenes, tile them lazily, preprocess tiles and feed torch."""

from geoscreen.imagery.scene import Scene, WarpSpec, open_scene
from geoscreen.imagery.tiling import Tile, TileGrid

__all__ = ["Scene", "Tile", "TileGrid", "WarpSpec", "open_scene"]
