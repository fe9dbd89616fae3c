"""The scenes the store knows, by name, for the review map's imagery layers.

People know a scene by its file name, not by its content id: :func:`scene_name` gives
the file name where the store recorded one (``scenes.uri``), else the name of the file
this server reads it from (``serve --scenes``), else the id itself when it is a path,
else a short form of the id. :class:`SceneCatalog` lists the scenes whose
imagery is on this server and whose footprint meets a map view, so the page asks for
tiles of those scenes only, at the zooms they are served.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from sqlalchemy import select

from geoscreen.review import audit
from geoscreen.review.errors import NotFoundError
from geoscreen.review.schema import scenes
from geoscreen.review.spatial import BBox
from geoscreen.review.store import Store
from geoscreen.web.map_tiles import TileSource

SHORT_ID = 12


@dataclass(frozen=True)
class SceneRow:
    """One row of the store's ``scenes`` table."""

    pk: int
    scene_id: str
    uri: str | None


def scene_name(scene_id: str | None, uri: str | None = None) -> str | None:
    """The scene's file name (from where it was loaded), else a short form of its id."""
    for text in (uri, scene_id):
        if text and ("/" in text or "\\" in text):
            name = PureWindowsPath(text).name if "\\" in text else PurePosixPath(text).name
            if name:
                return name
    if not scene_id:
        return None
    return scene_id if len(scene_id) <= SHORT_ID + 4 else scene_id[:SHORT_ID] + "…"


class SceneCatalog:
    """Scenes of the store with their imagery footprints (read through the tile source)."""

    def __init__(self, store: Store, tiles: TileSource) -> None:
        self.store = store
        self.tiles = tiles

    def rows(self) -> list[SceneRow]:
        """Every scene the store knows."""
        with self.store.read() as conn:
            found = conn.execute(select(scenes.c.id, scenes.c.scene_id, scenes.c.uri)).all()
        return [SceneRow(int(r.id), str(r.scene_id), r.uri) for r in found]

    def row(self, pk: int) -> SceneRow:
        """One scene by its number in the store."""
        with self.store.read() as conn:
            query = select(scenes.c.id, scenes.c.scene_id, scenes.c.uri).where(scenes.c.id == pk)
            found = conn.execute(query).first()
        if found is None:
            raise NotFoundError(f"no scene with number {pk}")
        return SceneRow(int(found.id), str(found.scene_id), found.uri)

    def _name(self, scene_id: str, uri: str | None) -> str:
        if not uri:  # not recorded: the file this server reads it from, if any
            uri = self.tiles.scenes.uri(scene_id)
        return scene_name(scene_id, uri) or scene_id

    def name(self, scene_id: str | None) -> str | None:
        """The name of a scene by its id (the id's short form if the store lacks it)."""
        if not scene_id:
            return None
        with self.store.read() as conn:
            query = select(scenes.c.uri).where(scenes.c.scene_id == scene_id)
            uri = conn.execute(query).scalar()
        return self._name(scene_id, uri)

    def in_view(self, box: BBox) -> list[dict[str, Any]]:
        """Scenes with imagery on this server whose footprint meets ``box``."""
        out = []
        for row in self.rows():
            style = self.tiles.scene_style(row.scene_id, row.uri)
            if style is None:
                continue
            west, south, east, north = style.bounds
            if east < box.minx or west > box.maxx or north < box.miny or south > box.maxy:
                continue
            out.append(
                {
                    "id": row.pk,
                    "name": self._name(row.scene_id, row.uri or style.uri),
                    "tiles": f"/api/scenes/{row.pk}/tiles/{{z}}/{{x}}/{{y}}.png",
                    "minzoom": style.minzoom,
                    "maxzoom": style.maxzoom,
                    "bounds": list(style.bounds),
                }
            )
        return out

    def record_view(self, row: SceneRow, user: str) -> None:
        """Audit that ``user`` looked at a scene's imagery (callers do it once a session)."""
        with self.store.write() as conn:
            audit.append(
                conn,
                actor=user,
                action="view",
                entity="scene",
                entity_id=row.scene_id,
                after={"what": "scene imagery", "scene": self._name(row.scene_id, row.uri)},
            )
