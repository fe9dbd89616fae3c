"""Offline folium maps: vendored Leaflet, a self-contained page, opt-in basemaps.

Neutral ground for every stage that draws a map (the review map in
:mod:`geoscreen.web.mapping`, the evaluation report in :mod:`geoscreen.evaluate.report`):
it imports no stage. Folium points its scripts and styles at CDNs; the lists below
refer to ``geoscreen-vendor/...`` placeholders instead. A page then either inlines
them (:func:`inline_assets`, for a self-contained ``map.html``) or rewrites them to a
URL prefix served by the review server (:func:`link_assets`).

The vendored files stay in ``geoscreen/web/static/vendor`` (the review server serves
that folder). Licences: Leaflet (BSD-2-Clause), Leaflet.markercluster (MIT),
Leaflet.heat (BSD-2-Clause); the licence files sit beside each asset.
"""

from __future__ import annotations

import base64
import html
import os
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import folium

from geoscreen.errors import ConfigError
from geoscreen.fileio import atomic_write

PLACEHOLDER = "geoscreen-vendor/"

LEAFLET_JS = [("leaflet", PLACEHOLDER + "leaflet/leaflet.js")]
LEAFLET_CSS = [("leaflet_css", PLACEHOLDER + "leaflet/leaflet.css")]
CLUSTER_JS = [("markerclusterjs", PLACEHOLDER + "markercluster/leaflet.markercluster.js")]
CLUSTER_CSS = [
    ("markerclustercss", PLACEHOLDER + "markercluster/MarkerCluster.css"),
    ("markerclusterdefaultcss", PLACEHOLDER + "markercluster/MarkerCluster.Default.css"),
]
HEAT_JS = [("leaflet-heat.js", PLACEHOLDER + "heat/leaflet-heat.js")]

_SCRIPT = re.compile(r'<script src="' + re.escape(PLACEHOLDER) + r'([^"]+)"></script>')
_STYLE = re.compile(r'<link rel="stylesheet" href="' + re.escape(PLACEHOLDER) + r'([^"]+)"\s*/?>')
_CSS_URL = re.compile(r"url\((images/[^)]+\.png)\)")


def vendor_dir() -> Path:
    """Folder holding the vendored assets (``geoscreen/web/static/vendor``)."""
    return Path(str(resources.files("geoscreen") / "web" / "static" / "vendor"))


def _read(relative: str) -> str:
    return (vendor_dir() / relative).read_text(encoding="utf-8")


def _css_with_data_urls(relative: str) -> str:
    """A stylesheet with its ``url(images/x.png)`` references turned into data URLs."""
    folder = (vendor_dir() / relative).parent

    def embed(match: re.Match[str]) -> str:
        data = base64.b64encode((folder / match.group(1)).read_bytes()).decode("ascii")
        return f"url(data:image/png;base64,{data})"

    return _CSS_URL.sub(embed, _read(relative))


def inline_assets(html: str) -> str:
    """Replace placeholder script/style links with the assets' contents."""
    html = _SCRIPT.sub(lambda m: f"<script>{_read(m.group(1))}</script>", html)
    return _STYLE.sub(lambda m: f"<style>{_css_with_data_urls(m.group(1))}</style>", html)


def link_assets(html: str, prefix: str) -> str:
    """Point placeholder links at ``prefix`` (e.g. ``/static/vendor/``) on the serving host."""
    return html.replace(PLACEHOLDER, prefix)


# -- maps ---------------------------------------------------------------------------------
BASEMAPS = {
    "osm": ("https://tile.openstreetmap.org/{z}/{x}/{y}.png", "&copy; OpenStreetMap contributors"),
    "esri-imagery": (
        "https://server.arcgisonline.com/ArcGIS/rest/services/World_Imagery/MapServer/tile/{z}/{y}/{x}",
        "Tiles &copy; Esri",
    ),
}
MAX_ZOOM = 22  # aerial imagery at 0.1 m needs zoom 21; Leaflet's default stops at 18


class ScreeningMap:
    """A folium map whose page is self-contained (inlined assets) unless served."""

    def __init__(self, fmap: folium.Map, notes: Sequence[str] = ()) -> None:
        self.map = fmap
        self.notes = list(notes)

    def html(self, asset_prefix: str | None = None) -> str:
        """The page; assets inlined, or linked under ``asset_prefix`` (e.g. ``/static/vendor/``)."""
        page = self.map.get_root().render()
        return link_assets(page, asset_prefix) if asset_prefix else inline_assets(page)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write a self-contained HTML file (whole or not at all)."""
        page = self.html()
        atomic_write(path, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
        return Path(path)

    def _repr_html_(self) -> str:
        """Inline display in Jupyter: the self-contained page in a sandboxed iframe."""
        doc = html.escape(self.html(), quote=True)
        return f'<iframe srcdoc="{doc}" style="width:100%;height:600px;border:none"></iframe>'


def offline(element: Any, js: list[tuple[str, str]], css: list[tuple[str, str]]) -> Any:
    """``element`` with its scripts and styles pointed at the vendored copies."""
    element.default_js = js
    element.default_css = css
    return element


def base_map(basemap: str | None = None, location: tuple[float, float] = (0.0, 0.0)) -> folium.Map:
    """An empty map with local Leaflet and, only if asked for, a remote basemap."""
    fmap = folium.Map(
        location=list(location), zoom_start=3, max_zoom=MAX_ZOOM, tiles=None, control_scale=True
    )
    offline(fmap, LEAFLET_JS, LEAFLET_CSS)
    if basemap:
        url, attribution = basemap_source(basemap)
        folium.TileLayer(tiles=url, attr=attribution, name="basemap (remote)").add_to(fmap)
    return fmap


def basemap_source(basemap: str) -> tuple[str, str]:
    """The XYZ template and attribution of a named basemap or template; refuses others."""
    url, attribution = BASEMAPS.get(basemap, (basemap, basemap))
    if "{z}" not in url or "{x}" not in url or "{y}" not in url:
        raise ConfigError(
            f"unknown basemap {basemap!r}",
            fix=f"Use {', '.join(BASEMAPS)} or an XYZ template with {{z}}/{{x}}/{{y}}.",
        )
    return url, attribution


def pixel_map() -> folium.Map:
    """An empty map in Leaflet's flat ``Simple`` CRS (for images without georeference),
    with local Leaflet."""
    fmap = folium.Map(crs="Simple", tiles=None, zoom_start=0, location=[0, 0])
    return offline(fmap, LEAFLET_JS, LEAFLET_CSS)
