"""What runs record of their profile (threshold, review rules; store revision 0004), and
the workflow and review server following it (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import pytest
from alembic import command
from sqlalchemy import insert, inspect, select

from geoscreen.profiles import Profile, ReviewPolicy, load_profile
from geoscreen.review import audit, db, migrate
from geoscreen.review.errors import TransitionError
from geoscreen.review.loader import load_sites
from geoscreen.review.policy import run_policy
from geoscreen.review.schema import runs
from geoscreen.review.store import Store, open_store
from geoscreen.review.workflow import set_status
from geoscreen.web.app import create_app

CONFIGS = Path(__file__).resolve().parents[2] / "geoscreen" / "configs"
NOW = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)


def _profile(**review: bool) -> Profile:
    base = load_profile(CONFIGS / "brick_kilns_s2.yaml", check_files=False)
    return base.model_copy(update={"review": ReviewPolicy(**review)})


def _frame(path: Path) -> gpd.GeoDataFrame:
    return gpd.read_parquet(path)


def test_upgrade_from_0003_adds_run_threshold_and_policy(db_url: str) -> None:
    engine = db.make_engine(db.resolve_url(db_url))
    try:
        with engine.begin() as conn:
            command.upgrade(migrate._config(conn), "0003")
            conn.execute(insert(runs).values(
                run_id="old", profile="p", loaded_by="t", started_at=NOW, completed_at=NOW,
                site_count=0, new_count=0,
            ))  # fmt: skip
    finally:
        engine.dispose()
    with open_store(db_url) as store, store.read() as conn:
        assert migrate.current_revision(conn) == migrate.head_revision() == "0008"
        assert {"threshold", "policy"} <= {c["name"] for c in inspect(conn).get_columns("runs")}
        old = conn.execute(select(runs.c.run_id, runs.c.threshold, runs.c.policy)).all()
        assert old == [("old", None, None)]
        assert store.run_thresholds() == {}


def test_a_run_records_its_threshold_and_the_server_uses_it(
    store: Store, sites: Callable[..., Path]
) -> None:
    profile = _profile()
    frame = _frame(sites(5, profile=profile.name))
    load_sites(store, frame, actor="test", source="scan:test",
               policy=run_policy(profile, 0.37, "model card"))  # fmt: skip
    with store.read() as conn:
        row = conn.execute(select(runs.c.threshold, runs.c.policy, runs.c.source)).one()
    assert row.threshold == pytest.approx(0.37) and row.source == "scan:test"
    recorded = json.loads(row.policy)
    assert recorded["profile_version"] == profile.version
    assert recorded["threshold_source"] == "model card"
    assert recorded["review"]["reason_required"] is True
    assert store.run_thresholds() == {profile.name: pytest.approx(0.37)}
    app = create_app(store)  # no profile files given: the run's threshold, not 0.5
    assert app.state.geoscreen.index.threshold(profile.name) == pytest.approx(0.37)
    assert create_app(store, thresholds={profile.name: 0.9}).state.geoscreen.index.threshold(
        profile.name
    ) == pytest.approx(0.9)


def test_the_review_section_of_the_run_s_profile_drives_the_workflow(
    store: Store, sites: Callable[..., Path]
) -> None:
    relaxed = _profile(reason_required=False, escalation_requires_second_reviewer=False)
    load_sites(store, _frame(sites(3, profile=relaxed.name)), actor="test",
               policy=run_policy(relaxed, 0.5, "profile"))  # fmt: skip
    # This profile asks for no reason and no second reviewer: sue confirms and escalates.
    set_status(store, 1, "in_review", user="sue")
    set_status(store, 1, "confirmed", user="sue")
    done = set_status(store, 1, "escalated", user="sue")
    assert done.status == "escalated"
    last = list(audit.entries(store))[-1]
    assert json.loads(last.after)["rules"] == {"reason_required": False, "second_reviewer": False,
                                   "profile": relaxed.name,
                                   "profile_version": relaxed.version}  # fmt: skip


def test_runs_without_a_policy_keep_the_strict_rules(
    store: Store, sites: Callable[..., Path]
) -> None:
    load_sites(store, sites(3), actor="test")  # a sites file: no profile rules recorded
    set_status(store, 1, "in_review", user="sue")
    with pytest.raises(TransitionError, match="give a reason"):
        set_status(store, 1, "confirmed", user="sue")
    set_status(store, 1, "confirmed", user="sue", reason="rows of kilns")
    with pytest.raises(TransitionError, match="second reviewer"):
        set_status(store, 1, "escalated", user="sue", reason="share")
