"""Review-server fixtures: a seeded SQLite store (copied per test), apps and logged-in clients."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from geoscreen.web.app import create_app
from geoscreen.web.auth import AuthSettings
from geoscreen.web.testing import Seeded, log_in, seed

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM = Path("/usr/bin/chromium")  # Debian's (.ci/run installs it); the tests skip without
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


@pytest.fixture(scope="session")
def seeded_template(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    """One seeded store per test process: 200 synthetic sites (50 chips) + 3 in OSBS."""
    return seed(tmp_path_factory.mktemp("seeded"), 200, chips=50)


@pytest.fixture
def seeded(seeded_template: Seeded, tmp_path: Path) -> Seeded:
    """A private copy of the seeded store (evidence and scenes stay shared, read-only)."""
    for suffix in ("", "-wal", "-shm"):
        source = Path(str(seeded_template.db) + suffix)
        if source.exists():
            shutil.copy(source, tmp_path / (source.name))
    return dataclasses.replace(seeded_template, db=tmp_path / seeded_template.db.name)


@pytest.fixture
def app(seeded: Seeded) -> Iterator[FastAPI]:
    """The review app on the seeded store (users re-checked on every request)."""
    made = create_app(
        seeded.db,
        scenes=seeded.scenes,
        evidence_root=seeded.evidence_root,
        auth=AuthSettings(recheck_s=0.0),
    )
    yield made
    made.state.geoscreen.store.close()


Login = Callable[[str], tuple[TestClient, str]]


@pytest.fixture
def login(app: FastAPI, seeded: Seeded) -> Login:
    """Factory: ``login(user)`` gives a logged-in client and its CSRF token."""

    def make(user: str) -> tuple[TestClient, str]:
        client = TestClient(app)
        return client, log_in(client, user, seeded.password)

    return make


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium for the page tests of one module."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()
