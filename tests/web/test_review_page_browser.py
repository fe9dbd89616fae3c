"""The review page's imagery, names, times and keys in a real browser (Debian's Chromium).

The store holds candidates in two real, adjacent scenes (the NEON OSBS image and a
mirrored copy just east of it, see :func:`geoscreen.web.testing.neighbour_scene`).
Every test fails on a page error, a console error, a failed response (4xx/5xx: no storm
of missing tiles) or a request to another host. The screenshot of the page with both
scenes' imagery goes to ``tests/artifacts/`` (git-ignored).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import geopandas as gpd
import pytest
from playwright.sync_api import (
    Browser,
    Page,
    Request,
    Response,
    Route,
    expect,
)

from geoscreen.review.loader import load_sites
from geoscreen.review.store import open_store
from geoscreen.web.app import create_app
from geoscreen.web.server import background
from geoscreen.web.testing import Seeded, seed

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
LOCAL_TIME = re.compile(
    r"^\d{1,2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d "
)

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium at /usr/bin/chromium (.ci/run installs it)",
)


@dataclass
class Watched:
    """What a page did: requests sent, failed responses, errors."""

    page: Page
    requests: list[Request] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    tiles: list[int] = field(default_factory=list)  # status of each tile answer
    errors: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Seeded]]:
    """The review server over a store with candidates in two adjacent real scenes."""
    seeded = seed(tmp_path_factory.mktemp("scenes"), 20, second_scene=True)
    app = create_app(seeded.db, scenes=seeded.scenes, evidence_root=seeded.evidence_root)
    with background(app) as base:
        yield base, seeded
    app.state.geoscreen.store.close()


@pytest.fixture
def watched(browser: Browser, served: tuple[str, Seeded]) -> Iterator[Watched]:
    base, _ = served
    server = urlsplit(base).netloc
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    elsewhere: list[str] = []

    def gate(route: Route) -> None:
        url = route.request.url
        if url.startswith(("data:", "blob:")) or urlsplit(url).netloc == server:
            route.continue_()
        else:
            elsewhere.append(url)
            route.abort()

    context.route("**/*", gate)
    page = context.new_page()
    seen = Watched(page)
    page.on("request", lambda request: seen.requests.append(request))

    def answered(response: Response) -> None:
        if "/tiles/" in response.url:
            seen.tiles.append(response.status)
        if response.status >= 400 and not response.url.endswith("/api/me"):
            seen.failed.append(f"{response.status} {response.url}")

    page.on("response", answered)
    page.on("pageerror", lambda exc: seen.errors.append(str(exc)))
    page.on("console", lambda m: seen.errors.append(m.text) if m.type == "error" else None)
    yield seen
    context.close()
    assert elsewhere == [], f"the page contacted other hosts: {elsewhere}"
    assert seen.failed == [], seen.failed
    assert seen.errors == [], seen.errors


def log_in(page: Page, base: str, user: str, password: str) -> None:
    page.goto(base + "/")
    page.fill("#username", user)
    page.fill("#password", password)
    page.click("#login-button")
    page.wait_for_url(base + "/")
    page.wait_for_selector("body[data-map=rendered]")


def open_candidate(page: Page, candidate_id: int) -> None:
    page.evaluate(f"location.hash = 'candidate={candidate_id}'")
    page.reload()
    expect(page.locator("#title")).to_have_text(re.compile(f"^#{candidate_id} "))


def east_candidate(seeded: Seeded) -> int:
    store = open_store(seeded.db)
    try:
        return next(c.id for c in store.candidates() if c.site_id == "east-0")
    finally:
        store.close()


def test_imagery_of_every_scene_in_view(watched: Watched, served: tuple[str, Seeded]) -> None:
    base, seeded = served
    page = watched.page
    log_in(page, base, "ann", seeded.password)
    page.wait_for_selector("body[data-scenes='0']")  # zoomed out on every candidate
    assert not any("/api/scenes" in r.url for r in watched.requests)  # no scene asked for
    open_candidate(page, east_candidate(seeded))
    page.wait_for_selector("body[data-scenes='2']")
    for name in ("OSBS_029.tif", "OSBS_029_east.tif"):
        page.wait_for_selector(f".scene-imagery[data-scene='{name}'] img.leaflet-tile-loaded")
    page.wait_for_load_state("networkidle")
    tiles = [r.url for r in watched.requests if "/api/scenes/" in r.url]
    assert len({urlsplit(u).path.split("/")[3] for u in tiles}) == 2  # both scenes' tiles
    # only tiles inside the scenes were asked for: none came back empty (204) or missing
    assert watched.tiles and set(watched.tiles) == {200}, watched.tiles
    attribution = page.inner_text(".leaflet-control-attribution")
    assert "OSBS_029.tif" in attribution and "OSBS_029_east.tif" in attribution
    facts = page.inner_text("#facts")
    assert "OSBS_029_east.tif" in facts  # the file name, not the content id
    scene_id = page.get_attribute("#facts dd[title]", "title")
    assert scene_id and scene_id not in facts
    page.fill("#reason", "two long sheds at the scene edge")
    page.click("button[data-status=needs_imagery]")
    page.wait_for_selector("#detail[data-status=needs_imagery]")
    history = page.inner_text("#history")
    assert LOCAL_TIME.match(history), history  # "2 Dec 2026 13:05 ann: ..."
    assert "ann: in_review -> needs_imagery (two long sheds at the scene edge)" in history
    changed = page.inner_text("#facts")
    assert re.search(r"changed\s+\d{1,2} [A-Z][a-z]{2} \d{4} \d\d:\d\d", changed), changed
    page.wait_for_load_state("networkidle")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "review_scenes_imagery.png"))


def test_question_mark_lists_the_keys(watched: Watched, served: tuple[str, Seeded]) -> None:
    base, seeded = served
    page = watched.page
    log_in(page, base, "vic", seeded.password)
    assert page.is_hidden("#help")
    page.keyboard.press("?")
    page.wait_for_selector("#help:not([hidden])")
    assert "Keyboard shortcuts" in page.inner_text("#help")
    listed = page.eval_on_selector_all("#help td kbd", "(keys) => keys.map((k) => k.textContent)")
    assert set("jkcrne?") <= set(listed) and "Esc" in listed
    page.keyboard.press("j")  # keys other than ? and Esc do nothing while the list is open
    assert page.is_hidden("#detail")
    page.keyboard.press("Escape")
    page.wait_for_selector("#help", state="hidden")
    page.click("#show-keys")
    page.wait_for_selector("#help:not([hidden])")
    page.click("#close-keys")
    page.wait_for_selector("#help", state="hidden")


def test_disabled_escalate_never_fires(watched: Watched, served: tuple[str, Seeded]) -> None:
    base, seeded = served
    page = watched.page
    log_in(page, base, "bob", seeded.password)  # an analyst: escalating needs a supervisor
    page.keyboard.press("j")
    page.wait_for_selector("#detail:not([hidden])")
    assert page.is_disabled("button[data-status=escalated]")
    before = page.get_attribute("#detail", "data-status")
    page.fill("#reason", "an escalation bob may not make")
    page.keyboard.press("Escape")  # leave the reason box, keep its text
    sent = len(watched.requests)
    page.keyboard.press("e")
    # a request the page makes after the key: had 'e' sent one, it would be seen first
    assert page.evaluate("fetch('/api/me').then((r) => r.status)") == 200
    after_key = watched.requests[sent:]
    assert [r.url for r in after_key if r.method != "GET" or "/status" in r.url] == []
    assert page.get_attribute("#detail", "data-status") == before
    assert page.input_value("#reason") == "an escalation bob may not make"
    page.keyboard.press("n")  # an enabled key still acts
    page.wait_for_selector("#detail[data-status=needs_imagery]")
    posts = [r.url for r in watched.requests[sent:] if r.method == "POST"]
    assert [urlsplit(u).path.rsplit("/", 1)[1] for u in posts] == ["status"]


OLD, NEW = "ab" * 32, "cd" * 32  # the seeded run's model, a retrained one


def rescreened(seeded: Seeded) -> tuple[int, int]:
    """A retrained model re-screens S2_0 and misses its first site (loading the run again
    leaves it as it is): the ids of the missed site and of one it scored again."""
    first = gpd.read_parquet(seeded.folder / "sites.parquet")
    scene = first[first["scene_id"] == "S2_0"]
    second = scene.iloc[1:].copy()
    second["run_id"], second["model_sha256"], second["profile_version"] = "run-2", NEW, "0.2.0"
    second["score_max"] = 0.61
    store = open_store(seeded.db)
    try:
        load_sites(store, second, actor="test", rescreened=["S2_0"], model_sha256=NEW)
        by_site = {c.site_id: c.id for c in store.candidates()}
    finally:
        store.close()
    return by_site[scene["site_id"].iloc[0]], by_site[scene["site_id"].iloc[1]]


def test_score_history_and_below_threshold_flag(
    watched: Watched, served: tuple[str, Seeded]
) -> None:
    base, seeded = served
    dropped, kept = rescreened(seeded)
    page = watched.page
    log_in(page, base, "ann", seeded.password)
    open_candidate(page, kept)
    scores = page.locator("#scores li")  # newest first, each with its model
    expect(scores).to_have_count(2)
    expect(scores.nth(0)).to_contain_text(f"0.610 with model {NEW[:12]} (profile v0.2.0)")
    expect(scores.nth(1)).to_contain_text(f"with model {OLD[:12]} (profile v0.1.0)")
    assert page.is_hidden("#retrain")  # analysts do not see the retrain hint
    open_candidate(page, dropped)
    expect(page.locator("#facts")).to_contain_text(f"below threshold with model {NEW[:12]}")
    expect(page.locator("#scores li")).to_have_count(1)


def test_supervisors_see_decisions_since_the_model(
    watched: Watched, served: tuple[str, Seeded]
) -> None:
    base, seeded = served
    _, kept = rescreened(seeded)
    page = watched.page
    log_in(page, base, "sue", seeded.password)
    open_candidate(page, kept)
    expect(page.locator("#retrain-line")).to_have_text(
        re.compile(r"^\d+ decisions since the current model for brick_kilns_s2 \(none trained")
    )
    expect(page.locator("#retrain-command")).to_have_text(
        f"geoscreen train PROFILE.yaml --from-store {seeded.db} --out NEW_MODEL_DIR"
    )


def test_candidates_of_a_scene_far_from_training_are_marked(
    watched: Watched, served: tuple[str, Seeded]
) -> None:
    base, seeded = served
    first = gpd.read_parquet(seeded.folder / "sites.parquet")
    far = first[first["scene_id"] == "S2_1"].copy()
    far["run_id"] = "run-far"
    note = "S2_1.tif: 2,310 km from where the model was trained (more than 100 km)"
    store = open_store(seeded.db)
    try:
        load_sites(store, far, actor="test", warnings=[note])
        marked = next(c.id for c in store.candidates() if c.site_id == far["site_id"].iloc[0])
    finally:
        store.close()
    page = watched.page
    log_in(page, base, "ann", seeded.password)
    open_candidate(page, marked)
    mark = page.locator("#facts dd", has_text=note)
    expect(mark).to_have_count(1)
    expect(mark).to_have_attribute("title", note)
    open_candidate(page, east_candidate(seeded))
    expect(page.locator("#facts")).not_to_contain_text("from where the model was trained")
