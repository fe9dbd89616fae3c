"""Request bodies and error responses of the review server's JSON API.

Errors are ``{"error": message, "fix": how to fix or null}`` with a status code per
kind: unknown candidate 404, missing role 403, stale version 409 (with the candidate
as it is now), refused transition or bad value 422, store unavailable 503. A request
that does not match the schema (422) names the fields and what is wrong with them,
never the values sent (they may be passwords).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from geoscreen.errors import ConfigError, GeoscreenError
from geoscreen.review.errors import (
    AccessError,
    ConflictError,
    NotFoundError,
    StoreError,
    TransitionError,
)
from geoscreen.review.workflow import MAX_TEXT

log = logging.getLogger(__name__)
Status = Literal["new", "in_review", "confirmed", "rejected", "needs_imagery", "escalated"]
QueueOrder = Literal["score", "uncertainty", "newest"]
NO_STORE = {"Cache-Control": "no-store"}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginRequest(_Body):
    """User name and password."""

    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class StatusRequest(_Body):
    """A decision: the new status, the reason, and the version it was based on."""

    status: Status
    reason: str | None = Field(default=None, max_length=MAX_TEXT)
    expected_version: int = Field(ge=1, le=2**31 - 1)


class NoteRequest(_Body):
    """A note on a candidate."""

    text: str = Field(min_length=1, max_length=MAX_TEXT)


class ErrorBody(BaseModel):
    """An error: what went wrong and how to fix it."""

    error: str
    fix: str | None = None
    current: dict[str, Any] | None = None
    problems: list[dict[str, str]] | None = None


def error_response(status: int, message: str, fix: str | None = None, **extra: Any) -> JSONResponse:
    """A JSON error that is never cached."""
    return JSONResponse({"error": message, "fix": fix, **extra}, status, headers=NO_STORE)


_STATUS_CODES: tuple[tuple[type[GeoscreenError], int], ...] = (
    (NotFoundError, 404),
    (AccessError, 403),
    (ConflictError, 409),
    (TransitionError, 422),
    (ConfigError, 422),
    (StoreError, 503),
)


def _geoscreen_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, GeoscreenError)
    code = next((c for kind, c in _STATUS_CODES if isinstance(exc, kind)), 400)
    if isinstance(exc, StoreError):
        log.error("review store error on %s %s: %s", request.method, request.url.path, exc)
        return error_response(503, "the review store is unavailable")
    return error_response(code, exc.what, exc.fix)


def field_problem(error: Mapping[str, Any]) -> dict[str, str]:
    """Where a validation error is and its kind, without the value or any key sent."""
    kind = str(error.get("type", "invalid"))
    loc = [str(p) for p in error.get("loc", ()) if isinstance(p, str)]
    if kind == "extra_forbidden":  # the last name is the client's own key
        loc = [*loc[:-1], "(unknown field)"]
    elif kind.startswith("json_"):
        loc = loc[:1]
    return {"field": ".".join(loc) or "request", "problem": kind}


def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [field_problem(e) for e in exc.errors()]
    fields = sorted({p["field"] for p in problems})
    return error_response(
        422, "invalid request: " + ", ".join(fields),
        "Check these fields against the API schema (/api/openapi.json).",
        problems=problems,
    )  # fmt: skip


def install_error_handlers(app: FastAPI) -> None:
    """Map geoscreen errors and schema mismatches to JSON error responses."""
    app.add_exception_handler(GeoscreenError, _geoscreen_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
