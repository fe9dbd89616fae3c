"""Logins, sessions, CSRF and rate limits of the review server; every route needs a session."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from http.cookies import SimpleCookie

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from geoscreen.review import audit
from geoscreen.review.records import User
from geoscreen.review.schema import review_events
from geoscreen.review.users import set_active
from geoscreen.web.app import ROUTERS, create_app
from geoscreen.web.auth import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    AuthSettings,
    LoginLimits,
    RateLimiter,
    SessionStore,
    tokens_match,
)
from geoscreen.web.guard import PAGES, PUBLIC
from geoscreen.web.testing import Seeded, log_in, page_token

Login = Callable[[str], tuple[TestClient, str]]


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _user(name: str = "ann", role: str = "analyst") -> User:
    return User(1, name, role, True, dt.datetime.now(dt.UTC))


def _cookie(reply_headers: list[str], name: str) -> dict[str, str | bool]:
    for header in reply_headers:
        jar: SimpleCookie = SimpleCookie()
        jar.load(header)
        if name in jar:
            morsel = jar[name]
            flags = header.lower()
            return {
                "value": morsel.value,
                "httponly": "httponly" in flags,
                "secure": "secure" in flags,
                "samesite": str(morsel["samesite"]).lower(),
                "path": morsel["path"],
            }
    raise AssertionError(f"no {name} cookie in {reply_headers}")


def _fill(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


# -- sessions and limits (units) ------------------------------------------------------------
def test_sessions_expire_when_idle_and_when_old() -> None:
    clock = Clock()
    sessions = SessionStore(AuthSettings(idle_s=60, max_age_s=300), clock)
    token, session = sessions.create(_user())
    assert sessions.get(token) is session
    clock.now += 59
    assert sessions.get(token) is session  # a request keeps it alive
    clock.now += 61
    assert sessions.get(token) is None
    token, _ = sessions.create(_user())
    for _ in range(6):
        clock.now += 50
        assert sessions.get(token) is not None
    clock.now += 50
    assert sessions.get(token) is None  # 350 s old: past the absolute limit
    assert sessions.get(None) is None and sessions.get("made-up") is None


def test_sessions_are_bounded_and_end_per_user() -> None:
    sessions = SessionStore(AuthSettings(max_sessions=3), Clock())
    tokens = [sessions.create(_user(f"u{i}"))[0] for i in range(5)]
    assert len(sessions) == 3
    assert sessions.get(tokens[0]) is None and sessions.get(tokens[4]) is not None
    assert sessions.drop_user("u4") == 1 and sessions.get(tokens[4]) is None
    a, b = sessions.create(_user())[0], sessions.create(_user())[0]
    assert a != b  # a new token per login (no fixation)


def test_rate_limiter_window_and_bounded_keys() -> None:
    clock = Clock()
    limiter = RateLimiter(3, 60.0, max_keys=2, clock=clock)
    for _ in range(3):
        assert limiter.retry_after("x") == 0
        limiter.hit("x")
    assert limiter.retry_after("x") == pytest.approx(60.0)
    clock.now += 30
    assert limiter.retry_after("x") == pytest.approx(30.0)
    clock.now += 30.5
    assert limiter.retry_after("x") == 0
    limiter.hit("y")
    limiter.hit("z")
    assert len(limiter) == 2  # the oldest key went
    limiter.reset("z")
    assert limiter.retry_after("z") == 0


def test_tokens_compare_exactly() -> None:
    assert tokens_match("abc", "abc")
    assert not tokens_match("abc", "abd")
    assert not tokens_match(None, "abc") and not tokens_match("", "")


# -- every route needs a session --------------------------------------------------------------
def _api_routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path) of the app's routers, checked against its OpenAPI paths."""
    found = [
        (method, route.path)
        for router in ROUTERS
        for route in router.routes
        if isinstance(route, APIRoute)
        for method in sorted(route.methods)
    ]
    described = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    }
    assert described <= set(found), described - set(found)
    assert len(found) >= 12, found
    return found


