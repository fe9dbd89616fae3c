"""The folium map layer: offline by default, styled by review status, honest wording."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from PIL import Image
from shapely.geometry import box

from geoscreen.errors import ConfigError
from geoscreen.imagery.scene import open_scene
from geoscreen.samples import sample_path
from geoscreen.web.mapping import STATUS_COLOURS, build_map, quicklook


class _Links(HTMLParser):
    """Collects every src/href an HTML page would load."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value and (name == "src" or (tag == "link" and name == "href")):
                self.loads.append(value)


def _loads(page: str) -> list[str]:
    parser = _Links()
    parser.feed(page)
    return parser.loads


@pytest.fixture(scope="module")
def candidates() -> gpd.GeoDataFrame:
    rng = np.random.default_rng(0)
    west, south = -105.7, 40.3
    geoms = [box(west + dx, south + dy, west + dx + 0.01, south + dy + 0.01)
             for dx, dy in rng.uniform(0, 0.2, (12, 2))]  # fmt: skip
    return gpd.GeoDataFrame(
        {
            "status": ["new", "in_review", "confirmed", "rejected"] * 3,
            "score": rng.random(12),
            "profile": ["brick_kilns_s2"] * 6 + ["new_structures_rgb"] * 6,
            "profile_version": "0.1.0",
            "history": [["2026-01-01 created by scan"]] * 12,
        },
        geometry=geoms,
        crs="EPSG:4326",
    )


def test_map_loads_nothing_from_other_hosts(candidates: gpd.GeoDataFrame) -> None:
    page = build_map(candidates).html()
    loads = _loads(page)
    assert all(not re.match(r"^(https?:)?//", url) for url in loads), loads
    assert "L.map(" in page and "leaflet" in page.lower()
    assert "tile.openstreetmap.org" not in page


def test_map_served_mode_links_assets_under_prefix(candidates: gpd.GeoDataFrame) -> None:
    loads = _loads(build_map(candidates).html(asset_prefix="/static/vendor/"))
    assert "/static/vendor/leaflet/leaflet.js" in loads
    assert all(url.startswith("/static/vendor/") for url in loads), loads


def test_basemap_is_opt_in(candidates: gpd.GeoDataFrame) -> None:
    page = build_map(candidates, basemap="osm").html()
    assert "tile.openstreetmap.org" in page
    with pytest.raises(ConfigError, match="basemap"):
        build_map(candidates, basemap="not-a-template")


def test_layers_per_profile_and_status_with_legend(candidates: gpd.GeoDataFrame) -> None:
    page = build_map(candidates).html()
    for profile in ("brick_kilns_s2", "new_structures_rgb"):
        for status in ("new", "in_review", "confirmed", "rejected"):
            assert f"{profile}: {status}" in page
    assert STATUS_COLOURS["confirmed"] in page
    assert "review status" in page
    assert "matches profile brick_kilns_s2" in page
    assert "trafficking" not in page.lower()


def test_large_layers_are_clustered_with_a_note() -> None:
    rng = np.random.default_rng(1)
    points = gpd.points_from_xy(rng.uniform(0, 1, 60), rng.uniform(0, 1, 60))
    frame = gpd.GeoDataFrame({"score": rng.random(60)}, geometry=points, crs="EPSG:4326")
    result = build_map(frame, cluster_threshold=50)
    assert result.notes and "clustered" in result.notes[0]
    page = result.html()
    assert "markerClusterGroup" in page
    assert all(not re.match(r"^(https?:)?//", url) for url in _loads(page))


def test_quicklook_and_footprint_on_real_scene(tmp_path: Path) -> None:
    scene = open_scene(sample_path("rmnp_rgb"))
    look = quicklook(scene, max_size=256)
    (tmp_path / "q.png").write_bytes(look.png)
    image = Image.open(tmp_path / "q.png")
    assert image.mode == "RGBA" and max(image.size) <= 256
    alpha = np.asarray(image)[..., 3]
    assert 0 < (alpha > 0).mean() < 1  # the scene's nodata corners are transparent
    (south, west), (north, east) = look.bounds
    fw, fs, fe, fn = scene.footprint.bounds
    assert abs(west - fw) < 0.01 and abs(east - fe) < 0.01
    assert abs(south - fs) < 0.01 and abs(north - fn) < 0.01
    footprints = gpd.GeoDataFrame(geometry=[scene.footprint], crs="EPSG:4326")
    out = build_map(None, footprints=footprints, quicklooks=[look]).save(tmp_path / "m.html")
    page = out.read_text(encoding="utf-8")
    assert "data:image/png;base64," in page and "scene footprints" in page


def test_evidence_chip_embedded_in_popup(tmp_path: Path, candidates: gpd.GeoDataFrame) -> None:
    chip = tmp_path / "chip.png"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(chip)
    frame = candidates.head(2).copy()
    frame["evidence_path"] = str(chip)
    assert "data:image/png;base64," in build_map(frame).html()
    linked = build_map(frame, evidence="link").html()
    assert 'href=\\"' + str(chip) in linked  # inside the popup's JSON string
