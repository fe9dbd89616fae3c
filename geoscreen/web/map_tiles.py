"""Imagery tiles around a candidate, read from its scene with rio-tiler.

A candidate's scene is found by its ``scene_id`` (a content id, see
:func:`geoscreen.imagery.scene.open_scene`), first among the scene files or folders
the server was given (``geoscreen serve --scenes``, indexed by id: for files that
moved), then where the store says the scene file was loaded from (``scenes.uri``, see
:meth:`geoscreen.review.store.Store.locate`); a ``scene_id`` that is itself the path
of a local file is used as it is. Remote URIs are never opened (offline by default).
A scene file that is gone gives "imagery not available" (404), never an error page.

Tiles are Web Mercator XYZ tiles rendered by rio-tiler, only from a few zoom levels
below the scene's native resolution to one above it. A candidate's tiles cover only the
site (its box grown by ``margin_m``, at least twice the site's size); a scene's tiles
(the review map's layer of every scene in view) cover the scene. A tile that would be
empty (outside the window or the scene) is ``None``: the server answers it with "no
content", cheaply, and the page asks only for tiles inside the scene's footprint.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from morecantile import Tile
from rasterio.errors import RasterioError
from rio_tiler.errors import TileOutsideBounds
from rio_tiler.io import Reader

from geoscreen.errors import GeoscreenError, InputError
from geoscreen.imagery.scene import open_scene
from geoscreen.review.errors import NotFoundError
from geoscreen.review.records import Candidate
from geoscreen.review.store import Store, is_remote
from geoscreen.web.mapping import rgb_bands

log = logging.getLogger(__name__)

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")
ZOOM_LEVELS_BELOW = 4
METRES_PER_DEGREE = 111_320.0


@dataclass(frozen=True)
class SceneStyle:
    """How a scene's tiles are drawn: which bands, and the stretch (``None``: 8-bit as is)."""

    uri: str
    indexes: tuple[int, ...]
    stretch: tuple[float, float] | None
    minzoom: int
    maxzoom: int
    bounds: tuple[float, float, float, float]  # lon/lat footprint (EPSG:4326)


class SceneIndex:
    """Scene files by scene id: those given, then those the store knows."""

    def __init__(
        self, uris: Mapping[str, str] | None = None, *, store: Store | None = None
    ) -> None:
        self._uris = dict(uris or {})
        self.store = store

    def __len__(self) -> int:
        return len(self._uris)

    @classmethod
    def from_paths(
        cls, paths: Iterable[str | os.PathLike[str]], *, store: Store | None = None
    ) -> SceneIndex:
        """Index raster files, and the rasters found (recursively) in folders."""
        uris: dict[str, str] = {}
        for given in paths:
            path = Path(given)
            if path.is_dir():
                rasters = (p for p in path.rglob("*") if p.suffix.lower() in RASTER_SUFFIXES)
                for found in sorted(rasters):
                    try:
                        uris.setdefault(open_scene(found).id, str(found.resolve()))
                    except GeoscreenError as exc:
                        log.warning("skipping %s: %s", found, exc.message)
            elif path.is_file():
                uris.setdefault(open_scene(path).id, str(path.resolve()))
            else:
                raise InputError(
                    "scene file or folder not found",
                    where=str(path),
                    fix="Give --scenes a folder or file that exists on this machine.",
                )
        return cls(uris, store=store)

    def uri(self, scene_id: str | None, stored: str | bool | None = True) -> str | None:
        """Where the scene's file is now: indexed, stored, or named by the id itself.

        ``stored``: the store's ``scenes.uri`` when the caller has it (``True``: look it up).
        """
        if not scene_id:
            return None
        given = self._uris.get(scene_id)
        if given is not None and os.path.isfile(given):
            return given
        if self.store is not None:
            recorded = self.store.scene_uri(scene_id) if stored is True else stored
            found = self.store.locate(recorded if isinstance(recorded, str) else None)
            if found is not None:
                return str(found)
        if not is_remote(scene_id) and os.path.isfile(scene_id):
            return scene_id
        return None


