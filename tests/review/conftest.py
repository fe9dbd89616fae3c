"""Review-store fixtures: every store test runs on SQLite and on PostgreSQL + PostGIS.

PostgreSQL comes from ``GEOSCREEN_TEST_PG_URL`` (``.ci/run`` starts a local cluster
with ``.ci/postgres.sh`` and sets it); without it the PostgreSQL cases are skipped.
Each PostgreSQL test gets its own schema.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from geoscreen.review.store import Store, open_store
from geoscreen.review.testing import make_sites
from geoscreen.review.users import add_user

PEOPLE = {
    "vic": "viewer",
    "ann": "analyst",
    "bob": "analyst",
    "sue": "supervisor",
    "sam": "supervisor",
    "ada": "admin",
}


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A new, empty store with the people of :data:`PEOPLE`."""
    opened = open_store(db_url, create=True)
    for name, role in PEOPLE.items():
        add_user(opened, name, role, actor="test")
    yield opened
    opened.close()


@pytest.fixture
def sites(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``sites(n, name=..., **make_sites options)`` writes a GeoParquet sites file."""
    counter = iter(range(1_000_000))

    def make(n: int = 20, name: str | None = None, **options: object) -> Path:
        path = tmp_path / (name or f"sites_{next(counter)}.parquet")
        return make_sites(path, n, **options)

    return make
