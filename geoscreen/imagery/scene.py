"""Scenes: one raster as geoscreen sees it, opened from any GDAL source.

A :class:`Scene` is a small immutable description (no pixels held). Pixels are
read through :meth:`Scene.open`, which yields a rasterio dataset, or a lazy
``WarpedVRT`` when the scene was reprojected with :meth:`Scene.reproject`.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import CRSError, NotGeoreferencedWarning, RasterioIOError
from rasterio.io import DatasetReader
from rasterio.vrt import WarpedVRT
from rasterio.warp import calculate_default_transform, transform_geom
from rasterio.windows import Window
from shapely.geometry import Polygon, box, mapping, shape

from geoscreen.errors import ConfigError, InputError
from geoscreen.imagery.sensors import (
    SensorPreset,
    default_band_names,
    detect_preset,
    get_preset,
    presets_for,
)

SUPPORTED_DTYPES = frozenset(
    {"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64"}
)

# Bounded reader memory: the block cache is the reader's main consumer (~840 MB -> ~130 MB).
GDAL_ENV: dict[str, Any] = {
    "GDAL_CACHEMAX": 64 * 1024 * 1024,  # bytes: rasterio hands an integer to GDAL as bytes
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "VSI_CACHE": True,
}

_TIME_TAGS = (
    "ACQUISITION_DATETIME", "ACQUISITIONDATETIME", "DATETIME_ACQUIRED", "SENSING_TIME",
    "PRODUCT_START_TIME", "DATE_ACQUIRED", "ACQUIRED", "datetime", "TIFFTAG_DATETIME",
)  # fmt: skip
_TIME_FORMATS = ("%Y:%m:%d %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d", "%Y%m%d")


@dataclass(frozen=True)
class WarpSpec:
    """A target grid for lazy reprojection: CRS, pixel size in CRS units, resampling."""

    crs: CRS
    resolution: float | None = None
    resampling: Resampling = Resampling.bilinear


@dataclass(frozen=True)
class Scene:
    """One raster: identity, grid, bands and metadata. Holds no pixels.

    ``transform``, ``width``, ``height`` and ``crs`` describe the *working* grid:
    the file's own grid, or the reprojected one when ``warp`` is set. A scene with
    no CRS is in pixel space (``georeferenced`` is False): x is the column, y the
    row.
    """

    uri: str
    id: str
    width: int
    height: int
    count: int
    dtypes: tuple[str, ...]
    band_names: tuple[str, ...]
    nodata: float | None
    crs: CRS | None
    transform: Affine
    mask_kind: str
    sensor: str | None = None
    acquired: datetime | None = None
    block_shape: tuple[int, int] = (256, 256)
    is_tiled: bool = False
    overview_count: int = 0
    source_transform: Affine | None = None
    source_size: tuple[int, int] | None = None
    source_crs: CRS | None = None
    warp: WarpSpec | None = None

    # -- geometry -------------------------------------------------------------------
    @property
    def georeferenced(self) -> bool:
        """True when the scene has a CRS; False for pixel-space images."""
        return self.crs is not None

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the working grid."""
        return (self.height, self.width)

    @property
    def resolution(self) -> tuple[float, float]:
        """Pixel size (x, y) in CRS units (pixels for pixel-space scenes)."""
        return (abs(self.transform.a), abs(self.transform.e))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) of the working grid in its CRS (or pixel space)."""
        x0, y0 = self.transform @ (0, 0)
        x1, y1 = self.transform @ (self.width, self.height)
        return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))

    @property
    def resolution_m(self) -> tuple[float, float] | None:
        """Pixel size (x, y) in metres; None for pixel-space scenes."""
        if self.crs is None:
            return None
        xres, yres = self.resolution
        if self.crs.is_geographic:
            from pyproj import Geod

            left, bottom, right, top = self.bounds
            lon, lat = (left + right) / 2, (bottom + top) / 2
            geod = Geod(ellps="WGS84")
            _, _, dx = geod.inv(lon, lat, lon + xres, lat)
            _, _, dy = geod.inv(lon, lat, lon, lat + yres)
            return (abs(dx), abs(dy))
        factor = self.crs.linear_units_factor[1] if self.crs.linear_units_factor else 1.0
        return (xres * factor, yres * factor)

    @property
    def footprint(self) -> Polygon | None:
        """Outline of the working grid in EPSG:4326 (densified edges); None in pixel space."""
        if self.crs is None:
            return None
        left, bottom, right, top = self.bounds
        outline = box(left, bottom, right, top).segmentize(max(right - left, top - bottom) / 8)
        geom = transform_geom(self.crs, "EPSG:4326", mapping(outline))
        return Polygon(shape(geom).exterior)

    def pixel_polygon(self, window: Window) -> Polygon:
        """A window of the working grid as a polygon in the scene's CRS (or pixel space)."""
        c0, r0 = window.col_off, window.row_off
        c1, r1 = c0 + window.width, r0 + window.height
        corners = [self.transform @ (c, r) for c, r in ((c0, r0), (c1, r0), (c1, r1), (c0, r1))]
        return Polygon(corners)

    # -- bands ------------------------------------------------------------------------
    def band_index(self, name: str) -> int:
        """1-based index of a band by name (case-insensitive) or by its sensor common name."""
        wanted = name.strip().lower()
        for i, band in enumerate(self.band_names, start=1):
            if band.lower() == wanted:
                return i
        if self.sensor is not None:
            common = get_preset(self.sensor).common_names
            for i, band in enumerate(self.band_names, start=1):
                if common.get(band, "").lower() == wanted:
                    return i
        number = wanted.removeprefix("band")
        if wanted.startswith("band") and number.isdigit() and 1 <= int(number) <= self.count:
            return int(number)
        raise ConfigError(
            f"band {name!r} is not in this scene",
            where=self.uri,
            fix=f"Its bands are: {', '.join(self.band_names)}"
            + (f" (sensor preset {self.sensor})" if self.sensor else "")
            + "; choose from these or set the right --sensor preset.",
        )

    def band_indexes(self, names: list[str] | tuple[str, ...] | None) -> list[int]:
        """1-based indexes for band names; all bands when ``names`` is None."""
        if not names:
            return list(range(1, self.count + 1))
        return [self.band_index(n) for n in names]

    def common_name(self, index: int) -> str | None:
        """The sensor-independent name (red, nir, swir16...) of a 1-based band index."""
        band = self.band_names[index - 1]
        if self.sensor is not None:
            return get_preset(self.sensor).common_names.get(band)
        return band if band in ("red", "green", "blue", "nir") else None

    # -- reading ----------------------------------------------------------------------
    @contextmanager
    def open(self) -> Iterator[DatasetReader | WarpedVRT]:
        """Open for reading, inside a bounded GDAL environment; a WarpedVRT if reprojected."""
        with ExitStack() as stack:
            stack.enter_context(rasterio.Env(**GDAL_ENV))
            stack.enter_context(warnings.catch_warnings())
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            src = stack.enter_context(open_dataset(self.uri))
            if self.warp is None:
                with read_errors(self.uri):
                    yield src
                return
            vrt = stack.enter_context(WarpedVRT(src, **self.vrt_options()))
            with read_errors(self.uri):
                yield vrt

    def vrt_options(self) -> dict[str, Any]:
        """WarpedVRT arguments for the working grid of a reprojected scene.

        Outside the source footprint is invalid: nodata if declared, else an alpha band.
        """
        if self.warp is None:
            raise ValueError("vrt_options() is only defined for reprojected scenes")
        options: dict[str, Any] = {
            "crs": self.crs,
            "transform": self.transform,
            "width": self.width,
            "height": self.height,
            "resampling": self.warp.resampling,
        }
        if self.nodata is None:
            options["add_alpha"] = True
        else:
            options["nodata"] = self.nodata
        return options

    def reproject(
        self,
        crs: str | int | CRS,
        resolution: float | None = None,
        resampling: Resampling | str = Resampling.bilinear,
    ) -> Scene:
        """The same scene on another grid (lazy: nothing is read until tiles are)."""
        if self.crs is None:
            raise InputError(
                "the raster has no CRS, so it cannot be reprojected",
                where=self.uri,
                fix="Assign its CRS first (e.g. gdal_edit.py -a_srs EPSG:32633 FILE) "
                "or work in pixel space without --crs/--resolution.",
            )
        target = parse_crs(crs)
        if isinstance(resampling, str):
            resampling = Resampling[resampling]
        if resolution is not None and resolution <= 0:
            raise ConfigError(
                f"resolution must be positive, got {resolution}",
                fix="Give the pixel size in the target CRS's units (e.g. 10 for 10 m).",
            )
        # Always warp from the file's own grid, also when this scene is already reprojected.
        src_crs = self.source_crs or self.crs
        src_w, src_h = self.source_size or (self.width, self.height)
        left, bottom, right, top = _bounds_of(self.source_transform or self.transform, src_w, src_h)
        transform, width, height = calculate_default_transform(
            src_crs, target, src_w, src_h, left, bottom, right, top,
            resolution=resolution,
        )  # fmt: skip
        if resolution is not None:
            # Target-aligned pixels (like gdalwarp -tap): scenes on the same CRS and
            # resolution share one pixel lattice, so their tiles line up.
            x0 = math.floor(transform.c / resolution + 1e-9) * resolution
            y0 = math.ceil(transform.f / resolution - 1e-9) * resolution
            x1 = transform.c + width * transform.a
            y1 = transform.f + height * transform.e
            width = math.ceil((x1 - x0) / resolution - 1e-9)
            height = math.ceil((y0 - y1) / resolution - 1e-9)
            transform = Affine(resolution, 0.0, x0, 0.0, -resolution, y0)
        return replace(
            self,
            crs=target,
            transform=transform,
            width=int(width),
            height=int(height),
            source_transform=self.source_transform or self.transform,
            source_size=(src_w, src_h),
            source_crs=src_crs,
            warp=WarpSpec(target, resolution, resampling),
            # Outside the source footprint is invalid: nodata if declared, else an alpha band.
            mask_kind="nodata" if self.nodata is not None else "mask",
        )