def test_every_route_refuses_a_request_without_session(app: FastAPI) -> None:
    client = TestClient(app)
    for method, path in _api_routes(app):
        if (method, path) in PUBLIC:
            continue
        reply = client.request(method, _fill(path), follow_redirects=False)
        if path in PAGES:
            assert reply.status_code == 303, (method, path)
            assert reply.headers["location"] == "/login"
        else:
            assert reply.status_code == 401, (method, path, reply.text)
            assert reply.json()["error"] == "not logged in"
    # even with a malformed body or a made-up path: refused before anything is parsed
    bad = client.post("/api/candidates/1/status", content=b"{not json")
    assert bad.status_code == 401
    assert client.get("/api/nothing-here").status_code == 401
    assert client.get("/static/app/review.js").status_code == 200  # code, no data


def test_every_change_needs_the_csrf_token(login: Login, app: FastAPI) -> None:
    client, csrf = login("sue")
    unsafe = [(m, p) for m, p in _api_routes(app) if m != "GET" and (m, p) not in PUBLIC]
    assert {p for _, p in unsafe} >= {"/api/logout", "/api/candidates/{candidate_id}/status"}
    for method, path in unsafe:
        for headers in ({}, {"X-CSRF-Token": "wrong"}):
            reply = client.request(method, _fill(path), json={}, headers=headers)
            assert reply.status_code == 403, (method, path)
            assert "CSRF" in reply.json()["error"]
    assert client.get("/api/me").status_code == 200  # the session survived
    cross = client.post(
        "/api/logout", headers={"X-CSRF-Token": csrf, "Origin": "http://evil.example"}
    )
    assert cross.status_code == 403
    site = client.post(
        "/api/logout", headers={"X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"}
    )
    assert site.status_code == 403
    assert client.post("/api/logout", headers={"X-CSRF-Token": csrf}).status_code == 200


def test_viewer_cannot_change_anything(login: Login, app: FastAPI) -> None:
    client, csrf = login("vic")
    headers = {"X-CSRF-Token": csrf}
    status = client.post(
        "/api/candidates/1/status",
        json={"status": "confirmed", "reason": "looks like one", "expected_version": 1},
        headers=headers,
    )
    assert status.status_code == 403 and "viewer" in status.json()["error"]
    note = client.post("/api/candidates/1/notes", json={"text": "hello"}, headers=headers)
    assert note.status_code == 403
    store = app.state.geoscreen.store
    with store.read() as conn:
        assert conn.execute(select(func.count()).select_from(review_events)).scalar_one() == 0
    assert client.get("/api/candidates/1").json()["candidate"]["status"] == "new"
    assert client.get("/api/me").json() == {"user": "vic", "role": "viewer", "can_review": False}


# -- login ------------------------------------------------------------------------------------
def test_login_sets_strict_httponly_cookies(app: FastAPI, seeded: Seeded) -> None:
    client = TestClient(app)
    form = client.get("/login")
    pre = _cookie(form.headers.get_list("set-cookie"), LOGIN_CSRF_COOKIE)
    assert pre["httponly"] and pre["samesite"] == "strict" and not pre["secure"]
    assert page_token(form.text) == pre["value"]
    assert page_token(client.get("/login").text) == pre["value"]  # stable across reloads
    reply = client.post(
        "/api/login",
        json={"username": "ann", "password": seeded.password},
        headers={"X-CSRF-Token": str(pre["value"])},
    )
    assert reply.status_code == 200 and reply.json() == {"user": "ann", "role": "analyst"}
    cookie = _cookie(reply.headers.get_list("set-cookie"), SESSION_COOKIE)
    assert cookie["httponly"] and cookie["samesite"] == "strict" and cookie["path"] == "/"
    assert not cookie["secure"]  # plain http on loopback
    assert reply.headers["cache-control"] == "no-store"
    actions = [e.action for e in audit.entries(app.state.geoscreen.store, entity="user")]
    assert actions[-1] == "login"


