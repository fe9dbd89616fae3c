"""Sites from detected objects: one site per object, written per scene.

A detector's merged objects (:class:`~geoscreen.vision.detect_infer.Objects`, boxes in
scene pixels) become a site table with the columns of :mod:`geoscreen.sites.site`:
geometry in EPSG:4326 (pixel coordinates for images without georeference), area in
square metres (square pixels when the pixel size is unknown).

``screen`` writes two tables per scene (:func:`write_detection_sites`): the *sites*, the
objects scoring at least the threshold in force (what matches the profile, as ``scan``
loads and ``sites extract`` cuts for classifiers), and every object the detector kept,
with that threshold in a ``threshold`` column: the ranking that evaluation's AP needs
and another threshold can be chosen from. Until session 21 the sites file held every
object, down to scores of 0.005, and ``review load`` queued them all.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path

import geopandas as gpd

from geoscreen.imagery.scene import Scene
from geoscreen.profiles import Profile
from geoscreen.sites.extract import run_columns, site_ids
from geoscreen.sites.site import (
    STORAGE_CRS,
    THRESHOLD_COLUMN,
    area_m2,
    empty_sites,
    normalise,
    write_sites,
)
from geoscreen.vision.boxes import box_areas_m2, boxes_to_map
from geoscreen.vision.detect_infer import Objects
from geoscreen.vision.inputs import scene_resolution_m
from geoscreen.vision.runtime import gc_paused

SITES_FILE = "sites.parquet"
SITES_GPKG = "sites.gpkg"
OBJECTS_FILE = "objects.parquet"


@gc_paused()  # one geometry per object: tens of thousands in a dense scene
def objects_to_sites(
    objects: Objects,
    scene: Scene,
    profile: Profile,
    *,
    run_id: str | None = None,
    model_sha256: str | None = None,
    pixel_size_m: float | None = None,
    seen_at: datetime | None = None,
) -> gpd.GeoDataFrame:
    """A site table (:mod:`geoscreen.sites.site`), one row per object, best first."""
    crs = STORAGE_CRS if scene.georeferenced else None
    if len(objects) == 0:
        return empty_sites(crs)
    run = run_id or str(objects.meta.get("run_id") or uuid.uuid4().hex[:12])
    geoms = boxes_to_map(objects.boxes, scene)
    if scene.georeferenced:
        area, unit = area_m2(geoms), "m2"
    else:
        size = pixel_size_m
        if size is None and profile.imagery.resolution_m is not None:
            size = scene_resolution_m(profile, scene)
        area = box_areas_m2(objects.boxes, (size, size) if size else (1.0, 1.0))
        unit = "m2" if size else "px2"
    frame = gpd.GeoDataFrame(
        {
            "site_id": site_ids(profile.name, scene.id, run, objects.boxes),
            "score_max": objects.score_max,
            "score_mean": objects.score_mean,
            "tile_count": objects.tile_count,
            "area_m2": area,
            "area_unit": unit,
            **run_columns(
                scene,
                profile,
                profile_version=profile.version,
                model_sha256=model_sha256 or objects.meta.get("model_sha256"),
                run_id=run,
                acquired=scene.acquired,
                seen_at=seen_at,
            ),
        },
        geometry=geoms.values,
        crs=crs,
    )
    return normalise(frame)


def write_detection_sites(
    frame: gpd.GeoDataFrame, out_dir: str | Path, threshold: float
) -> dict[str, Path]:
    """Write into ``out_dir``, atomically, the objects of ``frame`` scoring at least
    ``threshold`` as ``sites.parquet`` (GeoParquet) and ``sites.gpkg``, and every object,
    with ``threshold`` in its own column, as ``objects.parquet`` (module docstring)."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    sites = frame[frame["score_max"] >= threshold].reset_index(drop=True)
    every = frame.assign(**{THRESHOLD_COLUMN: float(threshold)})
    return {
        "sites": write_sites(sites, folder / SITES_FILE),
        "gpkg": write_sites(sites, folder / SITES_GPKG),
        "objects": write_sites(every, folder / OBJECTS_FILE),
    }
