"""A seeded review store for tests and benchmarks of the review server.

Candidates come in through the store's own loader: ``n`` synthetic sites (from
:func:`geoscreen.review.testing.make_sites`, with small PNG evidence chips) and a few
sites inside the bundled NEON OSBS image (real imagery, EPSG:32617) so that imagery
tiles can be served. Users of every role share one password.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from affine import Affine
from PIL import Image
from rasterio.warp import transform_bounds

from geoscreen.imagery.scene import open_scene
from geoscreen.review.loader import load_sites
from geoscreen.review.store import open_store
from geoscreen.review.testing import make_sites
from geoscreen.review.users import add_user
from geoscreen.samples import sample_path

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

PASSWORD = "correct horse battery staple"
PEOPLE = {"vic": "viewer", "ann": "analyst", "bob": "analyst", "sue": "supervisor",
          "sam": "supervisor"}  # fmt: skip
IMAGERY_PROFILE = "new_structures_rgb"
_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


@dataclass(frozen=True)
class Seeded:
    """Where the seeded store and its files are."""

    db: Path
    folder: Path
    scenes: list[Path]
    evidence_root: Path
    users: dict[str, str] = field(default_factory=lambda: dict(PEOPLE))
    password: str = PASSWORD


def chip(path: Path, seed: int, size: int = 48) -> Path:
    """A small PNG standing in for an evidence chip (a coloured square with a ring)."""
    rng = np.random.default_rng(seed)
    pixels = np.broadcast_to(rng.integers(60, 200, 3, dtype=np.uint8), (size, size, 3)).copy()
    yy, xx = np.mgrid[:size, :size]
    ring = np.abs(np.hypot(yy - size / 2, xx - size / 2) - size / 3) < 1.5
    pixels[ring] = (255, 220, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def neighbour_scene(path: Path, source: Path | None = None) -> Path:
    """A second real scene next to the OSBS image: its pixels mirrored, placed just east
    of it (one image width on), as the next tile of a mosaic would be."""
    with rasterio.open(source or sample_path("neon_osbs")) as src:
        pixels = src.read()[:, :, ::-1]
        profile = src.profile
        profile.update(transform=src.transform * Affine.translation(src.width, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as out:
        out.write(pixels)
    return path


def osbs_sites(
    path: Path,
    evidence: Path,
    count: int = 3,
    *,
    scene_file: Path | None = None,
    prefix: str = "osbs",
) -> Path:
    """``count`` small sites inside the OSBS image (or ``scene_file``), detected in it."""
    scene = open_scene(scene_file or sample_path("neon_osbs"))
    assert scene.crs is not None
    west, south, east, north = transform_bounds(scene.crs, "EPSG:4326", *scene.bounds)
    step = (east - west) / (count + 1)
    half = step / 4
    centres = [(west + step * (i + 1), (south + north) / 2) for i in range(count)]
    ids = [f"{prefix}-{i}" for i in range(count)]
    frame = gpd.GeoDataFrame(
        {
            "site_id": ids,
            "score_max": np.linspace(0.95, 0.55, count),
            "scene_id": scene.id,
            "profile": IMAGERY_PROFILE,
            "profile_version": "0.1.0",
            "run_id": f"{prefix}-run",
            "model_sha256": "cd" * 32,
            "evidence_path": [str(chip(evidence / f"{s}.png", 100 + i)) for i, s in enumerate(ids)],
        },
        geometry=[shapely.box(x - half, y - half, x + half, y + half) for x, y in centres],
        crs="EPSG:4326",
    )
    frame.to_parquet(path)
    return path


def seed(
    folder: str | Path,
    n: int = 200,
    *,
    chips: int | None = None,
    imagery_sites: int = 3,
    second_scene: bool = False,
) -> Seeded:
    """A SQLite store in ``folder`` with ``n`` + ``imagery_sites`` candidates and users.

    The first ``chips`` synthetic sites (default: all) get an evidence chip file.
    ``second_scene``: also a scene next to the OSBS image (:func:`neighbour_scene`) with
    ``imagery_sites`` more sites, given to the server as a scene file.
    """
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    evidence = root / "evidence"
    db = root / "review.sqlite"
    store = open_store(db, create=True)
    try:
        for name, role in PEOPLE.items():
            add_user(store, name, role, password=PASSWORD, actor="seed")
        if n:
            sites = make_sites(root / "sites.parquet", n)
            for i in range(n if chips is None else min(chips, n)):
                chip(evidence / f"site-{i:07d}.png", i)
            load_sites(store, sites, actor="seed")
        scene_files = [sample_path("neon_osbs")]
        if imagery_sites:
            load_sites(store, osbs_sites(root / "osbs.parquet", evidence), actor="seed")
        if imagery_sites and second_scene:
            east = neighbour_scene(root / "scenes" / "OSBS_029_east.tif")
            scene_files.append(east)
            sites = osbs_sites(
                root / "east.parquet", evidence, imagery_sites, scene_file=east, prefix="east"
            )
            load_sites(store, sites, actor="seed")
    finally:
        store.close()
    return Seeded(db, root, scene_files, root)


def page_token(html: str) -> str:
    """The CSRF token a page carries in its meta tag."""
    found = _META.search(html)
    if found is None:
        raise AssertionError("no CSRF token in the page")
    return found.group(1)


def log_in(client: TestClient, user: str, password: str) -> str:
    """Log a test client in through the login page; returns the review page's CSRF token."""
    form = client.get("/login")
    reply = client.post(
        "/api/login",
        json={"username": user, "password": password},
        headers={"X-CSRF-Token": page_token(form.text)},
    )
    if reply.status_code != 200:
        raise AssertionError(f"login failed: {reply.status_code} {reply.text}")
    return page_token(client.get("/").text)
