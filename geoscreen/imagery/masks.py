"""Valid-pixel masks: which pixels of a window hold data (not nodata, not masked out)."""

from __future__ import annotations

import numpy as np
from rasterio.io import DatasetReader
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from geoscreen.imagery.scene import Scene


def valid_from_data(data: np.ndarray, nodata: float | None) -> np.ndarray:
    """Pixels (H x W) of ``data`` (C x H x W) that hold data.

    As GDAL's dataset mask does, a pixel is nodata only when *every* band equals the
    nodata value (a saturated red band next to real green and blue is data). NaN in
    any band is never a value, with or without a declared nodata.
    """
    valid = np.ones(data.shape[1:], dtype=bool)
    if nodata is not None and not np.isnan(nodata):
        valid &= ~(data == nodata).all(axis=0)
    if data.dtype.kind == "f":
        valid &= ~np.isnan(data).any(axis=0)
    return valid


def read_valid_mask(
    src: DatasetReader | WarpedVRT,
    scene: Scene,
    window: Window,
    indexes: list[int],
    data: np.ndarray | None = None,
) -> np.ndarray:
    """The valid mask (H x W, bool) of ``window`` for the bands ``indexes``.

    Pass ``data`` when the bands were already read for this window, so nodata-based
    masks cost no second read.
    """
    height, width = int(window.height), int(window.width)
    if scene.mask_kind == "all_valid":
        if data is not None and data.dtype.kind == "f":
            return valid_from_data(data, None)
        return np.ones((height, width), dtype=bool)
    if scene.mask_kind == "nodata":
        if data is None:
            data = src.read(indexes, window=window)
        return valid_from_data(data, scene.nodata)
    masks = src.read_masks(indexes, window=window)
    valid = (masks > 0).all(axis=0)
    if data is not None and data.dtype.kind == "f":
        valid &= valid_from_data(data, None)
    return valid
