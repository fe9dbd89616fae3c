"""Re-ranking in the store (revision 0005): a run with another model that re-screens a
scene flags the earlier candidates it no longer finds, never deletes them, keeps their
decisions, and gives the ones it finds their new score with the old one kept (SQLite and
PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import pytest
import shapely
from alembic import command
from click.testing import CliRunner
from sqlalchemy import insert, inspect, select

from geoscreen.cli.app import cli
from geoscreen.review import audit, db, migrate
from geoscreen.review.loader import load_sites
from geoscreen.review.schema import candidates, runs
from geoscreen.review.store import Store, open_store
from geoscreen.review.workflow import set_status

NOW = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
OLD, NEW = "ab" * 32, "cd" * 32


def _run(frame: gpd.GeoDataFrame, run_id: str, model: str) -> gpd.GeoDataFrame:
    out = frame.copy()
    out["run_id"], out["model_sha256"], out["scene_id"] = run_id, model, "S2_0"
    return out


def test_a_new_model_flags_what_it_no_longer_finds_and_rescores_the_rest(
    store: Store, sites: Callable[..., Path]
) -> None:
    first = _run(gpd.read_parquet(sites(6)), "r-old", OLD)
    load_sites(store, first, actor="test", rescreened=["S2_0"], model_sha256=OLD)
    by_site = {c.site_id: c for c in store.candidates()}
    dropped = by_site["site-0000000"]  # decided on, then not found by the new model
    set_status(store, dropped.id, "rejected", user="ann", reason="a road", claim=True)
    kept = by_site["site-0000001"]
    set_status(store, kept.id, "confirmed", user="ann", reason="a kiln", claim=True)
    second = _run(first.iloc[1:].copy(), "r-new", NEW)  # the new model misses site 0
    second["score_max"] = 0.51
    result = load_sites(store, second, actor="test", rescreened=["S2_0"], model_sha256=NEW)
    assert (result.below_threshold, result.found_again, result.new) == (1, 0, 0)

    assert store.count() == 6  # nothing deleted
    flagged = store.candidate(dropped.id)
    assert flagged.status == "rejected" and flagged.below_model_sha256 == NEW
    assert flagged.below_threshold == f"below threshold with model {NEW[:12]}"
    assert [e.to_status for e in store.history(dropped.id)] == ["in_review", "rejected"]
    rescored = store.candidate(kept.id)
    assert rescored.status == "confirmed" and rescored.below_threshold is None
    assert rescored.score == 0.51 and rescored.model_sha256 == NEW
    history = store.score_history(kept.id)
    assert [(h.run_id, h.model_sha256) for h in history] == [("r-old", OLD), ("r-new", NEW)]
    assert history[0].score == float(first["score_max"].iloc[1]) and history[1].score == 0.51
    entry = list(audit.entries(store, entity="run", entity_id="r-new"))[-1]
    assert entry.action == "load_run" and entry.model_sha256 == NEW
    assert json.loads(entry.after or "{}")["below_threshold"] == 1

    third = _run(first.iloc[:1].copy(), "r-third", OLD)  # finds site 0 again
    again = load_sites(store, third, actor="test", rescreened=["S2_0"], model_sha256=OLD)
    assert again.found_again == 1
    assert store.candidate(dropped.id).below_threshold is None
    assert store.candidate(kept.id).below_model_sha256 == OLD  # this run missed it


def test_a_run_of_another_scene_flags_nothing(store: Store, sites: Callable[..., Path]) -> None:
    first = _run(gpd.read_parquet(sites(3)), "r-old", OLD)
    load_sites(store, first, actor="test", rescreened=["S2_0"], model_sha256=OLD)
    other = _run(first.iloc[:0].copy(), "r-other", NEW)
    result = load_sites(store, other, profile="brick_kilns_s2", actor="test",
                        rescreened=["S2_9"], model_sha256=NEW)  # fmt: skip
    assert result.below_threshold == 0
    empty = _run(first.iloc[:0].copy(), "r-file", NEW)
    plain = load_sites(store, empty, profile="brick_kilns_s2", actor="test")
    assert plain.below_threshold == 0  # a file load names no re-screened scene
    assert all(c.below_threshold is None for c in store.candidates())


def test_review_list_and_show_print_the_flag_and_the_score_history(
    store: Store, sites: Callable[..., Path]
) -> None:
    first = _run(gpd.read_parquet(sites(2)), "r-old", OLD)
    load_sites(store, first, actor="test", rescreened=["S2_0"], model_sha256=OLD)
    load_sites(store, _run(first.iloc[1:].copy(), "r-new", NEW), actor="test",
               rescreened=["S2_0"], model_sha256=NEW)  # fmt: skip
    flagged = next(c for c in store.candidates() if c.site_id == "site-0000000")
    url = store.url.render_as_string(hide_password=False)
    runner = CliRunner()
    listed = runner.invoke(cli, ["review", "list", "--db", url])
    assert listed.exit_code == 0, listed.output
    line = next(x for x in listed.output.splitlines() if "site-0000000" in x)
    assert f"[below threshold with model {NEW[:12]}]" in line
    assert "below threshold" not in next(
        x for x in listed.output.splitlines() if "site-0000001" in x
    )
    shown = runner.invoke(cli, ["review", "show", str(flagged.id), "--db", url])
    assert shown.exit_code == 0, shown.output
    assert f"flag:       below threshold with model {NEW[:12]}" in shown.output
    assert f"with model {OLD[:12]}" in shown.output  # the score it had, and from which model
    as_json = json.loads(
        runner.invoke(cli, ["review", "show", str(flagged.id), "--db", url, "--json"]).output
    )
    assert as_json["below_model_sha256"] == NEW
    assert [s["run_id"] for s in as_json["scores"]] == ["r-old"]


# Reflecting the columns on PostGIS meets its geometry type, which SQLAlchemy does not know
# (only the names are read here).
@pytest.mark.filterwarnings("ignore:Did not recognize type 'geometry':sqlalchemy.exc.SAWarning")
def test_upgrade_from_0004_adds_the_flag_columns(db_url: str) -> None:
    engine = db.make_engine(db.resolve_url(db_url))
    try:
        with engine.begin() as conn:
            command.upgrade(migrate._config(conn), "0004")
            inserted = conn.execute(insert(runs).values(
                run_id="old", profile="p", loaded_by="t", started_at=NOW, completed_at=NOW,
                site_count=1, new_count=1,
            )).inserted_primary_key  # fmt: skip
            assert inserted is not None
            pk, box = inserted[0], shapely.box(0, 0, 1, 1).wkb
            conn.execute(insert(candidates).values(
                profile="p", site_id="s", status="confirmed", version=3, geom_wkb=box,
                minx=0, miny=0, maxx=1, maxy=1, lon=0.5, lat=0.5, last_run_pk=pk,
                created_at=NOW,
            ))  # fmt: skip
    finally:
        engine.dispose()
    with open_store(db_url) as store, store.read() as conn:
        assert migrate.current_revision(conn) == migrate.head_revision() == "0008"
        columns = {c["name"] for c in inspect(conn).get_columns("candidates")}
        assert {"below_run_pk", "below_model_sha256"} <= columns
        row = conn.execute(
            select(candidates.c.status, candidates.c.version, candidates.c.below_model_sha256)
        ).one()
    assert tuple(row) == ("confirmed", 3, None)