def _bounds_of(transform: Affine, width: int, height: int) -> tuple[float, float, float, float]:
    x0, y0 = transform @ (0, 0)
    x1, y1 = transform @ (width, height)
    return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def parse_crs(value: str | int | CRS) -> CRS:
    """A CRS from 'EPSG:32633', 32633, WKT or a CRS; a clear error otherwise."""
    if isinstance(value, CRS):
        return value
    try:
        text = str(value).strip()
        return CRS.from_epsg(int(text)) if text.isdigit() else CRS.from_user_input(text)
    except (CRSError, ValueError) as exc:
        raise ConfigError(
            f"not a coordinate reference system: {value!r}",
            fix="Give an EPSG code such as EPSG:32633, or a WKT/PROJ string.",
        ) from exc


def _is_virtual(uri: str) -> bool:
    return uri.startswith("/vsi") or "://" in uri


# Formats GDAL decodes from the first row on every backward read: a random window of a
# 2,300 x 2,500 PNG took 0.2 s against 7 ms from a tiled GeoTIFF. Small ones are
# decoded once into memory instead.
SEQUENTIAL_DRIVERS = frozenset({"PNG", "JPEG", "GIF", "BMP"})
IN_MEMORY_LIMIT = 256 * 2**20


@contextmanager
def open_dataset(uri: str, *, for_pixels: bool = True) -> Iterator[DatasetReader]:
    """Open ``uri`` for reading; with ``for_pixels`` a small image in a sequential format
    is held in memory (reading only metadata, leave it off: no decode)."""
    try:
        ds = rasterio.open(uri)
    except RasterioIOError as exc:
        raise InputError(
            f"cannot open as a raster ({_short(exc)})",
            where=uri,
            fix="Check that it is a GDAL-readable image (GeoTIFF, COG, JP2, VRT, PNG/JPEG) "
            "and not truncated.",
        ) from exc
    with ExitStack() as stack:
        stack.enter_context(ds)
        yield _in_memory(ds, uri, stack) if for_pixels and _decode_once(ds) else ds


