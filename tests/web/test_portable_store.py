"""A store and its outputs move together: the server finds evidence and imagery from the
store alone (no --scenes, no --evidence-root); a missing scene file is a 404, not a 500."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import geopandas as gpd
import morecantile
import pytest
from fastapi.testclient import TestClient

from geoscreen.review.loader import load_sites
from geoscreen.review.store import open_store
from geoscreen.review.users import add_user
from geoscreen.samples import sample_path
from geoscreen.web.app import create_app
from geoscreen.web.auth import AuthSettings
from geoscreen.web.testing import PASSWORD, log_in, osbs_sites


def _work_folder(root: Path) -> Path:
    """A store with a run whose scene file (real NEON OSBS) and chips sit next to it."""
    scene = root / "imagery" / "osbs.tif"
    scene.parent.mkdir(parents=True)
    shutil.copy(sample_path("neon_osbs"), scene)
    sites = osbs_sites(root / "sites.parquet", root / "runs" / "evidence", count=2)
    frame = gpd.read_parquet(sites)
    frame["scene_uri"] = str(scene)  # as 'geoscreen scan' writes it
    frame.to_parquet(sites)
    with open_store(root / "review.sqlite", create=True) as store:
        add_user(store, "vic", "viewer", password=PASSWORD, actor="test")
        load_sites(store, sites, actor="test")
    return root


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _work_folder(tmp_path_factory.mktemp("work") / "project")


@pytest.fixture
def moved(original: Path, tmp_path: Path) -> Path:
    """A copy of the whole folder somewhere else; the original is out of reach."""
    copy = tmp_path / "elsewhere" / "copied"
    shutil.copytree(original, copy)
    return copy


@contextmanager
def _client(db: Path, **options: Any) -> Iterator[TestClient]:
    app = create_app(db, auth=AuthSettings(recheck_s=0.0), **options)
    try:
        with TestClient(app) as client:
            log_in(client, "vic", PASSWORD)
            yield client
    finally:
        app.state.geoscreen.store.close()


def _tile_url(detail: dict[str, Any]) -> str:
    candidate, imagery = detail["candidate"], detail["imagery"]
    tile = morecantile.tms.get("WebMercatorQuad").tile(
        candidate["lon"], candidate["lat"], imagery["maxzoom"] - 1
    )
    return f"/api/candidates/{candidate['id']}/tiles/{tile.z}/{tile.x}/{tile.y}.png"


def test_moved_folder_serves_evidence_and_imagery(original: Path, moved: Path) -> None:
    hidden = original.with_name("hidden")
    original.rename(hidden)  # nothing may still point at the original place
    try:
        with _client(moved / "review.sqlite") as client:
            detail = client.get("/api/candidates/1").json()
            assert detail["evidence"] == "/api/candidates/1/evidence"
            chip = client.get(detail["evidence"])
            assert chip.status_code == 200 and chip.content[:4] == b"\x89PNG"
            assert chip.content == (moved / "runs" / "evidence" / "osbs-0.png").read_bytes()
            assert detail["imagery"] is not None
            tile = client.get(_tile_url(detail))
            assert tile.status_code == 200 and tile.headers["content-type"] == "image/png"
    finally:
        hidden.rename(original)


def test_missing_scene_file_is_a_clear_404(moved: Path) -> None:
    scene = moved / "imagery" / "osbs.tif"
    with _client(moved / "review.sqlite") as client:
        url = _tile_url(client.get("/api/candidates/1").json())
        assert client.get(url).status_code == 200  # the scene's style is now cached
        scene.unlink()
        reply = client.get(url)
        assert reply.status_code == 404
        assert (
            "imagery not available" in reply.json()["error"] and "--scenes" in reply.json()["fix"]
        )
        detail = client.get("/api/candidates/1")
        assert detail.status_code == 200 and detail.json()["imagery"] is None
        assert detail.json()["evidence"] is not None  # the rest of the page still works
        assert client.get("/").status_code == 200


def test_scenes_option_finds_moved_scene_files(moved: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "archive"
    elsewhere.mkdir()
    shutil.move(moved / "imagery" / "osbs.tif", elsewhere / "renamed.tif")
    with _client(moved / "review.sqlite") as client:
        assert client.get("/api/candidates/1").json()["imagery"] is None
    with _client(moved / "review.sqlite", scenes=[elsewhere]) as client:
        detail = client.get("/api/candidates/2").json()
        assert client.get(_tile_url(detail)).status_code == 200
