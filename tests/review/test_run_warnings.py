"""Run warnings (revision 0006): a run stores what it warned of its scene (far from the
model's training region), and its candidates report it; older stores upgrade."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import shapely
from alembic import command
from click.testing import CliRunner
from sqlalchemy import insert, inspect, select

from geoscreen.cli.app import cli
from geoscreen.review import db, migrate
from geoscreen.review.loader import load_sites
from geoscreen.review.schema import candidates, runs
from geoscreen.review.store import Store, open_store

NOW = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
FAR = "scene.tif: 1,000 km from where the model was trained (more than 100 km)"


def test_warnings_are_stored_with_the_run_and_shown_per_candidate(
    store: Store, sites: Callable[..., Path]
) -> None:
    load_sites(store, sites(5, run_id="near", first_site=0), actor="t")
    load_sites(store, sites(5, run_id="far", first_site=100, seed=1), actor="t", warnings=[FAR])
    found = store.candidates()
    assert len(found) == 10
    for c in found:
        expected = [FAR] if int(c.site_id.split("-")[1]) >= 100 else []
        assert store.scene_warnings(c.id) == expected
    # review show says it too (text and JSON)
    far = next(c for c in found if c.site_id.endswith("100"))
    near = next(c for c in found if c.site_id.endswith("000"))
    runner = CliRunner()
    url = store.url.render_as_string(hide_password=False)
    shown = runner.invoke(cli, ["review", "show", str(far.id), "--db", url])
    assert shown.exit_code == 0, shown.output
    assert f"warning:    {FAR}" in shown.output
    shown = runner.invoke(cli, ["review", "show", str(near.id), "--db", url, "--json"])
    assert shown.exit_code == 0 and json.loads(shown.output)["scene_warnings"] == []


def test_upgrade_from_0005_adds_the_warnings_column(db_url: str) -> None:
    engine = db.make_engine(db.resolve_url(db_url))
    try:
        with engine.begin() as conn:
            command.upgrade(migrate._config(conn), "0005")
            inserted = conn.execute(insert(runs).values(
                run_id="old", profile="p", loaded_by="t", started_at=NOW, completed_at=NOW,
                site_count=1, new_count=1,
            )).inserted_primary_key  # fmt: skip
            assert inserted is not None
            conn.execute(insert(candidates).values(
                profile="p", site_id="s", status="confirmed", version=3,
                geom_wkb=shapely.box(0, 0, 1, 1).wkb, minx=0, miny=0, maxx=1, maxy=1,
                lon=0.5, lat=0.5, last_run_pk=inserted[0], created_at=NOW,
            ))  # fmt: skip
    finally:
        engine.dispose()
    with open_store(db_url) as store:
        with store.read() as conn:
            assert migrate.current_revision(conn) == migrate.head_revision() == "0008"
            assert "warnings" in {c["name"] for c in inspect(conn).get_columns("runs")}
            assert conn.execute(select(runs.c.warnings)).scalar_one() is None
            cid = conn.execute(select(candidates.c.id)).scalar_one()
        assert store.scene_warnings(cid) == []
