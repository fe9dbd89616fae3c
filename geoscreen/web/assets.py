"""Vendored web assets (Leaflet and two plugins), so maps make no third-party requests.

Folium points its scripts and styles at CDNs; :func:`offline_js` / :func:`offline_css`
give replacement lists that refer to ``geoscreen-vendor/...`` placeholders. A page
then either inlines them (:func:`inline_assets`, for a self-contained ``map.html``)
or rewrites them to a URL prefix served by the review server
(:func:`link_assets`).

Licences: Leaflet (BSD-2-Clause), Leaflet.markercluster (MIT), Leaflet.heat
(BSD-2-Clause); the licence files sit beside each asset.
"""

from __future__ import annotations

import base64
import re
from importlib import resources
from pathlib import Path

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
