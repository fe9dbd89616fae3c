"""Candidates: by viewport, the review queue, one candidate, decisions and notes.

Decisions go through :func:`geoscreen.review.workflow.set_status` with the version the
reviewer saw: if someone else changed the candidate meanwhile, nothing is written and
the answer (409) carries the candidate as it is now.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from geoscreen.review.errors import AccessError, ConflictError
from geoscreen.review.records import STATUSES, Candidate
from geoscreen.review.spatial import BBox
from geoscreen.review.workflow import add_note, set_status
from geoscreen.web.api import NO_STORE, NoteRequest, QueueOrder, Status, StatusRequest
from geoscreen.web.api import error_response as error
from geoscreen.web.auth import Session
from geoscreen.web.map_tiles import clip
from geoscreen.web.model_history import score_history
from geoscreen.web.state import ServerState, State, Who

router = APIRouter(prefix="/api")
CandidateId = Annotated[int, Path(ge=1, le=2**62, description="Candidate id.")]
Statuses = Annotated[list[Status], Query(max_length=len(STATUSES))]
Profile = Annotated[str | None, Query(min_length=1, max_length=64)]
_NUMBER = r"-?[0-9]{1,3}(\.[0-9]{1,12})?"
BBOX_PATTERN = f"^{_NUMBER}(,{_NUMBER}){{3}}$"
ERRORS: dict[int | str, dict[str, Any]] = {404: {}, 422: {}}


def payload(state: ServerState, found: Candidate, who: Session) -> dict[str, Any]:
    """A candidate with its history, its scores (newest first, with the model of each),
    threshold and where its evidence and imagery are; for supervisors also the decisions
    on its profile since the current model (``since_model``; None for others)."""
    style = state.tiles.style(found)
    imagery = None
    if style is not None:  # the window cut to the scene: the page asks for no empty tiles
        imagery = {
            "tiles": f"/api/candidates/{found.id}/tiles/{{z}}/{{x}}/{{y}}.png",
            "minzoom": style.minzoom,
            "maxzoom": style.maxzoom,
            "window": list(clip(state.tiles.window(found), style.bounds)),
        }
    history = [
        {**event.to_dict(), "text_line": event.describe()}
        for event in state.store.history(found.id)
    ]
    return {
        "candidate": found.to_dict(),
        "threshold": state.index.threshold(found.profile),
        "history": history,
        "scores": score_history(state.store, found.id),
        "since_model": (
            state.models.since_model(state.store, found.profile)
            if who.has_role("supervisor")
            else None
        ),
        "evidence": f"/api/candidates/{found.id}/evidence" if state.evidence_file(found) else None,
        "imagery": imagery,
        "scene_name": state.scenes.name(found.scene_id),
        # What the scan that last found it warned: its scene far from the training region
        # or statistics, its model no better than its baselines (each line says which).
        "scene_warnings": state.store.scene_warnings(found.id),
    }


@router.get("/summary")
def summary(state: State) -> dict[str, Any]:
    """How many candidates per status, the profiles, and the area they cover."""
    state.index.sync()
    return state.index.summary()


@router.get("/candidates", responses=ERRORS)
async def in_view(
    state: State,
    bbox: Annotated[str, Query(pattern=BBOX_PATTERN, description="minlon,minlat,maxlon,maxlat")],
    zoom: Annotated[int, Query(ge=0, le=24)] = 0,
    status: Statuses = [],  # noqa: B006 (FastAPI copies defaults)
    profile: Profile = None,
    max_points: Annotated[int, Query(ge=1, le=5000)] = 2000,
) -> JSONResponse:
    """Candidates in a map viewport: points, or grid clusters when there are too many.

    Answered on the event loop (a few milliseconds of numpy, no thread hand-off); only
    catching up with the store goes to a worker thread.
    """
    box = BBox.parse(bbox)
    if state.index.due():
        await run_in_threadpool(state.index.sync)
    found = state.index.view(
        box, zoom=zoom, statuses=tuple(status), profile=profile, max_points=max_points
    )
    return JSONResponse(found, headers=NO_STORE)


@router.get("/queue", responses=ERRORS)
def queue(
    state: State,
    order: QueueOrder = "score",
    status: Statuses = [],  # noqa: B006
    profile: Profile = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> dict[str, Any]:
    """The review queue (default: new and in review), by score, uncertainty or newest."""
    state.index.sync()
    statuses = tuple(status) or ("new", "in_review")
    total, items = state.index.queue(
        order, statuses=statuses, profile=profile, limit=limit, offset=offset
    )
    return {"total": total, "order": order, "offset": offset, "items": [i.to_dict() for i in items]}


@router.get("/candidates/{candidate_id}", responses=ERRORS)
def candidate(candidate_id: CandidateId, state: State, who: Who) -> dict[str, Any]:
    """One candidate with its history and score history."""
    return payload(state, state.store.candidate(candidate_id), who)


@router.post("/candidates/{candidate_id}/status", responses={**ERRORS, 403: {}, 409: {}})
def decide(
    candidate_id: CandidateId,
    body: StatusRequest,
    state: State,
    who: Who,
) -> JSONResponse:
    """Change the status (analyst or above; escalation needs a second supervisor)."""
    if not who.has_role("analyst"):
        raise AccessError(f"{who.user} is a {who.role}: viewers cannot change a status")
    try:
        changed = set_status(
            state.store,
            candidate_id,
            body.status,
            user=who.user,
            reason=body.reason,
            expected_version=body.expected_version,
            claim=True,
        )
    except ConflictError as exc:
        now = payload(state, state.store.candidate(candidate_id), who)
        return error(409, exc.what, exc.fix, current=now)
    state.index.set_status(changed.id, changed.status)
    return JSONResponse(payload(state, changed, who), headers=NO_STORE)


@router.post("/candidates/{candidate_id}/notes", responses={**ERRORS, 403: {}})
def note(
    candidate_id: CandidateId,
    body: NoteRequest,
    state: State,
    who: Who,
) -> JSONResponse:
    """Add a note (analyst or above)."""
    if not who.has_role("analyst"):
        raise AccessError(f"{who.user} is a {who.role}: viewers cannot add notes")
    add_note(state.store, candidate_id, body.text, user=who.user)
    return JSONResponse(payload(state, state.store.candidate(candidate_id), who), headers=NO_STORE)