def _decode_once(ds: DatasetReader) -> bool:
    """Whether ``ds`` is a small image in a sequential format with no alpha or mask band
    (those keep their meaning only in the original file)."""
    size = ds.width * ds.height * sum(np.dtype(d).itemsize for d in ds.dtypes)
    plain = all(
        flags == [MaskFlags.all_valid] or MaskFlags.nodata in flags for flags in ds.mask_flag_enums
    )
    return ds.driver in SEQUENTIAL_DRIVERS and size <= IN_MEMORY_LIMIT and plain


def _in_memory(ds: DatasetReader, uri: str, stack: ExitStack) -> DatasetReader:
    """A copy of ``ds`` in an in-memory GeoTIFF: same pixels, georeference and nodata."""
    from rasterio.io import MemoryFile

    with read_errors(uri):
        pixels = ds.read()
    profile = {
        "driver": "GTiff", "width": ds.width, "height": ds.height, "count": ds.count,
        "dtype": ds.dtypes[0], "nodata": ds.nodata, "tiled": True,
        "crs": ds.crs, "transform": ds.transform,
    }  # fmt: skip
    if len(set(ds.dtypes)) > 1:
        profile["dtype"] = np.result_type(*ds.dtypes).name
    memory = stack.enter_context(MemoryFile())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with memory.open(**profile) as dst:
            dst.write(pixels)
            dst.colorinterp = ds.colorinterp
            dst.update_tags(**ds.tags())
            for i in range(1, ds.count + 1):
                if ds.descriptions[i - 1]:
                    dst.set_band_description(i, ds.descriptions[i - 1])
        return stack.enter_context(memory.open())


