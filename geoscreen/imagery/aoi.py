"""Areas of interest: polygons from a vector file, placed on a scene's CRS.

An AOI file (GeoJSON, GeoPackage, Shapefile or anything else OGR reads) may be in
any CRS; :func:`load_aoi` reprojects its polygons to the scene's CRS and unions
them into one geometry for :meth:`~geoscreen.imagery.tiling.TileGrid.within`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import shapely
from rasterio.crs import CRS
from shapely.geometry.base import BaseGeometry

from geoscreen.errors import InputError
from geoscreen.imagery.scene import parse_crs

if TYPE_CHECKING:
    import geopandas as gpd

_POLYGONAL = ("Polygon", "MultiPolygon")


def load_aoi(
    path: str | os.PathLike[str], crs: str | int | CRS | None, layer: str | int | None = None
) -> BaseGeometry:
    """The union of the polygons in a vector file, in ``crs`` (the scene's CRS).

    ``crs`` None means the scene has no CRS, which an AOI cannot be placed on.
    A file that mixes polygons with points or lines, or holds an invalid polygon
    (self-intersecting, a ring too short), is refused: guessing which part is the area
    could screen the wrong place.
    """
    where = os.fspath(path)
    if crs is None:
        raise InputError(
            "the scene has no CRS, so this AOI cannot be placed on it",
            where=where,
            fix="Assign the raster's CRS (gdal_edit.py -a_srs EPSG:XXXX RASTER) or drop --aoi.",
        )
    target = parse_crs(crs)
    frame = _read(where, layer)
    if frame.crs is None:
        raise InputError(
            "the AOI file has no coordinate reference system",
            where=where,
            fix="Set it, e.g. ogr2ogr -a_srs EPSG:4326 fixed.gpkg AOI_FILE "
            "(GeoJSON is EPSG:4326 unless it says otherwise; Shapefiles need their .prj).",
        )
    polygons = _polygons(frame, where)
    import geopandas as gpd

    polys = gpd.GeoSeries(polygons, crs=frame.crs).make_valid().to_crs(target)
    area = shapely.union_all(polys.to_numpy())
    area = shapely.union_all([g for g in shapely.get_parts(area) if g.geom_type in _POLYGONAL])
    if area.is_empty or not area.is_valid:
        raise InputError(
            "the AOI is empty once placed in the scene's CRS",
            where=where,
            fix="Check that its polygons have an area and lie where the scene's CRS is defined.",
        )
    return area


def _polygons(frame: gpd.GeoDataFrame, where: str) -> list[BaseGeometry]:
    """The file's polygons, if they are all it holds and all of them are valid."""
    rows = frame.geometry.to_numpy()
    kinds = sorted({g.geom_type for g in rows if g is not None and not g.is_empty})
    if not any(k in _POLYGONAL for k in kinds):
        raise InputError(
            f"the AOI file holds no polygons (found: {', '.join(kinds) or 'no geometries'})",
            where=where,
            fix="Give a file with the area as polygon features.",
        )
    other = [k for k in kinds if k not in _POLYGONAL]
    if other:
        count = sum(1 for g in rows if g is not None and g.geom_type in other)
        raise InputError(
            f"the AOI file mixes polygons with {count} other features ({', '.join(other)}), "
            "so it is unclear which part is the area",
            where=where,
            fix="Keep only the area's polygons, e.g. ogr2ogr -nlt MULTIPOLYGON -where "
            "\"OGR_GEOMETRY IN ('POLYGON','MULTIPOLYGON')\" area.gpkg AOI_FILE.",
        )
    for i, geom in enumerate(rows):
        if geom is not None and not geom.is_empty and not geom.is_valid:
            reason = shapely.is_valid_reason(geom)
            raise InputError(
                f"feature {i} is not a valid polygon ({reason})",
                where=where,
                fix="Repair it and check the result is the area you mean (QGIS: Fix "
                "geometries; or ogr2ogr -makevalid fixed.gpkg AOI_FILE).",
            )
    parts = shapely.get_parts(frame.geometry.dropna().to_numpy())
    return [g for g in parts if not g.is_empty]


def load_areas(
    paths: Sequence[str | os.PathLike[str]], crs: str | int | CRS | None
) -> BaseGeometry | None:
    """The union of the polygons of several files (a profile's exclusion zones) in ``crs``;
    None when there are no files."""
    if not paths:
        return None
    return shapely.union_all([load_aoi(path, crs) for path in paths])


def _read(path: str, layer: str | int | None) -> gpd.GeoDataFrame:
    import geopandas as gpd
    from pyogrio.errors import DataLayerError, DataSourceError

    if not os.path.exists(path):
        raise InputError("AOI file not found", where=path, fix="Check the path and spelling.")
    try:
        return gpd.read_file(path, layer=layer)
    except (DataSourceError, DataLayerError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        first = first.split("; It might help")[0]  # pyogrio's driver hint does not apply here
        raise InputError(
            f"cannot read as a vector file ({first[:160]})",
            where=path,
            fix="Give a GeoJSON, GeoPackage or Shapefile (with its .shx/.dbf/.prj) of polygons.",
        ) from exc
