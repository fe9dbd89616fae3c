"""Imagery: open scenes, tile them lazily, preprocess tiles and feed torch.

The names below load on first use, so that ``geoscreen.imagery.sensors`` (the CLI's
help text) does not pull in rasterio.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
