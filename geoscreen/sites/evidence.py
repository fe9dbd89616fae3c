"""Evidence chips: a PNG of each site's imagery at full resolution, with its outline.

A chip is the site's bounding box plus a margin, read from the scene it was
detected in (through :meth:`Scene.open`, so reprojected scenes work too). Chips
are bounded: a site larger than ``max_px`` on a side is read decimated to fit
(the only case where a chip is not at full resolution). Bands: red, green, blue
when the scene names them, else the first three (or the first, as grey);
non-8-bit data are stretched to the 2-98 percentiles of the chip's valid
pixels; invalid pixels are grey.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from PIL import Image, ImageDraw
from rasterio.io import DatasetReader
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window
from shapely.geometry.base import BaseGeometry

from geoscreen.errors import ConfigError
from geoscreen.fileio import atomic_write
from geoscreen.imagery.masks import valid_from_data
from geoscreen.imagery.scene import Scene
from geoscreen.sites.extract import pixel_to_crs

OUTLINE_RGB = (255, 220, 0)
INVALID_RGB = (128, 128, 128)


def write_evidence(
    sites: gpd.GeoDataFrame,
    scene: Scene,
    out_dir: str | os.PathLike[str],
    *,
    bands: Sequence[str] | None = None,
    margin_px: int = 16,
    max_px: int = 512,
) -> gpd.GeoDataFrame:
    """Write ``<site_id>.png`` for every site detected in ``scene``; returns the sites
    with ``evidence_path`` set (absolute paths) for those rows."""
    if max_px < 16:
        raise ConfigError(
            f"max_px must be at least 16, got {max_px}", fix="Use e.g. 256 (the default)."
        )
    folder = Path(out_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    out = sites.copy()
    mine = np.flatnonzero((out["scene_id"] == scene.id).to_numpy())
    if mine.size == 0:
        return out
    outlines = sites_in_pixels(out.iloc[mine], scene)
    indexes = _display_bands(scene, bands)
    paths = []
    with scene.open() as src:
        for site_id, outline in zip(out["site_id"].iloc[mine], outlines, strict=True):
            chip = render_chip(src, scene, outline, indexes, margin_px, max_px)
            path = folder / f"{site_id}.png"
            atomic_write(path, partial(_save_png, chip))
            paths.append(str(path))
    column = out["evidence_path"].to_numpy(dtype=object, copy=True)
    column[mine] = paths
    out["evidence_path"] = column
    return out


def sites_in_pixels(sites: gpd.GeoDataFrame, scene: Scene) -> np.ndarray:
    """Site outlines in the scene's pixel coordinates (col, row)."""
    if scene.crs is None:
        if sites.crs is not None:
            raise ConfigError(
                "the sites are georeferenced but the scene is not",
                where=scene.uri,
                fix="Give the scene the sites were extracted from.",
            )
        return np.asarray(sites.geometry.values, dtype=object)
    geoms = sites.geometry if sites.crs is None else sites.geometry.to_crs(scene.crs)
    return pixel_to_crs(np.asarray(geoms.values, dtype=object), ~scene.transform)


def render_chip(
    src: DatasetReader | WarpedVRT,
    scene: Scene,
    outline: BaseGeometry,
    indexes: list[int],
    margin_px: int = 16,
    max_px: int = 512,
) -> np.ndarray:
    """An (H, W, 3) uint8 chip of ``outline`` (pixel coordinates) with the outline drawn."""
    # A tolerance absorbs the round trip through EPSG:4326 (63.9999999 is pixel 64).
    x0, y0, x1, y1 = shapely.bounds(outline)
    c0 = max(0, int(np.floor(x0 + 1e-6)) - margin_px)
    r0 = max(0, int(np.floor(y0 + 1e-6)) - margin_px)
    c1 = min(scene.width, int(np.ceil(x1 - 1e-6)) + margin_px)
    r1 = min(scene.height, int(np.ceil(y1 - 1e-6)) + margin_px)
    width, height = max(1, c1 - c0), max(1, r1 - r0)
    scale = min(1.0, max_px / max(width, height))
    out_w, out_h = max(1, round(width * scale)), max(1, round(height * scale))
    window = Window(c0, r0, width, height)
    data = src.read(indexes, window=window, out_shape=(len(indexes), out_h, out_w))
    rgb = _to_rgb(data, valid_from_data(data, scene.nodata))
    image = Image.fromarray(rgb)
    draw = ImageDraw.Draw(image)
    for polygon in shapely.get_parts(outline):
        rings = [polygon.exterior, *polygon.interiors] if polygon.geom_type == "Polygon" else []
        for ring in rings:
            xy = (np.asarray(ring.coords) - (c0, r0)) * (out_w / width, out_h / height)
            draw.line([tuple(p) for p in xy.tolist()], fill=OUTLINE_RGB, width=2)
    return np.asarray(image)


def _save_png(chip: np.ndarray, path: str) -> None:
    Image.fromarray(chip).save(path, format="PNG")


def _display_bands(scene: Scene, bands: Sequence[str] | None) -> list[int]:
    if bands:
        return scene.band_indexes(list(bands))
    try:
        return scene.band_indexes(["red", "green", "blue"])
    except ConfigError:
        data = [i + 1 for i, b in enumerate(scene.band_names) if b.lower() != "alpha"]
        return data[:3] if len(data) >= 3 else data[:1]


def _to_rgb(data: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Bands (C, H, W) to an (H, W, 3) uint8 image; grey where invalid."""
    if data.dtype == np.uint8:
        scaled = data
    else:
        values = data.astype(np.float32)
        scaled = np.zeros(values.shape, dtype=np.uint8)
        for i, band in enumerate(values):
            good = band[valid & np.isfinite(band)]
            lo, hi = np.percentile(good, (2, 98)) if good.size else (0.0, 1.0)
            stretched = (np.nan_to_num(band) - lo) / max(float(hi - lo), 1e-6) * 255
            scaled[i] = np.clip(stretched, 0, 255).astype(np.uint8)
    rgb = np.repeat(scaled[:1], 3, axis=0) if scaled.shape[0] < 3 else scaled[:3]
    rgb = np.ascontiguousarray(np.moveaxis(rgb, 0, -1))
    rgb[~valid] = INVALID_RGB
    return rgb