class TileSource:
    """Renders PNG tiles near candidates from their scenes."""

    def __init__(self, scenes: SceneIndex, *, margin_m: float = 150.0) -> None:
        self.scenes = scenes
        self.margin_m = margin_m
        self._styles: dict[str, SceneStyle | None] = {}
        self._lock = threading.Lock()

    def style(self, candidate: Candidate) -> SceneStyle | None:
        """How the candidate's scene is drawn, or ``None`` when there is no usable scene."""
        return self.scene_style(candidate.scene_id)

    def scene_style(
        self, scene_id: str | None, stored: str | bool | None = True
    ) -> SceneStyle | None:
        """How a scene is drawn, or ``None`` when its file is not on this server
        (``stored``: as for :meth:`SceneIndex.uri`)."""
        uri = self.scenes.uri(scene_id, stored)
        if uri is None:
            return None
        with self._lock:
            if uri not in self._styles:
                self._styles[uri] = _describe(uri)
            return self._styles[uri]

    def window(self, candidate: Candidate) -> tuple[float, float, float, float]:
        """The lon/lat box around the site that tiles may show."""
        width_m = (candidate.maxx - candidate.minx) * METRES_PER_DEGREE * _cos(candidate.lat)
        height_m = (candidate.maxy - candidate.miny) * METRES_PER_DEGREE
        margin = max(self.margin_m, 2 * max(width_m, height_m))
        dy = margin / METRES_PER_DEGREE
        dx = dy / _cos(candidate.lat)
        return (candidate.minx - dx, candidate.miny - dy, candidate.maxx + dx, candidate.maxy + dy)

    def tile(self, candidate: Candidate, z: int, x: int, y: int) -> bytes | None:
        """One PNG tile near the site (``None``: nothing there); :class:`NotFoundError`
        for zooms not served or a scene not on this server."""
        style = self.style(candidate)
        if style is None:
            raise _unavailable(f"candidate {candidate.id}")
        return self._render(style, z, x, y, self.window(candidate), f"candidate {candidate.id}")

    def scene_tile(self, scene_id: str, z: int, x: int, y: int) -> bytes | None:
        """One PNG tile of a whole scene (``None``: outside it)."""
        style = self.scene_style(scene_id)
        if style is None:
            raise _unavailable("this scene")
        return self._render(style, z, x, y, style.bounds, "this scene")

    def _render(
        self,
        style: SceneStyle,
        z: int,
        x: int,
        y: int,
        window: tuple[float, float, float, float],
        what: str,
    ) -> bytes | None:
        if not style.minzoom <= z <= style.maxzoom or not 0 <= x < 2**z or not 0 <= y < 2**z:
            raise NotFoundError(f"zoom {z} is not served (zooms {style.minzoom}-{style.maxzoom})")
        try:
            with Reader(style.uri) as reader:
                west, south, east, north = reader.tms.bounds(Tile(x, y, z))
                minx, miny, maxx, maxy = window
                if east < minx or west > maxx or north < miny or south > maxy:
                    return None
                try:
                    image = reader.tile(x, y, z, indexes=style.indexes)
                except TileOutsideBounds:
                    return None
        except (RasterioError, OSError) as exc:  # the file went away or broke since
            log.warning("imagery unavailable: %s: %s", style.uri, exc)
            with self._lock:
                self._styles.pop(style.uri, None)
            raise _unavailable(what) from exc
        if style.stretch is not None:
            image = image.rescale(in_range=[style.stretch] * image.count)
        return image.render(img_format="PNG")


def clip(
    box: tuple[float, float, float, float], within: tuple[float, float, float, float]
) -> tuple[float, float, float, float]:
    """``box`` cut to ``within`` (``within`` itself when they do not meet)."""
    out = (max(box[0], within[0]), max(box[1], within[1]),
           min(box[2], within[2]), min(box[3], within[3]))  # fmt: skip
    return out if out[0] <= out[2] and out[1] <= out[3] else within


def _unavailable(what: str) -> NotFoundError:
    return NotFoundError(
        f"imagery not available for {what}: its scene file is not on this server",
        fix="Give the scene file or its folder with 'geoscreen serve --scenes'.",
    )


def _cos(lat: float) -> float:
    return max(math.cos(math.radians(lat)), 0.01)


def _describe(uri: str) -> SceneStyle | None:
    """Bands and stretch of a scene (``None`` for scenes without a CRS)."""
    try:
        scene = open_scene(uri)
    except GeoscreenError as exc:
        log.warning("imagery unavailable: %s", exc.message)
        return None
    if scene.crs is None:
        return None
    try:
        return _style(uri, tuple(scene.band_indexes(rgb_bands(scene))), scene.dtypes)
    except (RasterioError, OSError) as exc:
        log.warning("imagery unavailable: %s: %s", uri, exc)
        return None


def _style(uri: str, indexes: tuple[int, ...], dtypes: Iterable[str]) -> SceneStyle:
    with Reader(uri) as reader:
        stretch = None
        if any(dtype != "uint8" for dtype in dtypes):
            preview = reader.preview(indexes=indexes, max_size=512).array
            valid = preview.compressed()
            if valid.size:
                lo, hi = np.percentile(valid, (2, 98))
                stretch = (float(lo), float(max(hi, lo + 1e-6)))
        native = int(reader.maxzoom)
        west, south, east, north = reader.get_geographic_bounds("EPSG:4326")
        return SceneStyle(
            uri=uri,
            indexes=indexes,
            stretch=stretch,
            minzoom=max(int(reader.minzoom), native - ZOOM_LEVELS_BELOW, 0),
            maxzoom=native + 1,
            bounds=(float(west), float(south), float(east), float(north)),
        )
