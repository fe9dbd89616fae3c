"""Fixtures for the attacks on the review store: every case runs on SQLite and, with
``GEOSCREEN_TEST_PG_URL`` set (``.ci/run``), on PostgreSQL + PostGIS in its own schema."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from geoscreen.review.store import Store, open_store
from geoscreen.review.testing import make_sites
from geoscreen.review.users import add_user

PEOPLE = {"vic": "viewer", "ann": "analyst", "bob": "analyst", "sue": "supervisor",
          "ada": "admin"}  # fmt: skip
PASSWORD = "correct horse battery"


@pytest.fixture
def password() -> str:
    """Every user's password in :func:`store`."""
    return PASSWORD


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A new store with the people of :data:`PEOPLE`, each with :data:`PASSWORD`."""
    opened = open_store(db_url, create=True)
    for name, role in PEOPLE.items():
        add_user(opened, name, role, password=PASSWORD, actor="test")
    yield opened
    opened.close()


@pytest.fixture
def sites(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``sites(n, **make_sites options)`` writes a GeoParquet sites file."""
    counter = iter(range(1_000_000))

    def make(n: int = 20, **options: object) -> Path:
        return make_sites(tmp_path / f"sites_{next(counter)}.parquet", n, **options)

    return make
