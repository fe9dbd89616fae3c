"""The gate every request passes: a session for all but the login, CSRF on every change.

An ASGI middleware, so it also covers routes added later and requests whose body or
parameters are malformed (they are refused as logged out before they are parsed).
Only the login page, the login call and the static files (the vendored libraries and
the app's own scripts and styles: no data) are open. Before any route parses a body,
the body is read here, bounded and checked (:mod:`geoscreen.web.limits`); the client
address follows ``X-Forwarded-For`` only from configured proxies. Pages answer a missing session
with a redirect to the login page, the API with 401. It also sets the security
headers: a content security policy that allows nothing but this server, no caching of
anything but static files, no framing, no referrer.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from anyio import to_thread
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from geoscreen.errors import GeoscreenError
from geoscreen.review.users import get_user
from geoscreen.web.api import error_response
from geoscreen.web.auth import (
    CSRF_HEADER,
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    UNSAFE_METHODS,
    Session,
    tokens_match,
)
from geoscreen.web.limits import (
    BodyRefused,
    ClientGone,
    Receive,
    check_text,
    declared_length,
    parse_networks,
    read_body,
    replay,
    resolve_client,
    too_large,
)

if TYPE_CHECKING:
    from geoscreen.web.state import ServerState

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PUBLIC = frozenset({("GET", "/login"), ("POST", "/api/login")})
PAGES = frozenset({"/"})  # answered with a redirect to the login page when logged out
STATIC_PREFIX = "/static/"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "geolocation=(), camera=(), microphone=()",
}


class Guard:
    """ASGI middleware: authentication, CSRF and security headers."""

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state
        self.proxies = parse_networks(state.auth.trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        static = path.startswith(STATIC_PREFIX)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                cache = "private, max-age=3600" if static else "no-store"
                headers.setdefault("cache-control", cache)
            await send(message)

        if not static:
            ip = resolve_client(scope, self.proxies)
            refusal = await self._check(Request(scope))
            if refusal is None and scope["method"] in UNSAFE_METHODS:
                try:
                    receive = await self._body(scope, receive, ip)
                except ClientGone:
                    return
                except BodyRefused as exc:
                    refusal = error_response(exc.status, exc.message, exc.fix)
            if refusal is not None:
                await refusal(scope, receive, send_with_headers)
                return
        await self.app(scope, receive, send_with_headers)

    async def _check(self, request: Request) -> Response | None:
        method, path = request.method, request.url.path
        unsafe = method in UNSAFE_METHODS
        if unsafe and not same_origin(request):
            return error_response(403, "cross-site request refused")
        if (method, path) in PUBLIC:
            given = request.headers.get(CSRF_HEADER)
            if unsafe and not tokens_match(given, request.cookies.get(LOGIN_CSRF_COOKIE)):
                return error_response(403, "missing or wrong CSRF token", "Reload the login page.")
            wait = self.state.limits.address_wait(request.client.host if request.client else "")
            if unsafe and wait > 0:  # before the body is read
                refused = error_response(429, "too many login attempts", "Wait and try again.")
                refused.headers["Retry-After"] = str(int(wait) + 1)
                return refused
            return None
        session = self.state.sessions.get(request.cookies.get(SESSION_COOKIE))
        if session is not None and not await self._still_allowed(session):
            self.state.sessions.drop(request.cookies.get(SESSION_COOKIE))
            session = None
        if session is None:
            if method == "GET" and path in PAGES:
                return RedirectResponse("/login", status_code=303)
            return error_response(401, "not logged in", "Log in at /login.")
        if unsafe and not tokens_match(request.headers.get(CSRF_HEADER), session.csrf):
            return error_response(403, "missing or wrong CSRF token", "Reload the page.")
        request.scope.setdefault("state", {})["session"] = session
        return None

    async def _body(self, scope: Scope, receive: Receive, ip: str) -> Receive:
        """Read and check the body (bounded); login bodies refused here count as attempts."""
        limit = self.state.auth.max_body_bytes
        try:
            length = declared_length(scope.get("headers", ()))
            if length is not None and length > limit:
                raise too_large(limit)
            body = await read_body(receive, limit)
            check_text(body)
        except BodyRefused:
            if (scope["method"], scope["path"]) in PUBLIC:
                self.state.limits.attempt(ip)
            raise
        return replay(body, receive)

    async def _still_allowed(self, session: Session) -> bool:
        """Re-read the user every ``recheck_s``: disabled users lose their sessions."""
        now = time.monotonic()
        if now - session.checked < self.state.auth.recheck_s:
            return True

        def read() -> tuple[bool, str]:
            with self.state.store.read() as conn:
                user = get_user(conn, session.user)
            return user.active, user.role

        try:
            active, role = await to_thread.run_sync(read)
        except GeoscreenError:  # unknown user (removed) or store unavailable: no access
            return False
        session.checked, session.role = now, role
        return active


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another site."""
    if request.headers.get("sec-fetch-site") in ("cross-site", "same-site"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "")
    parts = urlsplit(origin)
    return origin != "null" and parts.netloc == host
