"""One step from a scene's screening result to its candidate sites.

``geoscreen sites extract`` and ``geoscreen scan`` both call :func:`scene_sites`, so
a score map or a set of detected objects becomes sites the same way whichever path
it takes:

- a score map (classification): flagged tiles merged into sites
  (:func:`~geoscreen.sites.extract.extract_sites`);
- objects (detection): one site per object scoring at least the threshold.

Then the profile's areas apply (:func:`apply_profile_areas`): a site outside the
profile's ``aoi`` is dropped, and its ``exclusions`` are cut out of every outline
(a site left empty, or below ``sites.min_area_m2``, is dropped), so no site lies in
an exclusion zone.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import geopandas as gpd
import numpy as np
import shapely

from geoscreen.errors import InputError
from geoscreen.imagery.aoi import load_aoi, load_areas
from geoscreen.imagery.scene import Scene
from geoscreen.profiles import Profile
from geoscreen.sites.extract import extract_sites
from geoscreen.sites.site import STORAGE_CRS, area_m2, normalise
from geoscreen.vision.scoremap import ScoreMap

if TYPE_CHECKING:
    from geoscreen.vision.detect_infer import Objects


def scene_sites(
    result: ScoreMap | Objects,
    profile: Profile,
    scene: Scene,
    *,
    threshold: float | None = None,
    run_id: str | None = None,
    pixel_size_m: float | None = None,
    acquired: datetime | None = None,
    model_sha256: str | None = None,
) -> gpd.GeoDataFrame:
    """The candidate sites of one scene's screening result (see the module docstring).

    ``threshold`` defaults to the profile's; for objects, None keeps every object.
    """
    if isinstance(result, ScoreMap):
        sites = extract_sites(
            result, profile, threshold=threshold, pixel_size_m=pixel_size_m, run_id=run_id,
            acquired=acquired,
        )  # fmt: skip
    else:
        from geoscreen.sites.detections import objects_to_sites

        sites = objects_to_sites(
            result, scene, profile, run_id=run_id, pixel_size_m=pixel_size_m,
            model_sha256=model_sha256,
        )  # fmt: skip
        if threshold is not None:
            sites = sites[sites["score_max"] >= threshold].reset_index(drop=True)
    return apply_profile_areas(sites, profile, scene.uri)


def apply_profile_areas(sites: gpd.GeoDataFrame, profile: Profile, where: str) -> gpd.GeoDataFrame:
    """``sites`` within the profile's AOI, exclusion zones cut out of their outlines."""
    own, excluded = profile.aoi_path(), profile.exclusion_paths()
    if not len(sites) or (own is None and not excluded):
        return sites
    if sites.crs is None:
        raise InputError(
            "the profile names an AOI or exclusion zones, which cannot be placed on an image "
            "without georeference",
            where=where,
            fix="Screen georeferenced imagery, or use a profile without aoi/exclusions.",
        )
    geoms = sites.geometry.to_crs(STORAGE_CRS).to_numpy()
    keep = np.ones(len(sites), dtype=bool)
    if own is not None:
        keep &= shapely.intersects(geoms, load_aoi(own, STORAGE_CRS))
    zones = load_areas(excluded, STORAGE_CRS)
    out = sites.to_crs(STORAGE_CRS)
    cut = (
        np.flatnonzero(shapely.intersects(geoms, zones)) if zones is not None else np.zeros(0, int)
    )
    if len(cut):
        geoms[cut] = shapely.difference(geoms[cut], zones)
        empty = shapely.is_empty(geoms)
        keep &= ~empty
        out["geometry"] = gpd.GeoSeries(geoms, index=out.index, crs=STORAGE_CRS)
        measured = cut[~empty[cut]]
        if measured.size and (out["area_unit"] == "m2").all():
            area = out["area_m2"].to_numpy(dtype=np.float64, copy=True)
            area[measured] = area_m2(gpd.GeoSeries(geoms[measured], crs=STORAGE_CRS))
            out["area_m2"] = area
            keep[measured] &= area[measured] >= profile.sites.min_area_m2
    return normalise(out[keep].to_crs(sites.crs).reset_index(drop=True))
