"""Evidence chips and imagery tiles of a candidate; every look is in the audit log.

An evidence chip is recorded each time it is served; imagery tiles once per session
and candidate (a look at the imagery is dozens of tiles).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import FileResponse, Response

from geoscreen.review import audit
from geoscreen.review.errors import NotFoundError
from geoscreen.web.routes_candidates import ERRORS, CandidateId
from geoscreen.web.state import State, Who

router = APIRouter(prefix="/api")
PNG = {200: {"content": {"image/png": {}}}, **ERRORS}
Zoom = Annotated[int, Path(ge=0, le=30)]
TileIndex = Annotated[int, Path(ge=0, le=2**31)]


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
    if who.first_view(candidate_id, "imagery"):
        audit.record_view(state.store, candidate_id, user=who.user, what="imagery")
    return Response(png, media_type="image/png")
