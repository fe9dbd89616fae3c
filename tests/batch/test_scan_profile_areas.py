"""A profile's exclusion zones mean what they say: screening a real NEON scene with a trained
classifier finds sites there without the zone and none in it with the zone."""

from __future__ import annotations

import shutil
from pathlib import Path

import geopandas as gpd
import shapely
import yaml
from sqlalchemy import select

from geoscreen.cli.app import main
from geoscreen.imagery.scene import open_scene
from geoscreen.review.schema import runs
from geoscreen.review.store import open_store

PROFILE = Path(__file__).resolve().parents[2] / "geoscreen" / "configs" / "tree_crowns_neon.yaml"


def _sites(db: Path) -> gpd.GeoSeries:
    with open_store(db) as store:
        return store.frame().geometry


def test_no_site_is_found_in_an_exclusion_zone(tree_model: Path, osbs_path: Path,
                                               tmp_path: Path) -> None:  # fmt: skip
    folder = tmp_path / "incoming"
    folder.mkdir()
    shutil.copy(osbs_path, folder / "osbs.tif")
    scene = open_scene(osbs_path)
    left, bottom, right, top = scene.bounds
    zone = shapely.box(left - 1, bottom - 1, (left + right) / 2, top + 1)  # the western half
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    gpd.GeoDataFrame(geometry=[zone], crs=scene.crs).to_file(profiles / "zone.geojson")
    data = yaml.safe_load(PROFILE.read_text(encoding="utf-8"))
    excluding = profiles / "excluding.yaml"
    excluding.write_text(yaml.safe_dump({**data, "exclusions": ["zone.geojson"]}))
    inside = gpd.GeoSeries([zone.buffer(-0.05)], crs=scene.crs).to_crs(4326).iloc[0]
    plain, excluded = tmp_path / "plain.sqlite", tmp_path / "excluded.sqlite"
    assert main(["scan", str(PROFILE), str(folder), "--model", str(tree_model),
                 "--db", str(plain)]) == 0  # fmt: skip
    assert main(["scan", str(excluding), str(folder), "--model", str(tree_model),
                 "--db", str(excluded)]) == 0  # fmt: skip
    everywhere = _sites(plain)
    assert everywhere.intersects(inside).any() and not everywhere.within(inside).all()
    kept = _sites(excluded)
    assert len(kept) and not kept.intersects(inside).any()
    with open_store(excluded) as store, store.read() as conn:  # the run says what it applied
        policy = conn.execute(select(runs.c.policy)).scalar_one()
    assert '"exclusions": ["zone.geojson"]' in policy
