"""Folium maps of candidates: styled by review status, offline by default.

Used by ``geoscreen map``, notebooks and the review server. The page loads no
third-party script, style or basemap unless the user opts in with ``basemap``
(``osm``, ``esri-imagery`` or an XYZ URL template): scripts and styles are
inlined from the vendored copies (:mod:`geoscreen.offline_map`) or served by the
review server.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import folium
import numpy as np
from branca.element import Figure, MacroElement
from folium import plugins
from folium.template import Template

from geoscreen.errors import ConfigError
from geoscreen.offline_map import (
    CLUSTER_CSS,
    CLUSTER_JS,
    HEAT_JS,
    ScreeningMap,
    base_map,
    offline,
)

if TYPE_CHECKING:
    import geopandas as gpd

    from geoscreen.imagery.scene import Scene

log = logging.getLogger(__name__)

STATUS_COLOURS = {
    "new": "#1f77b4",
    "in_review": "#ff7f0e",
    "confirmed": "#d62728",
    "rejected": "#7f7f7f",
    "needs_imagery": "#9467bd",
    "escalated": "#6b0f1a",
}
CLUSTER_THRESHOLD = 5000
FIT_MAX_ZOOM = 20  # opening on one small candidate still shows its surroundings
EMBED_EVIDENCE_LIMIT = 200
EvidenceMode = Literal["auto", "embed", "link", "none"]


@dataclass(frozen=True)
class Quicklook:
    """A small PNG of a scene and its bounds ((south, west), (north, east)) for an overlay."""

    name: str
    png: bytes
    bounds: tuple[tuple[float, float], tuple[float, float]]


class LeafletPopup(MacroElement):
    """A popup bound with plain Leaflet.

    folium's ``Popup`` builds its content with jQuery (``$(...)``), which the offline
    page does not carry; Leaflet takes an HTML string directly. The string is a JSON
    literal with ``<`` and ``>`` escaped, so the content cannot end the script element.
    """

    _template = Template(
        """
        {% macro script(this, kwargs) %}
        {{ this._parent.get_name() }}.bindPopup({{ this.literal }},
            {"maxWidth": {{ this.max_width }}});
        {% endmacro %}
        """
    )

    def __init__(self, content: str, max_width: int = 320) -> None:
        super().__init__()
        self._name = "LeafletPopup"
        self.content = content
        self.literal = json.dumps(content).replace("<", "\\u003c").replace(">", "\\u003e")
        self.max_width = int(max_width)


def build_map(
    candidates: gpd.GeoDataFrame | None = None,
    *,
    footprints: gpd.GeoDataFrame | None = None,
    quicklooks: Sequence[Quicklook] = (),
    heat: bool = True,
    basemap: str | None = None,
    cluster_threshold: int = CLUSTER_THRESHOLD,
    evidence: EvidenceMode = "auto",
    evidence_base: str | os.PathLike[str] | None = None,
) -> ScreeningMap:
    """Candidates by status and profile, scene footprints, a score heat layer, quicklooks.

    The view opens on the candidates (on the imagery when there are none); the
    quicklooks lie under them, one layer each, switched in the layer control.

    ``candidates`` is a GeoDataFrame in any CRS (reprojected to EPSG:4326) with a
    geometry and, where known: ``status``, ``score``/``score_max``, ``profile``,
    ``profile_version``, ``model_sha256``, ``first_seen``/``last_seen``/``acquired``,
    ``evidence_path``, ``history`` (list of strings). Above ``cluster_threshold``
    candidates are drawn as clustered points and a note warns about page size.
    """
    notes: list[str] = []
    fmap = base_map(basemap)
    frame = _prepare(candidates)
    bounds: list[list[float]] = []  # of the imagery; the candidates' win when there are any
    for look in quicklooks:
        folium.raster_layers.ImageOverlay(
            image="data:image/png;base64," + base64.b64encode(look.png).decode("ascii"),
            bounds=[list(look.bounds[0]), list(look.bounds[1])],
            name=f"imagery: {look.name}",
            opacity=1.0,
        ).add_to(fmap)
        bounds += [list(look.bounds[0]), list(look.bounds[1])]
    if footprints is not None and len(footprints):
        prints = footprints.to_crs("EPSG:4326") if footprints.crs else footprints
        folium.GeoJson(
            prints.__geo_interface__,
            name="scene footprints",
            style_function=lambda _f: {"color": "#333333", "weight": 1, "fill": False},
        ).add_to(fmap)
        b = prints.total_bounds
        bounds += [[b[1], b[0]], [b[3], b[2]]]
    if frame is not None and len(frame):
        mode = evidence
        if mode == "auto":
            mode = "embed" if len(frame) <= EMBED_EVIDENCE_LIMIT else "link"
        popups = [_popup(row, mode, evidence_base) for row in frame.to_dict("records")]
        if len(frame) > cluster_threshold:
            notes.append(
                f"{len(frame)} candidates: drawn as clustered points; the file is large, "
                "use the review server for smooth browsing"
            )
            _clustered(fmap, frame, popups)
        else:
            _polygons(fmap, frame, popups)
        if heat:
            _heat(fmap, frame)
        b = frame.total_bounds
        bounds = [[b[1], b[0]], [b[3], b[2]]]
        _legend(fmap, sorted(set(frame["status"])))
    if bounds:
        arr = np.array(bounds)
        corners = [arr.min(axis=0).tolist(), arr.max(axis=0).tolist()]
        fmap.fit_bounds(corners, padding=(24, 24), max_zoom=FIT_MAX_ZOOM)
    folium.LayerControl(collapsed=False).add_to(fmap)
    for note in notes:
        log.warning(note)
    return ScreeningMap(fmap, notes)


def _prepare(candidates: gpd.GeoDataFrame | None) -> gpd.GeoDataFrame | None:
    if candidates is None:
        return None
    frame = candidates.to_crs("EPSG:4326") if candidates.crs else candidates.copy()
    if "status" not in frame:
        frame["status"] = "new"
    if "score" not in frame:
        frame["score"] = frame.get("score_max", np.nan)
    if "profile" not in frame:
        frame["profile"] = "unknown profile"
    return frame


def _popup(row: dict[str, Any], evidence: str, base: str | os.PathLike[str] | None) -> str:
    esc = html.escape
    lines = [f"<b>matches profile {esc(str(row.get('profile')))}</b>"]
    if row.get("profile_version"):
        lines[0] += f" v{esc(str(row['profile_version']))}"
    score = row.get("score")
    if score is not None and not (isinstance(score, float) and np.isnan(score)):
        lines.append(f"score {float(score):.3f}")
    lines.append(f"review status: {esc(str(row.get('status')))}")
    for key in ("site_id", "id", "model_sha256", "acquired", "first_seen", "last_seen"):
        value = row.get(key)
        if value is not None and str(value) not in ("", "nan", "NaT", "None"):
            shown = str(value)[:12] if key == "model_sha256" else str(value)
            lines.append(f"{key.replace('_', ' ')}: {esc(shown)}")
    history = row.get("history")
    if isinstance(history, list | tuple) and history:
        lines.append("history:<br>" + "<br>".join(esc(str(h)) for h in history))
    chip = row.get("evidence_path")
    if chip and evidence != "none":
        lines.append(_evidence_html(str(chip), evidence, base))
    return "<br>".join(lines)


def _evidence_html(chip: str, mode: str, base: str | os.PathLike[str] | None) -> str:
    path = Path(chip)
    if base is not None and not path.is_absolute():
        path = Path(base) / path
    if mode == "embed" and path.is_file():
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f'<img src="data:image/png;base64,{data}" style="max-width:256px">'
    return f'<a href="{html.escape(chip)}">evidence chip</a>'


def _polygons(fmap: folium.Map, frame: gpd.GeoDataFrame, popups: list[str]) -> None:
    groups: dict[tuple[str, str], folium.FeatureGroup] = {}
    for (_, row), popup in zip(frame.iterrows(), popups, strict=True):
        key = (str(row["profile"]), str(row["status"]))
        if key not in groups:
            groups[key] = folium.FeatureGroup(name=f"{key[0]}: {key[1]}")
            groups[key].add_to(fmap)
        colour = STATUS_COLOURS.get(key[1], "#000000")
        shape = folium.GeoJson(
            row.geometry.__geo_interface__,
            style_function=lambda _f, c=colour: {"color": c, "weight": 2, "fillOpacity": 0.25},
        )
        LeafletPopup(popup).add_to(shape)
        shape.add_to(groups[key])


def _clustered(fmap: folium.Map, frame: gpd.GeoDataFrame, popups: list[str]) -> None:
    centres = frame.geometry.representative_point()
    callback = (
        "function (row) { var m = L.circleMarker(new L.LatLng(row[0], row[1]),"
        " {color: row[2], radius: 6, weight: 2}); m.bindPopup(row[3]); return m; }"
    )
    for status in sorted(set(frame["status"])):
        chosen = (frame["status"] == status).to_numpy()
        colour = STATUS_COLOURS.get(status, "#000000")
        data = [
            [p.y, p.x, colour, popup]
            for p, popup, keep in zip(centres, popups, chosen, strict=True)
            if keep
        ]
        cluster = plugins.FastMarkerCluster(data, callback=callback, name=f"{status} (clustered)")
        offline(cluster, CLUSTER_JS, CLUSTER_CSS).add_to(fmap)


def _heat(fmap: folium.Map, frame: gpd.GeoDataFrame) -> None:
    centres = frame.geometry.representative_point()
    scores = frame["score"].fillna(0.5).clip(0, 1).astype(float)
    data = [[p.y, p.x, s] for p, s in zip(centres, scores, strict=True)]
    layer = plugins.HeatMap(data, name="score heat", show=False, radius=18)
    offline(layer, HEAT_JS, []).add_to(fmap)


def _legend(fmap: folium.Map, statuses: list[str]) -> None:
    rows = "".join(
        f'<div><span style="display:inline-block;width:12px;height:12px;margin-right:6px;'
        f'background:{STATUS_COLOURS.get(s, "#000")}"></span>{html.escape(s)}</div>'
        for s in statuses
    )
    box = (
        '<div style="position:fixed;bottom:64px;left:12px;z-index:1000;background:white;'
        'padding:8px;border:1px solid #999;font:12px sans-serif">'
        f"<b>review status</b><br><i>candidates match a profile; people decide</i>{rows}</div>"
    )
    root = cast(Figure, fmap.get_root())
    root.html.add_child(folium.Element(box))


def quicklook(scene: Scene, max_size: int = 1024, bands: Sequence[str] | None = None) -> Quicklook:
    """An RGB quicklook of ``scene`` from overviews (or a decimated read), in Web Mercator.

    Stretched per band to its 2-98 percentiles of valid pixels; invalid pixels
    are transparent.
    """
    from PIL import Image
    from rasterio.warp import transform_bounds

    if scene.crs is None:
        raise ConfigError(
            "a quicklook needs a georeferenced scene",
            where=scene.uri,
            fix="Assign the raster's CRS (gdal_edit.py -a_srs EPSG:XXXX RASTER) or leave it out.",
        )
    merc = scene.reproject("EPSG:3857")
    names = list(bands) if bands else rgb_bands(scene)
    indexes = merc.band_indexes(names)
    scale = max(merc.width, merc.height) / max_size
    out_h, out_w = (
        max(1, round(merc.height / max(scale, 1))),
        max(1, round(merc.width / max(scale, 1))),
    )
    with merc.open() as src:
        data = src.read(indexes, out_shape=(len(indexes), out_h, out_w)).astype(np.float32)
        mask = src.dataset_mask(out_shape=(out_h, out_w)) > 0
    rgb = np.zeros((out_h, out_w, 4), dtype=np.uint8)
    for i in range(min(3, len(indexes))):
        band = data[i]
        valid = band[mask]
        lo, hi = np.percentile(valid, (2, 98)) if valid.size else (0.0, 1.0)
        rgb[..., i] = np.clip((band - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
    if len(indexes) < 3:
        rgb[..., 1] = rgb[..., 2] = rgb[..., 0]
    rgb[..., 3] = np.where(mask, 255, 0)
    buffer = io.BytesIO()
    Image.fromarray(rgb, mode="RGBA").save(buffer, format="PNG")
    west, south, east, north = transform_bounds(merc.crs, "EPSG:4326", *merc.bounds)
    return Quicklook(Path(scene.uri).name, buffer.getvalue(), ((south, west), (north, east)))


def rgb_bands(scene: Scene) -> list[str]:
    """red, green, blue when the scene has them, else its first band."""
    rgb = ["red", "green", "blue"]
    try:
        scene.band_indexes(rgb)
    except ConfigError:
        return [scene.band_names[0]]
    return rgb
