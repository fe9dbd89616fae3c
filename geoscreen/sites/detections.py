"""Sites from detected objects: one site per object, and ``screen`` for detection profiles.

A detector's merged objects (:class:`~geoscreen.vision.detect_infer.Objects`, boxes in
scene pixels) become a site table with the columns of :mod:`geoscreen.sites.site`:
geometry in EPSG:4326 (pixel coordinates for images without georeference), area in
square metres (square pixels when the pixel size is unknown).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import geopandas as gpd

from geoscreen.imagery.aoi import load_aoi
from geoscreen.imagery.scene import Scene, open_scene
from geoscreen.profiles import Profile
from geoscreen.sites.extract import run_columns, site_ids
from geoscreen.sites.site import STORAGE_CRS, area_m2, empty_sites, normalise, write_sites
from geoscreen.vision.boxes import box_areas_m2, boxes_to_map, boxes_to_polygons
from geoscreen.vision.detect_infer import (
    DetectOptions,
    Objects,
    check_detector_fits,
    decision_threshold,
    detect_scene,
)
from geoscreen.vision.detector import load_detector
from geoscreen.vision.infer import new_run
from geoscreen.vision.inputs import scene_resolution_m

SITES_FILE = "sites.parquet"
SITES_GPKG = "sites.gpkg"


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
            "site_id": site_ids(profile.name, scene.id, run, boxes_to_polygons(objects.boxes)),
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


def write_detection_sites(frame: gpd.GeoDataFrame, out_dir: str | Path) -> dict[str, Path]:
    """Write ``sites.parquet`` (GeoParquet) and ``sites.gpkg`` into ``out_dir``, atomically."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "sites": write_sites(frame, folder / SITES_FILE),
        "gpkg": write_sites(frame, folder / SITES_GPKG),
    }


def screen_detection(
    profile: Profile,
    scene_paths: Sequence[str],
    model_dir: str | Path,
    out: str | Path,
    *,
    aoi: str | None = None,
    opts: DetectOptions | None = None,
    echo: Callable[[str], None] = print,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``geoscreen screen`` for a detection profile: sites per scene in ``out/<scene id>/``.

    Every scene, AOI and the model are checked before anything is written. Returns the
    run's metadata and one summary per scene (for ``screen.json``).
    """
    opts = opts or DetectOptions(progress=True)
    loaded = load_detector(model_dir)
    scenes = [open_scene(s, sensor=profile.imagery.sensor) for s in scene_paths]
    for scene in scenes:
        check_detector_fits(loaded, profile, scene)
    areas = [load_aoi(aoi, scene.crs) if aoi else None for scene in scenes]
    meta = new_run(profile, loaded.sha256, task="detect")
    run_id = meta["run_id"]
    threshold, source = decision_threshold(profile, loaded.card)
    results = []
    for scene, area in zip(scenes, areas, strict=True):
        objects = detect_scene(loaded, profile, scene, opts, aoi=area, meta=meta)
        sites = objects_to_sites(
            objects, scene, profile, run_id=run_id, model_sha256=loaded.sha256,
            pixel_size_m=opts.pixel_size_m,
        )  # fmt: skip
        files = write_detection_sites(sites, Path(out) / scene.id)
        shown = int((sites["score_max"] >= threshold).sum())
        echo(
            f"{scene.uri}: {objects.meta['tiles']} tiles, {len(sites)} objects "
            f"({shown} scoring >= {threshold:g}, threshold from the {source}) -> {files['sites']}"
        )
        results.append(
            {
                "scene": scene.uri,
                "scene_id": scene.id,
                "tiles": objects.meta["tiles"],
                "objects": len(sites),
                "threshold": threshold,
                "threshold_source": source,
                "objects_at_threshold": shown,
                "files": {k: str(v) for k, v in files.items()},
            }
        )
    return meta, results
