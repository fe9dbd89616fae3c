"""The review page in a real browser: Debian's Chromium, headless, driven by Playwright.

The server runs with uvicorn on 127.0.0.1 (a free port) over a seeded SQLite store.
Every test's page is watched: a request to any host other than the server fails the
test (and is blocked). Screenshots go to ``tests/artifacts/`` (git-ignored).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Route

from geoscreen.review.store import open_store
from geoscreen.review.workflow import set_status
from geoscreen.web.app import create_app
from geoscreen.web.server import background
from geoscreen.web.testing import IMAGERY_PROFILE, Seeded, seed


def _wait_until(page: Page, expression: str, timeout_s: float = 15.0) -> None:
    """Poll ``expression`` until it is true. ``page.wait_for_function`` evaluates a
    string with ``eval`` in the page once its first check fails, which the page's
    Content-Security-Policy (``script-src 'self'``) refuses; ``page.evaluate`` is not
    subject to it."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"still false after {timeout_s} s: {expression}"
        page.wait_for_timeout(50)


CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium at /usr/bin/chromium (.ci/run installs it)",
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Seeded]]:
    """The review server on a free loopback port, over its own seeded store."""
    seeded = seed(tmp_path_factory.mktemp("browser"), 200)
    app = create_app(seeded.db, scenes=seeded.scenes, evidence_root=seeded.evidence_root)
    with background(app) as base:
        yield base, seeded
    app.state.geoscreen.store.close()


@pytest.fixture
def page(browser: Browser, served: tuple[str, Seeded]) -> Iterator[Page]:
    """A fresh browser context; fails the test if anything but the server is contacted."""
    base, _ = served
    server = urlsplit(base).netloc
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    elsewhere: list[str] = []
    seen: list[str] = []

    def gate(route: Route) -> None:
        url = route.request.url
        seen.append(url)
        if url.startswith(("data:", "blob:")) or urlsplit(url).netloc == server:
            route.continue_()
        else:
            elsewhere.append(url)
            route.abort()

    context.route("**/*", gate)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    yield opened
    context.close()
    assert elsewhere == [], f"the page contacted other hosts: {elsewhere}"
    assert seen, "no request was watched"
    assert errors == [], errors


def log_in(page: Page, base: str, user: str, password: str) -> None:
    page.goto(base + "/")
    assert page.url == base + "/login"
    page.fill("#username", user)
    page.fill("#password", password)
    page.click("#login-button")
    page.wait_for_url(base + "/")
    page.wait_for_selector("body[data-map=rendered]")


def status_shown(page: Page) -> str:
    return str(page.get_attribute("#detail", "data-status"))


def test_review_with_the_keyboard_and_reload(page: Page, served: tuple[str, Seeded]) -> None:
    base, seeded = served
    log_in(page, base, "ann", seeded.password)
    assert page.evaluate("document.body.dataset.viewTotal") == "203"
    page.keyboard.press("j")
    page.wait_for_selector("#detail:not([hidden])")
    title = page.inner_text("#title")
    assert "matches profile" in title and "trafficking" not in page.content().lower()
    cid = page.evaluate("location.hash")
    assert cid.startswith("#candidate=") and status_shown(page) == "new"
    page.keyboard.press("c")
    assert page.evaluate("document.activeElement.id") == "reason"
    page.keyboard.type("kiln rows and brick stacks visible")
    page.keyboard.press("Enter")
    page.wait_for_selector("#detail[data-status=confirmed]")
    assert "Saved: confirmed" in page.inner_text("#message")
    page.reload()
    page.wait_for_selector("#detail:not([hidden])")
    assert page.evaluate("location.hash") == cid
    assert status_shown(page) == "confirmed"
    history = page.inner_text("#history")
    assert "in_review -> confirmed (kiln rows and brick stacks visible)" in history
    page.wait_for_selector("body[data-map=rendered]")
    page.wait_for_load_state("networkidle")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "review_confirmed.png"))


def test_imagery_and_a_conflict(page: Page, served: tuple[str, Seeded]) -> None:
    base, seeded = served
    log_in(page, base, "bob", seeded.password)
    page.select_option("#filter", "new,in_review")
    store = open_store(seeded.db)
    try:
        first = next(c for c in store.candidates() if c.profile == IMAGERY_PROFILE)
        page.evaluate(f"location.hash = 'candidate={first.id}'")
        page.reload()
        page.wait_for_selector("#detail:not([hidden])")
        page.wait_for_selector("#imagery img.leaflet-tile-loaded")
        # the evidence chip loads on its own: wait until the browser is done with it
        # (loaded or failed: a failed one is complete with no width, and fails below)
        _wait_until(page, "document.getElementById('chip')?.complete === true")
        chip = page.evaluate("document.getElementById('chip').naturalWidth")
        assert chip == 48
        page.wait_for_load_state("networkidle")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "review_imagery.png"))
        # someone else decides while this page still shows version 1
        set_status(store, first.id, "rejected", user="sue", reason="a shed", claim=True)
    finally:
        store.close()
    page.fill("#reason", "looks like a kiln")
    page.click("button[data-status=confirmed]")
    page.wait_for_selector("#conflict:not([hidden])")
    text = page.inner_text("#conflict")
    assert "Someone else changed this candidate" in text and "by sue" in text
    assert status_shown(page) == "rejected"  # shown, not overwritten
    assert page.input_value("#reason") == "looks like a kiln"


def test_viewer_cannot_change_status(page: Page, served: tuple[str, Seeded]) -> None:
    base, seeded = served
    log_in(page, base, "vic", seeded.password)
    page.keyboard.press("j")
    page.wait_for_selector("#detail:not([hidden])")
    assert page.is_hidden("#decide") and page.is_visible("#read-only")
    before = status_shown(page)
    page.keyboard.press("r")
    assert "Viewers can look" in page.inner_text("#message")
    cid = page.evaluate("Number(location.hash.split('=')[1])")
    answer = page.evaluate(
        """async (cid) => {
            const csrf = document.querySelector('meta[name="csrf-token"]').content;
            const reply = await fetch(`/api/candidates/${cid}/status`, {
                method: "POST",
                headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
                body: JSON.stringify({status: "rejected", reason: "x", expected_version: 1}),
            });
            return reply.status;
        }""",
        cid,
    )
    assert answer == 403
    page.reload()
    page.wait_for_selector("#detail:not([hidden])")
    assert status_shown(page) == before


def test_logged_out_requests_are_refused(page: Page, served: tuple[str, Seeded]) -> None:
    base, seeded = served
    api = page.request
    assert api.get(base + "/api/candidates?bbox=-180,-90,180,90").status == 401
    assert api.get(base + "/api/candidates/1/evidence").status == 401
    log_in(page, base, "ann", seeded.password)
    assert api.get(base + "/api/me").status == 200  # the context's session cookie
    page.click("#logout")
    page.wait_for_url(base + "/login")
    assert api.get(base + "/api/me").status == 401
    page.goto(base + "/")
    assert page.url == base + "/login"