@pytest.mark.parametrize(
    ("setting", "base", "secure"),
    [(None, "https://review.example", True), (None, "http://testserver", False),
     (True, "http://testserver", True), (False, "https://review.example", False)],
)  # fmt: skip
def test_secure_cookies_over_https_or_when_configured(
    seeded: Seeded, setting: bool | None, base: str, secure: bool
) -> None:
    app = create_app(seeded.db, auth=AuthSettings(secure_cookies=setting))
    client = TestClient(app, base_url=base)
    form = client.get("/login")
    assert _cookie(form.headers.get_list("set-cookie"), LOGIN_CSRF_COOKIE)["secure"] is secure
    if base.startswith("https"):  # a client sends Secure cookies over https only
        reply = client.post(
            "/api/login",
            json={"username": "ann", "password": seeded.password},
            headers={"X-CSRF-Token": page_token(form.text)},
        )
        assert _cookie(reply.headers.get_list("set-cookie"), SESSION_COOKIE)["secure"] is secure
    app.state.geoscreen.store.close()


def test_login_needs_its_csrf_token(app: FastAPI, seeded: Seeded) -> None:
    client = TestClient(app)
    body = {"username": "ann", "password": seeded.password}
    assert client.post("/api/login", json=body).status_code == 403
    client.get("/login")
    assert client.post("/api/login", json=body, headers={"X-CSRF-Token": "x"}).status_code == 403
    assert client.get("/api/me").status_code == 401


def test_wrong_passwords_are_refused_the_same_way(app: FastAPI, seeded: Seeded) -> None:
    client = TestClient(app)
    token = page_token(client.get("/login").text)
    answers = set()
    for user, password in [("ann", "not the password"), ("nobody", seeded.password)]:
        reply = client.post(
            "/api/login",
            json={"username": user, "password": password},
            headers={"X-CSRF-Token": token},
        )
        answers.add((reply.status_code, reply.text))
    assert answers == {(401, '{"error":"wrong user name or password","fix":null}')}


def test_login_is_slowed_per_user_and_address_and_limited_per_address(seeded: Seeded) -> None:
    settings = AuthSettings(free_failures=3, ip_attempts=6)
    app = create_app(seeded.db, auth=settings)
    app.state.geoscreen.limits = LoginLimits(settings, Clock())  # time stands still
    client = TestClient(app)

    def attempt(user: str, password: str) -> int:
        token = page_token(client.get("/login").text)
        reply = client.post(
            "/api/login",
            json={"username": user, "password": password},
            headers={"X-CSRF-Token": token},
        )
        if reply.status_code == 429:
            assert int(reply.headers["retry-after"]) >= 1
        return reply.status_code

    assert [attempt("ann", "wrong-password") for _ in range(4)] == [401, 401, 401, 429]
    assert attempt("ann", seeded.password) == 429  # during the back-off, even the right one
    assert attempt("ANN", seeded.password) == 429  # names compare without case
    assert attempt("bob", seeded.password) == 200  # other users are not slowed
    # 4 attempts from this address were counted so far (refused ones are not): two more
    assert attempt("sue", "wrong-password") == 401
    assert attempt("sue", seeded.password) == 200
    assert attempt("sam", seeded.password) == 429  # the address is now limited
    app.state.geoscreen.store.close()


def test_logout_ends_the_session(login: Login, app: FastAPI) -> None:
    client, csrf = login("ann")
    old = client.cookies.get(SESSION_COOKIE)
    assert client.post("/api/logout", headers={"X-CSRF-Token": csrf}).status_code == 200
    assert client.get("/api/me").status_code == 401
    replay = TestClient(app, cookies={SESSION_COOKIE: str(old)})
    assert replay.get("/api/me").status_code == 401  # the old cookie is dead server-side
    assert replay.get("/", follow_redirects=False).status_code == 303


def test_disabled_user_loses_the_session(login: Login, app: FastAPI) -> None:
    client, _ = login("bob")
    assert client.get("/api/me").status_code == 200
    set_active(app.state.geoscreen.store, "bob", False, actor="test")
    assert client.get("/api/me").status_code == 401


def test_each_login_gets_a_new_session(app: FastAPI, seeded: Seeded) -> None:
    client = TestClient(app)
    log_in(client, "ann", seeded.password)
    first = client.cookies.get(SESSION_COOKIE)
    log_in(client, "ann", seeded.password)
    assert client.cookies.get(SESSION_COOKIE) != first
