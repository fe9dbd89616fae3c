"""The review page and the API description (both behind the login)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse

from geoscreen.review.records import STATUSES
from geoscreen.web.candidate_index import QUEUE_ORDERS
from geoscreen.web.mapping import STATUS_COLOURS
from geoscreen.web.state import State, Who

router = APIRouter()
KEYS = {"j": "next", "k": "previous", "c": "confirmed", "r": "rejected", "n": "needs_imagery",
        "e": "escalated"}  # fmt: skip


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def review_page(request: Request, state: State, who: Who) -> Response:
    """The map, the queue and the side panel."""
    config = {
        "user": who.user,
        "role": who.role,
        "canReview": who.has_role("analyst"),
        "canEscalate": who.has_role("supervisor"),
        "statuses": list(STATUSES),
        "colours": STATUS_COLOURS,
        "orders": list(QUEUE_ORDERS),
        "keys": KEYS,
    }
    context = {"csrf": who.csrf, "config": config, "user": who.user, "role": who.role}
    return state.templates.TemplateResponse(request, "review.html", context)


@router.get("/api/openapi.json", include_in_schema=False)
def openapi(request: Request) -> dict[str, Any]:
    """The OpenAPI description of this API."""
    return request.app.openapi()
