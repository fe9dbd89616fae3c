"""Helpers for tests and benchmarks: synthetic sites files, throwaway PostgreSQL schemas,
and dropping a store's guard triggers as an attacker with write access would.

``GEOSCREEN_TEST_PG_URL`` names a PostgreSQL + PostGIS database for tests (``.ci/run``
starts one with ``.ci/postgres.sh``); each store then lives in its own schema.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from sqlalchemy import Connection, create_engine, text

from geoscreen.review.db import resolve_url

PG_ENV = "GEOSCREEN_TEST_PG_URL"


def make_sites(
    path: str | Path,
    n: int,
    *,
    run_id: str | None = "run-1",
    profile: str | None = "brick_kilns_s2",
    first_site: int = 0,
    bounds: tuple[float, float, float, float] = (70.0, 20.0, 80.0, 30.0),
    acquired: str = "2024-01-15T05:31:21Z",
    seed: int = 0,
    size_deg: float = 0.002,
) -> Path:
    """A GeoParquet sites file shaped like the sites stage's output (EPSG:4326 squares)."""
    rng = np.random.default_rng(seed)
    lon = rng.uniform(bounds[0], bounds[2], n)
    lat = rng.uniform(bounds[1], bounds[3], n)
    half = size_deg / 2
    geometry = shapely.box(lon - half, lat - half, lon + half, lat + half)
    columns: dict[str, object] = {
        "site_id": [f"site-{first_site + i:07d}" for i in range(n)],
        "score_max": rng.uniform(0.5, 1.0, n).round(4),
        "score_mean": rng.uniform(0.3, 0.5, n).round(4),
        "tile_count": rng.integers(1, 5, n),
        "area_m2": np.full(n, 40_000.0),
        "scene_id": [f"S2_{i % 3}" for i in range(n)],
        "acquired": np.full(n, np.datetime64(acquired.rstrip("Z"), "ns")),
        "profile_version": "0.1.0",
        "model_sha256": "ab" * 32,
        "evidence_path": [f"evidence/site-{first_site + i:07d}.png" for i in range(n)],
        "detections": rng.integers(1, 9, n),
    }
    if run_id is not None:
        columns["run_id"] = run_id
    if profile is not None:
        columns["profile"] = profile
    frame = gpd.GeoDataFrame(columns, geometry=geometry, crs="EPSG:4326")
    frame["acquired"] = frame["acquired"].dt.tz_localize(dt.UTC)
    target = Path(path)
    frame.to_parquet(target)
    return target


def pg_base_url() -> str | None:
    """The test database URL, if one is configured."""
    return os.environ.get(PG_ENV) or None


@contextmanager
def pg_schema(base_url: str, prefix: str = "gs_test") -> Iterator[str]:
    """A URL whose store lives in a fresh schema (dropped afterwards)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    url = resolve_url(base_url)
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{name}"'))
        scoped = url.update_query_dict({"options": f"-csearch_path={name},public"})
        yield scoped.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        admin.dispose()


def drop_guards(conn: Connection) -> list[str]:
    """Drop every trigger that guards the store's tables (the spatial index's stay), as
    someone who owns the file or database can; returns their names. For tamper tests:
    what is changed afterwards is what ``audit verify`` must find."""
    if conn.dialect.name == "sqlite":
        query = (
            "SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger' "
            "AND name NOT LIKE 'candidates_rtree%' ORDER BY name"
        )
        found = [tuple(r) for r in conn.execute(text(query))]
        for name, _table in found:
            conn.execute(text(f'DROP TRIGGER "{name}"'))
    else:
        query = (
            "SELECT t.tgname, c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "WHERE NOT t.tgisinternal AND c.relnamespace = current_schema()::regnamespace "
            "ORDER BY t.tgname"
        )
        found = [tuple(r) for r in conn.execute(text(query))]
        for name, table in found:
            conn.execute(text(f'DROP TRIGGER "{name}" ON "{table}"'))
    return [str(name) for name, _table in found]
