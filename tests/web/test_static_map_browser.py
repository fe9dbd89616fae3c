"""The static ``map.html`` opened from disk in Debian's Chromium (headless, Playwright).

The page must run with no script error and no request leaving the file (only
``file:`` and ``data:`` URLs are let through), open on the candidates, and draw the
screened imagery under them, with a layer switch. Screenshots go to ``tests/artifacts/``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, Route

from geoscreen.cli import main
from geoscreen.demo import write_map
from geoscreen.review.store import open_store
from geoscreen.samples import sample_path
from geoscreen.web.testing import seed

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
_MAP_VAR = re.compile(r"var (map_[0-9a-f]+) = L\.map\(")

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium at /usr/bin/chromium (.ci/run installs it)",
)


@pytest.fixture(scope="module")
def store_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with three candidates inside the bundled OSBS image (real imagery)."""
    return seed(tmp_path_factory.mktemp("static-map"), 0, imagery_sites=3).db


class Opened:
    """A page opened from disk, with what it tried to load and the errors it threw."""

    def __init__(self, page: Page, html: Path) -> None:
        self.page = page
        found = _MAP_VAR.search(html.read_text(encoding="utf-8"))
        assert found is not None, "no Leaflet map in the page"
        self.map_var = found.group(1)
        self.elsewhere: list[str] = []
        self.errors: list[str] = []


Opener = Callable[[Path], Opened]


@pytest.fixture
def open_file(browser: Browser) -> Iterator[Opener]:
    contexts = []
    opened_pages: list[Opened] = []

    def opener(html: Path) -> Opened:
        context = browser.new_context(viewport={"width": 1200, "height": 800})
        contexts.append(context)
        page = context.new_page()
        opened = Opened(page, html)

        def gate(route: Route) -> None:
            url = route.request.url
            if url.startswith(("file:", "data:", "blob:")):
                route.continue_()
            else:
                opened.elsewhere.append(url)
                route.abort()

        context.route("**/*", gate)
        page.on("pageerror", lambda exc: opened.errors.append(str(exc)))
        page.on(
            "console",
            lambda msg: opened.errors.append(msg.text) if msg.type == "error" else None,
        )
        page.goto(html.resolve().as_uri())
        page.wait_for_load_state("load")
        opened_pages.append(opened)
        return opened

    yield opener
    for context in contexts:
        context.close()
    for opened in opened_pages:
        assert opened.errors == [], opened.errors
        assert opened.elsewhere == [], f"the page asked other hosts: {opened.elsewhere}"


def _candidate_box(db: Path) -> tuple[float, float, float, float]:
    with open_store(db) as store:
        frame = store.frame()
    west, south, east, north = frame.total_bounds
    return float(west), float(south), float(east), float(north)


def _check_view(opened: Opened, db: Path) -> None:
    page, name = opened.page, opened.map_var
    west, south, east, north = _candidate_box(db)
    zoom = page.evaluate(f"{name}.getZoom()")
    centre = page.evaluate(f"[{name}.getCenter().lat, {name}.getCenter().lng]")
    view = page.evaluate(f"{name}.getBounds().toBBoxString()").split(",")
    assert zoom >= 12, zoom  # on the candidates (a few hundred metres), not the world
    assert south <= centre[0] <= north and west <= centre[1] <= east, (centre, west, south)
    vw, vs, ve, vn = (float(v) for v in view)
    assert vw <= west and vs <= south and ve >= east and vn >= north  # all in view


def _imagery_drawn(page: Page) -> int:
    """How many imagery overlays are loaded and overlap the visible map."""
    return int(
        page.evaluate(
            """() => {
              const box = document.querySelector('.leaflet-container').getBoundingClientRect();
              return [...document.querySelectorAll('img.leaflet-image-layer')].filter(img => {
                const r = img.getBoundingClientRect();
                return img.complete && img.naturalWidth > 0 && r.right > box.left &&
                  r.left < box.right && r.bottom > box.top && r.top < box.bottom;
              }).length;
            }"""
        )
    )


def test_cli_map_opens_on_candidates_over_imagery(
    store_db: Path, tmp_path: Path, open_file: Opener, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "map.html"
    code = main(["map", "--db", str(store_db), "--out", str(out),
                 "--scenes", str(sample_path("neon_osbs"))])  # fmt: skip
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert "over 1 scene(s)" in stdout
    opened = open_file(out)
    page = opened.page
    _check_view(opened, store_db)
    assert _imagery_drawn(page) == 1
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "static_map.png"
    page.screenshot(path=str(shot))
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float32)
    assert pixels.std(axis=(0, 1)).mean() > 20  # imagery, not a flat grey page
    # the layer switch turns the imagery off and on again
    switch = page.locator(".leaflet-control-layers-overlays label", has_text="imagery: ")
    switch.locator("input").uncheck()
    assert _imagery_drawn(page) == 0
    switch.locator("input").check()
    assert _imagery_drawn(page) == 1
    # a candidate's popup opens (plain Leaflet: no jQuery needed)
    page.locator("path.leaflet-interactive").first.click()
    popup = page.wait_for_selector(".leaflet-popup-content")
    assert popup is not None and "matches profile" in popup.inner_text()


def test_demo_map_opens_with_no_script_error(
    store_db: Path, tmp_path: Path, open_file: Opener
) -> None:
    out, count = write_map(store_db, [sample_path("neon_osbs")], tmp_path / "map.html")
    assert count == 3
    opened = open_file(out)
    _check_view(opened, store_db)
    assert _imagery_drawn(opened.page) == 1
    opened.page.screenshot(path=str(ARTIFACTS / "demo_map.png"))


def test_evaluation_map_opens_with_no_script_error(tmp_path: Path, open_file: Opener) -> None:
    """``geoscreen evaluate``'s map.html: the same offline page rules."""
    image, labels = sample_path("neon_osbs"), sample_path("neon_osbs_labels")
    boxes = pd.read_csv(labels).head(20).assign(score=0.9)
    boxes.to_csv(tmp_path / "pred.csv", index=False)
    code = main(["evaluate", "--predicted", str(tmp_path / "pred.csv"), "--image", str(image),
                 "--truth", str(labels), "--bootstrap", "0",
                 "--out", str(tmp_path / "eval")])  # fmt: skip
    assert code == 0
    opened = open_file(tmp_path / "eval" / "map.html")
    zoom = opened.page.evaluate(f"{opened.map_var}.getZoom()")
    assert zoom >= 15  # on the 40 m scene, not the world
    assert opened.page.locator("path.leaflet-interactive").count() >= 20
