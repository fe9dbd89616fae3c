"""Login page, login, logout and who is logged in."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse

from geoscreen.review import audit
from geoscreen.review.users import authenticate
from geoscreen.web.api import NO_STORE, LoginRequest, error_response
from geoscreen.web.auth import LOGIN_CSRF_COOKIE, SESSION_COOKIE, new_token
from geoscreen.web.state import ServerState, State, Who

router = APIRouter()
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")


def _secure(request: Request, state: ServerState) -> bool:
    configured = state.auth.secure_cookies
    return request.url.scheme == "https" if configured is None else configured


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
def login_page(request: Request, state: State) -> Response:
    """The login form, with a pre-login CSRF token (kept across reloads and tabs)."""
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or ""
    if not _TOKEN.fullmatch(token):
        token = new_token()
    page = state.templates.TemplateResponse(request, "login.html", {"csrf": token})
    page.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=_secure(request, state),
        path="/",
        max_age=3600,
    )
    return page


@router.post("/api/login", responses={401: {}, 403: {}, 429: {}})
def login(body: LoginRequest, request: Request, state: State) -> JSONResponse:
    """Start a session (rate limited per client address, slowed per user name and address)."""
    ip = request.client.host if request.client else "unknown"
    wait = state.limits.retry_after(ip, body.username)
    if wait > 0:
        refused = error_response(429, "too many login attempts", "Wait and try again.")
        refused.headers["Retry-After"] = str(int(wait) + 1)
        return refused
    state.limits.attempt(ip)
    user = authenticate(state.store, body.username, body.password)
    if user is None:
        state.limits.failed(ip, body.username)
        return error_response(401, "wrong user name or password")
    state.limits.succeeded(ip, body.username)
    token, _ = state.sessions.create(user)
    audit.log(state.store, actor=user.name, action="login", entity="user", entity_id=user.name)
    reply = JSONResponse({"user": user.name, "role": user.role}, headers=NO_STORE)
    reply.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=_secure(request, state),
        path="/",
        max_age=int(state.auth.max_age_s),
    )
    reply.delete_cookie(LOGIN_CSRF_COOKIE, path="/", httponly=True, samesite="strict")
    return reply


@router.post("/api/logout")
def logout(request: Request, state: State, who: Who) -> JSONResponse:
    """End this session."""
    state.sessions.drop(request.cookies.get(SESSION_COOKIE))
    audit.log(state.store, actor=who.user, action="logout", entity="user", entity_id=who.user)
    reply = JSONResponse({"logged_out": True}, headers=NO_STORE)
    reply.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return reply


@router.get("/api/me")
def me(who: Who) -> dict[str, Any]:
    """Who is logged in, with which role."""
    return {"user": who.user, "role": who.role, "can_review": who.has_role("analyst")}