@contextmanager
def read_errors(uri: str) -> Iterator[None]:
    """Turn a failed pixel read (truncated or corrupt file) into an :class:`InputError`."""
    try:
        yield
    except RasterioIOError as exc:
        raise InputError(
            f"pixel data cannot be read ({_short(exc)})",
            where=uri,
            fix="The file is probably truncated or corrupt: download or export it again.",
        ) from exc


def _short(exc: BaseException) -> str:
    """The first line of an error, or of its cause when it only says 'see previous'."""
    if "previous exception" in str(exc) and exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) < 160 else text[:157] + "..."


def open_scene(
    path: str | os.PathLike[str], sensor: str | None = None, *, scene_id: str | None = None
) -> Scene:
    """Open any GDAL raster (local path or GDAL virtual path) as a :class:`Scene`.

    ``sensor`` forces a band preset (see :mod:`geoscreen.imagery.sensors`);
    otherwise it is detected from what the file says, or left unset. ``scene_id``:
    the content id when it is already known for this very file (e.g. from
    :class:`geoscreen.batch.idcache.SceneIdCache`); the sample blocks that give it
    are then not read.
    """
    uri = os.fspath(path)
    if not _is_virtual(uri):
        if not os.path.exists(uri):
            raise InputError("file not found", where=uri, fix="Check the path and spelling.")
        if os.path.isdir(uri):
            raise InputError("is a folder, not a raster file", where=uri,
                             fix="Give one image file (batch scans take folders).")  # fmt: skip
        if os.path.getsize(uri) == 0:
            raise InputError("file is empty (0 bytes)", where=uri,
                             fix="Download or copy it again.")  # fmt: skip
    with rasterio.Env(**GDAL_ENV), warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with open_dataset(uri, for_pixels=False) as ds:
            return _describe(uri, ds, sensor, scene_id)


