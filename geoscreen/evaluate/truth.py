"""Ground truth for object-level evaluation: labelled objects as a GeoDataFrame.

With a scene, any label file :func:`geoscreen.labels.load_labels` reads (vector
files in any CRS, CSV boxes/points, Pascal VOC) is placed on it; only positive
labels count as truth. The result is in the scene's CRS, or in pixel
coordinates (no CRS) for images without georeference. Without a scene, a vector
file with a CRS is read as is (every feature is a truth object).
"""

from __future__ import annotations

import os
from pathlib import Path

import geopandas as gpd
import pyogrio.errors

from geoscreen.errors import InputError
from geoscreen.imagery.scene import Scene
from geoscreen.labels import VECTOR_SUFFIXES, load_labels


def load_truth(path: str | os.PathLike[str], scene: Scene | None = None) -> gpd.GeoDataFrame:
    """Truth objects (geometry, ``label`` and, with a scene, ``scene_id``)."""
    source = Path(path)
    if scene is not None:
        labels = load_labels(source, scene).positives()
        frame = labels.frame
        if scene.crs is not None:
            geoms = frame["geometry_crs"].values
            crs = scene.crs
        else:
            geoms, crs = frame.geometry.values, None
        return gpd.GeoDataFrame(
            {"label": frame["label"].to_numpy(), "scene_id": [scene.id] * len(frame)},
            geometry=geoms,
            crs=crs,
        )
    if not source.is_file():
        raise InputError("truth file not found", where=str(source), fix="Check the path.")
    if source.suffix.lower() not in VECTOR_SUFFIXES:
        raise InputError(
            f"{source.suffix or 'this'} truth needs the image it was drawn on",
            where=str(source),
            fix="Give --image SCENE for CSV/Pascal VOC (pixel) labels, or a vector file "
            "(GeoJSON, GeoPackage, Shapefile) with a CRS.",
        )
    try:
        frame = gpd.read_file(source, engine="pyogrio")
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, ValueError) as exc:
        raise InputError(
            f"cannot read the truth file ({str(exc).splitlines()[0][:160]})",
            where=str(source),
            fix="Give a GeoJSON, GeoPackage or Shapefile.",
        ) from None
    if frame.crs is None:
        raise InputError(
            "the truth file has no CRS",
            where=str(source),
            fix="Set its CRS, or give --image SCENE if the coordinates are pixels of that image.",
        )
    frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
    if len(frame) == 0:
        raise InputError("the truth file holds no geometries", where=str(source),
                         fix="Give a file with the labelled objects.")  # fmt: skip
    return frame.reset_index(drop=True)
