"""Evidence chips and imagery tiles; every look is in the audit log.

An evidence chip is recorded each time it is served; imagery tiles once per session
and candidate, or scene (a look at the imagery is dozens of tiles). A tile with nothing
in it (outside the site's window or the scene) is answered "204 No Content", which the
browser may keep: cheap, and no error in the page.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import FileResponse, Response

from geoscreen.review import audit
from geoscreen.review.errors import NotFoundError
from geoscreen.review.spatial import BBox
from geoscreen.web.routes_candidates import BBOX_PATTERN, ERRORS, CandidateId
from geoscreen.web.state import State, Who

router = APIRouter(prefix="/api")
PNG = {200: {"content": {"image/png": {}}}, 204: {}, **ERRORS}
Zoom = Annotated[int, Path(ge=0, le=30)]
TileIndex = Annotated[int, Path(ge=0, le=2**31)]
SceneNumber = Annotated[int, Path(ge=1, le=2**62, description="Scene number in the store.")]
EMPTY_CACHE = {"Cache-Control": "private, max-age=3600"}


def _png(png: bytes | None) -> Response:
    if png is None:
        return Response(status_code=204, headers=EMPTY_CACHE)
    return Response(png, media_type="image/png")


@router.get("/candidates/{candidate_id}/evidence", response_class=FileResponse, responses=PNG)
def evidence(
    candidate_id: CandidateId,
    state: State,
    who: Who,
) -> FileResponse:
    """The evidence chip (PNG)."""
    found = state.store.candidate(candidate_id)
    chip = state.evidence_file(found)
    if chip is None:
        raise NotFoundError(f"candidate {candidate_id} has no evidence chip on this server")
    audit.record_view(state.store, candidate_id, user=who.user, what="evidence chip")
    return FileResponse(chip, media_type="image/png")


@router.get(
    "/candidates/{candidate_id}/tiles/{z}/{x}/{y}.png", response_class=Response, responses=PNG
)
def tile(
    candidate_id: CandidateId,
    z: Zoom,
    x: TileIndex,
    y: TileIndex,
    state: State,
    who: Who,
) -> Response:
    """One Web Mercator tile of the candidate's scene, near the site."""
    found = state.store.candidate(candidate_id)
    png = state.tiles.tile(found, z, x, y)
    if png is not None and who.first_view(candidate_id, "imagery"):
        audit.record_view(state.store, candidate_id, user=who.user, what="imagery")
    return _png(png)


@router.get("/scenes", responses=ERRORS)
def scenes_in_view(
    state: State,
    bbox: Annotated[str, Query(pattern=BBOX_PATTERN, description="minlon,minlat,maxlon,maxlat")],
) -> dict[str, Any]:
    """Scenes with imagery on this server in a map view: name, tile URL, zooms, footprint."""
    return {"scenes": state.scenes.in_view(BBox.parse(bbox))}


@router.get("/scenes/{scene}/tiles/{z}/{x}/{y}.png", response_class=Response, responses=PNG)
def scene_tile(
    scene: SceneNumber,
    z: Zoom,
    x: TileIndex,
    y: TileIndex,
    state: State,
    who: Who,
) -> Response:
    """One Web Mercator tile of a scene (the review map's imagery layer)."""
    row = state.scenes.row(scene)
    png = state.tiles.scene_tile(row.scene_id, z, x, y)
    if png is not None and who.first_view(scene, "scene imagery"):
        state.scenes.record_view(row, who.user)
    return _png(png)