def _describe(
    uri: str, ds: DatasetReader, sensor: str | None, scene_id: str | None = None
) -> Scene:
    if ds.count == 0:
        raise InputError("raster has no bands", where=uri,
                         fix="Use a file with at least one image band.")  # fmt: skip
    if ds.width == 0 or ds.height == 0:
        raise InputError(f"raster has zero size ({ds.width} x {ds.height})", where=uri,
                         fix="Use a file with pixels.")  # fmt: skip
    bad = sorted(set(ds.dtypes) - SUPPORTED_DTYPES)
    if bad:
        raise InputError(
            f"unsupported pixel type {', '.join(bad)}",
            where=uri,
            fix="Convert to a real-valued type first, e.g. "
            "gdal_translate -ot Float32 IN OUT (complex SAR data: take the amplitude).",
        )
    colorinterp = [c.name for c in ds.colorinterp]
    count = ds.count
    # A trailing alpha band is a mask, not data (RGBA orthomosaics, PNGs).
    alpha = count > 1 and colorinterp[-1].lower() == "alpha"
    data_count = count - alpha
    if sensor is not None:
        preset: SensorPreset | None = get_preset(sensor)
        assert preset is not None
        # Some products flag their 4th band (NIR) as alpha: a preset for all bands wins.
        layout = preset.layout_for(data_count) or preset.layout_for(count)
        if layout is None:
            sizes = " or ".join(str(len(lay)) for lay in preset.layouts())
            fits = presets_for(data_count)
            raise ConfigError(
                f"sensor preset {sensor!r} expects {sizes} bands but the file has {count}",
                where=uri,
                fix=(f"Presets for {data_count}-band files: {', '.join(fits)}. " if fits else "")
                + "Use the one for the file's sensor (--sensor, or imagery.sensor and bands in "
                "a profile trained on that sensor; 'geoscreen info FILE' shows what it holds).",
            )
    else:
        preset = detect_preset(
            data_count, ds.descriptions[:data_count], colorinterp[:data_count], ds.tags()
        )
        layout = preset.layout_for(data_count) if preset else None
    band_names = (
        layout + (("alpha",) if len(layout) < count else ())
        if layout
        else _names_from_descriptions(ds.descriptions, colorinterp, count)
    )
    crs = ds.crs if ds.crs else None
    transform = ds.transform if crs is not None else Affine.identity()
    block = ds.block_shapes[0] if ds.block_shapes else (256, 256)
    nodata = ds.nodata
    if nodata is not None and isinstance(nodata, float) and math.isnan(nodata):
        nodata = float("nan")
    return Scene(
        uri=uri,
        id=scene_id or _content_id(uri, ds),
        width=ds.width,
        height=ds.height,
        count=count,
        dtypes=tuple(ds.dtypes),
        band_names=band_names,
        nodata=nodata,
        crs=crs,
        transform=transform,
        mask_kind=_mask_kind(ds),
        sensor=preset.name if preset else None,
        acquired=_acquired(ds),
        block_shape=(int(block[0]), int(block[1])),
        is_tiled=bool(block[1] < ds.width and block[0] > 1),
        overview_count=len(ds.overviews(1)),
    )


def _names_from_descriptions(
    descriptions: tuple[str | None, ...], colorinterp: list[str], count: int
) -> tuple[str, ...]:
    defaults = default_band_names(count, colorinterp)
    names = [d.strip() if d and d.strip() else defaults[i] for i, d in enumerate(descriptions)]
    return tuple(n if names.count(n) == 1 else f"{n}_{i + 1}" for i, n in enumerate(names))


def _mask_kind(ds: DatasetReader) -> str:
    """How validity is encoded: 'nodata', 'mask' (internal mask or alpha) or 'all_valid'."""
    flags = ds.mask_flag_enums
    if all(MaskFlags.nodata in f for f in flags):
        return "nodata"
    if all(f == [MaskFlags.all_valid] for f in flags):
        return "all_valid"
    return "mask"


def _acquired(ds: DatasetReader) -> datetime | None:
    tags = ds.tags()
    lowered = {k.upper(): v for k, v in tags.items()}
    for key in _TIME_TAGS:
        value = lowered.get(key.upper())
        if value:
            parsed = parse_datetime(value)
            if parsed:
                return parsed
    return None


def parse_datetime(value: str) -> datetime | None:
    """Parse the date formats rasters use (ISO 8601, TIFF 'YYYY:MM:DD hh:mm:ss')."""
    text = value.strip().replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        parsed = None
        for fmt in _TIME_FORMATS:
            try:
                parsed = datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
    if parsed is None:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# Names how _content_id computes ids: change it whenever the computation changes.
CONTENT_ID_SCHEME = "sha256-header-3x3-64px"


def _content_id(uri: str, ds: DatasetReader, samples: int = 3, size: int = 64) -> str:
    """A stable id from the header and a grid of sampled pixel blocks (not the file name).

    Reading the samples also catches truncated or corrupt files at open time.
    """
    digest = hashlib.sha256()
    header = (ds.width, ds.height, ds.count, ds.dtypes, ds.nodata,
              ds.crs.to_wkt() if ds.crs else None, tuple(ds.transform))  # fmt: skip
    digest.update(repr(header).encode())
    h, w = min(size, ds.height), min(size, ds.width)
    with read_errors(uri):
        for fy in np.linspace(0, 1, samples):
            for fx in np.linspace(0, 1, samples):
                window = Window(int(fx * (ds.width - w)), int(fy * (ds.height - h)), w, h)
                digest.update(np.ascontiguousarray(ds.read(window=window)).tobytes())
    return digest.hexdigest()[:16]
