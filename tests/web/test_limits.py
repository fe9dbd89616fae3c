"""Server limits: bounded bodies, invalid Unicode, no echoed input, login back-off, proxies."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from geoscreen.cli.app import main
from geoscreen.review.schema import review_events
from geoscreen.web.app import create_app
from geoscreen.web.auth import LOGIN_CSRF_COOKIE, AuthSettings, Backoff, LoginLimits
from geoscreen.web.limits import parse_networks, resolve_client
from geoscreen.web.server import _config
from geoscreen.web.testing import Seeded, page_token

Login = Callable[[str], tuple[TestClient, str]]
TOKEN = "t" * 43
MARKER = "hunter2-do-not-echo"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _login(client: TestClient, user: str, password: str, **headers: str) -> int:
    token = page_token(client.get("/login").text)
    reply = client.post(
        "/api/login",
        json={"username": user, "password": password},
        headers={"X-CSRF-Token": token, **headers},
    )
    return reply.status_code


def _raw_login(client: TestClient, body: bytes) -> Any:
    token = page_token(client.get("/login").text)
    headers = {"X-CSRF-Token": token, "content-type": "application/json"}
    return client.post("/api/login", content=body, headers=headers)


def _note_count(app: FastAPI) -> int:
    with app.state.geoscreen.store.read() as conn:
        query = select(func.count()).where(review_events.c.kind == "note")
        return int(conn.execute(query).scalar_one())


def _stream(app: FastAPI, chunks: list[bytes], path: str = "/api/login") -> tuple[int, int]:
    """POST ``chunks`` to the app as a chunked body (no length); (status, chunks it took)."""
    taken = 0
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        nonlocal taken
        if taken == len(chunks):
            return {"type": "http.disconnect"}
        taken += 1
        return {"type": "http.request", "body": chunks[taken - 1], "more_body": taken < len(chunks)}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "client": ("192.0.2.1", 1234), "server": ("testserver", 80),
        "headers": [
            (b"host", b"testserver"), (b"content-type", b"application/json"),
            (b"x-csrf-token", TOKEN.encode()), (b"cookie", f"{LOGIN_CSRF_COOKIE}={TOKEN}".encode()),
        ],
    }  # fmt: skip
    anyio.run(app, scope, receive, send)
    return statuses[0], taken


# -- body size ---------------------------------------------------------------------------------


def test_a_chunked_login_body_is_refused_once_past_the_limit(seeded: Seeded) -> None:
    app = create_app(seeded.db, auth=AuthSettings(max_body_bytes=64 * 1024))
    chunks = [b"x" * 16 * 1024] * 1000  # 16 MB on offer
    status, taken = _stream(app, chunks)
    assert status == 413
    assert taken == 5  # four chunks fit in 64 KiB; the fifth is refused, nothing more is read
    app.state.geoscreen.store.close()


def test_oversized_login_bodies_are_refused_by_length_and_counted(seeded: Seeded) -> None:
    app = create_app(seeded.db, auth=AuthSettings(ip_attempts=3))
    client = TestClient(app)
    body = json.dumps({"username": "ann", "password": "x" * (1 << 20)}).encode()
    answers = [_raw_login(client, body) for _ in range(3)]
    assert [a.status_code for a in answers] == [413, 413, 413]
    assert answers[0].json()["fix"].startswith("Send at most 64 KiB")
    # the three refused bodies were attempts from this address: the right password waits
    assert _login(client, "ann", seeded.password) == 429
    app.state.geoscreen.store.close()


def test_an_oversized_note_is_refused_before_parsing(login: Login, app: FastAPI) -> None:
    client, csrf = login("ann")
    before = _note_count(app)
    huge = client.post(
        "/api/candidates/1/notes", json={"text": "n" * 200_000}, headers={"X-CSRF-Token": csrf}
    )
    assert huge.status_code == 413
    long = client.post(
        "/api/candidates/1/notes", json={"text": "n" * 4001}, headers={"X-CSRF-Token": csrf}
    )
    assert long.status_code == 422  # within the body limit, over the note limit
    assert _note_count(app) == before


# -- Unicode -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"username": "\\ud800", "password": "x"}',
        b'{"username": "ann", "password": "a\\uDFFFb"}',
        b'{"username": "\xff\xfe", "password": "x"}',
    ],
)
def test_invalid_unicode_in_a_login_is_a_400(app: FastAPI, body: bytes) -> None:
    reply = _raw_login(TestClient(app, raise_server_exceptions=True), body)
    assert reply.status_code == 400
    assert reply.json()["fix"]


def test_invalid_unicode_in_notes_and_reasons_is_a_400(login: Login, app: FastAPI) -> None:
    client, csrf = login("sue")
    headers = {"X-CSRF-Token": csrf, "content-type": "application/json"}
    before = _note_count(app)
    bad_note = client.post("/api/candidates/1/notes", content=b'{"text": "a\\ud800"}',
                           headers=headers)  # fmt: skip
    bad_reason = client.post(
        "/api/candidates/1/status",
        content=b'{"status": "confirmed", "reason": "\\udc00", "expected_version": 1}',
        headers=headers,
    )
    assert (bad_note.status_code, bad_reason.status_code) == (400, 400)
    assert _note_count(app) == before
    assert client.get("/api/candidates/1").json()["candidate"]["status"] == "new"
    emoji = client.post("/api/candidates/1/notes", content=b'{"text": "ok \\ud83d\\ude00"}',
                        headers=headers)  # fmt: skip
    assert emoji.status_code == 200  # a surrogate pair is one valid character
    assert _note_count(app) == before + 1


# -- no echo in 422 ----------------------------------------------------------------------------


def test_validation_errors_name_fields_but_never_echo_values(login: Login, app: FastAPI) -> None:
    client = TestClient(app)
    token = page_token(client.get("/login").text)
    reply = client.post(
        "/api/login",
        json={"username": "ann", "password": MARKER * 100, f"{MARKER}-key": MARKER},
        headers={"X-CSRF-Token": token},
    )
    assert reply.status_code == 422
    assert MARKER not in reply.text
    assert {p["field"] for p in reply.json()["problems"]} == {
        "body.password",
        "body.(unknown field)",
    }
    analyst, csrf = login("ann")
    wrong = analyst.post(
        "/api/candidates/1/status",
        json={"status": MARKER, "reason": MARKER, "expected_version": MARKER},
        headers={"X-CSRF-Token": csrf},
    )
    assert wrong.status_code == 422
    assert MARKER not in wrong.text
    assert {p["field"] for p in wrong.json()["problems"]} == {
        "body.status",
        "body.expected_version",
    }
    broken = analyst.post(
        "/api/candidates/1/notes",
        content=f'{{"text": "{MARKER}'.encode(),
        headers={"X-CSRF-Token": csrf, "content-type": "application/json"},
    )
    assert broken.status_code == 422
    assert MARKER not in broken.text


# -- login back-off ----------------------------------------------------------------------------


def test_backoff_doubles_after_the_free_failures_and_is_capped() -> None:
    clock = Clock()
    backoff = Backoff(AuthSettings(free_failures=3, backoff_s=1.0, max_backoff_s=900.0), clock)
    assert [backoff.delay(n) for n in range(16)] == [
        0, 0, 0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900, 900,
    ]  # fmt: skip
    for _ in range(5):
        backoff.failed("k")
    assert backoff.retry_after("k") == 4.0
    clock.now += 4.0
    assert backoff.retry_after("k") == 0.0
    clock.now += 24 * 3600
    backoff.failed("k")  # the old failures were forgotten: this is the first again
    assert backoff.retry_after("k") == 0.0


def test_an_attacker_cannot_lock_out_the_real_user(seeded: Seeded) -> None:
    clock = Clock()
    settings = AuthSettings(free_failures=2, backoff_s=10.0, max_backoff_s=80.0, ip_attempts=100)
    app = create_app(seeded.db, auth=settings)
    app.state.geoscreen.limits = LoginLimits(settings, clock)
    attacker = TestClient(app, client=("192.0.2.66", 4000))
    real = TestClient(app, client=("198.51.100.7", 4000))

    assert [_login(attacker, "ann", "guess") for _ in range(3)] == [401, 401, 429]
    assert _login(real, "ann", seeded.password) == 200  # another address is not slowed
    for wait in (10.0, 20.0, 40.0, 80.0, 80.0):  # each failure doubles the wait, up to the cap
        clock.now += wait - 0.5
        assert _login(attacker, "ann", "guess") == 429
        clock.now += 0.5
        assert _login(attacker, "ann", "guess") == 401
    assert _login(real, "ann", seeded.password) == 200
    assert _login(attacker, "ann", seeded.password) == 429  # the right one waits too ...
    clock.now += 80.0
    assert _login(attacker, "ann", seeded.password) == 200  # ... and works once it has passed
    assert _login(attacker, "ann", "guess") == 401  # the success cleared the failures
    app.state.geoscreen.store.close()


# -- X-Forwarded-For ---------------------------------------------------------------------------


def test_forwarded_for_is_ignored_without_a_trusted_proxy(seeded: Seeded) -> None:
    app = create_app(seeded.db, auth=AuthSettings(ip_attempts=2))
    local = TestClient(app, client=("127.0.0.1", 5000))
    answers = [
        _login(local, "ann", "guess", **{"X-Forwarded-For": f"203.0.113.{i}"}) for i in range(3)
    ]
    assert answers == [401, 401, 429]  # all three counted on 127.0.0.1
    assert _config(app, "127.0.0.1", 0, "warning").proxy_headers is False  # uvicorn neither
    app.state.geoscreen.store.close()


def test_forwarded_for_is_followed_from_a_trusted_proxy(seeded: Seeded) -> None:
    app = create_app(seeded.db, auth=AuthSettings(ip_attempts=2, trusted_proxies=("10.0.0.0/8",)))
    proxy = TestClient(app, client=("10.1.2.3", 5000))
    answers = [
        _login(proxy, "ann", "guess", **{"X-Forwarded-For": f"203.0.113.{i}"}) for i in range(3)
    ]
    assert answers == [401, 401, 401]  # three clients behind the proxy
    # a client that is not the proxy cannot choose its address by sending the header
    direct = TestClient(app, client=("192.0.2.5", 5000))
    spoofed = [
        _login(direct, "bob", "guess", **{"X-Forwarded-For": f"203.0.113.{i}"}) for i in range(3)
    ]
    assert spoofed == [401, 401, 429]
    app.state.geoscreen.store.close()


def test_resolve_client_takes_the_last_untrusted_hop() -> None:
    proxies = parse_networks(["10.0.0.0/8", "::1"])

    def resolve(peer: str, forwarded: str, proto: str = "") -> tuple[str, str]:
        headers = [(b"x-forwarded-for", forwarded.encode())]
        if proto:
            headers.append((b"x-forwarded-proto", proto.encode()))
        scope: dict[str, Any] = {"client": (peer, 1), "scheme": "http", "headers": headers}
        return resolve_client(scope, proxies), scope["scheme"]

    assert resolve("10.0.0.1", "1.1.1.1, 198.51.100.9") == ("198.51.100.9", "http")
    assert resolve("10.0.0.1", "1.1.1.1, 198.51.100.9, 10.0.0.7") == ("198.51.100.9", "http")
    assert resolve("::1", "198.51.100.9", "https") == ("198.51.100.9", "https")
    assert resolve("10.0.0.1", "not-an-address") == ("10.0.0.1", "http")
    assert resolve("192.0.2.5", "198.51.100.9", "https") == ("192.0.2.5", "http")


def test_serve_refuses_a_bad_trusted_proxy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--db", "nowhere.sqlite", "--trusted-proxy", "proxy.local"]) == 2
    err = capsys.readouterr().err
    assert "--trusted-proxy" in err
    assert "Traceback" not in err
