"""``geoscreen map`` and ``geoscreen serve`` end to end."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest

import geoscreen.cli.web as cli_web
from geoscreen.cli import main
from geoscreen.review.store import open_store
from geoscreen.review.workflow import set_status
from geoscreen.samples import sample_path
from geoscreen.web.server import is_loopback
from geoscreen.web.testing import seed


class _Loads(HTMLParser):
    """Every URL a page loads: ``src`` attributes and stylesheet links."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value and (name == "src" or (tag == "link" and name == "href")):
                self.urls.append(value)


def _loads(page: str) -> list[str]:
    parser = _Loads()
    parser.feed(page)
    return parser.urls


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded store (30 + 3 candidates) with one candidate confirmed."""
    seeded = seed(tmp_path_factory.mktemp("cli-web"), 30)
    with open_store(seeded.db) as store:
        set_status(store, 1, "confirmed", user="ann", reason="kiln rows", claim=True)
    return seeded.db


def test_map_writes_an_offline_file(
    store_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "map.html"
    code, stdout, err = run(capsys, "map", "--db", str(store_path), "--out", str(out),
                            "--no-imagery")  # fmt: skip
    assert code == 0, err
    assert stdout.strip() == f"map of 33 candidates written to {out}"
    assert err == ""
    page = out.read_text()
    assert [url for url in _loads(page) if re.match(r"(https?:)?//", url)] == []
    assert "L.map(" in page and "matches profile brick_kilns_s2" in page
    assert "in_review -&gt; confirmed (kiln rows)" in page  # review history in the popup
    assert "trafficking" not in page.lower()


def test_map_finds_chips_next_to_the_store(
    store_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Evidence paths are stored relative to the store's folder: found from anywhere."""
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "map", "--db", str(store_path), "--out", "map.html")
    assert code == 0, err
    page = (tmp_path / "map.html").read_text()
    assert "evidence chip" not in page  # every chip (33) found and embedded, none a link
    assert page.count("data:image/png;base64,") >= 33


def test_map_names_scenes_it_cannot_draw(
    store_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Synthetic sites name scenes that exist nowhere; the OSBS scene is found when given."""
    out = tmp_path / "map.html"
    code, stdout, err = run(capsys, "map", "--db", str(store_path), "--out", str(out))
    assert code == 0 and stdout.startswith("map of 33 candidates written")
    assert "imagery of 4 scene(s) not found here" in err and "--scenes" in err
    given = ["--scenes", str(sample_path("neon_osbs"))]
    code, stdout, err = run(capsys, "map", "--db", str(store_path), "--out", str(out), *given)
    assert code == 0 and "over 1 scene(s)" in stdout and "3 scene(s) not found" in err
    assert "imagery: OSBS_029.tif" in out.read_text()


def test_map_filters_and_opt_in_basemap(
    store_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "confirmed.html"
    args = ["map", "--db", str(store_path), "--out", str(out), "--status", "confirmed"]
    code, stdout, _ = run(capsys, *args, "--basemap", "osm")
    assert code == 0 and stdout.startswith("map of 1 candidates written")
    assert "(with a remote basemap)" in stdout
    assert "tile.openstreetmap.org" in out.read_text()
    code, _, err = run(capsys, *args, "--basemap", "not-a-template")
    assert code == 2 and err.startswith("geoscreen: error: unknown basemap")


def test_map_warns_when_large(
    store_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cli_web, "MAP_WARN_AT", 10)  # the real threshold is 5,000
    out = tmp_path / "big.html"
    code, _, err = run(capsys, "map", "--db", str(store_path), "--out", str(out))
    assert code == 0
    assert "warning: 33 candidates: the map file is large" in err
    assert "markerClusterGroup" in out.read_text()


def test_map_and_serve_refuse_bad_stores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "none.sqlite"
    for args in (["map", "--out", str(tmp_path / "m.html")], ["serve"]):
        code, _, err = run(capsys, *args, "--db", str(missing))
        assert code == 2 and err.startswith("geoscreen: error:") and err.count("\n") == 1
    assert not missing.exists() and not (tmp_path / "m.html").exists()
    code, _, err = run(
        capsys, "map", "--db", str(missing), "--out", str(tmp_path / "no" / "m.html")
    )
    assert code == 2


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_serve_listens_on_loopback(store_path: Path, tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "GEOSCREEN_DB": str(store_path)}
    server = subprocess.Popen(
        [sys.executable, "-m", "geoscreen", "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 60
        status = None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=2) as reply:
                    status = reply.status
                    page = reply.read().decode()
                break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        assert status == 200, server.stderr.read() if server.poll() is not None else "no answer"
        assert 'name="csrf-token"' in page
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/summary", timeout=2)
        assert refused.value.code == 401
    finally:
        server.terminate()
        stdout, _ = server.communicate(timeout=20)
    assert f"http://127.0.0.1:{port}/ (Ctrl-C stops)" in stdout


def test_only_loopback_counts_as_local() -> None:
    for host in ("127.0.0.1", "127.3.4.5", "::1", "localhost"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "192.168.1.20", "review.example.org"):
        assert not is_loopback(host), host


def test_map_draws_the_scenes_with_most_candidates_first(
    store_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A file with imagery of every scene of a large scan would be huge: the busiest first."""
    monkeypatch.setattr(cli_web, "MAX_QUICKLOOKS", 1)
    out = tmp_path / "map.html"
    code, _, err = run(capsys, "map", "--db", str(store_path), "--out", str(out))
    assert code == 0
    assert "drawing the imagery of 1 of 4 scenes (those with most candidates)" in err
    assert "1 scene(s) not found here" in err  # the busiest synthetic scene, not OSBS (3 sites)
