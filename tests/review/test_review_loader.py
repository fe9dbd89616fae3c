"""Loading sites: natural keys, idempotence, and a load killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest
import shapely
from sqlalchemy import func, select

from geoscreen.errors import InputError
from geoscreen.review import audit
from geoscreen.review.loader import load_sites, prepare_sites, screened_scenes
from geoscreen.review.schema import candidates, detections, review_events, run_scenes, runs
from geoscreen.review.store import Store
from geoscreen.review.workflow import add_note, set_status
from geoscreen.sites.site import read_sites, write_sites


def _count(store: Store, table: object) -> int:
    with store.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


def test_load_is_idempotent(store: Store, sites: Callable[..., Path]) -> None:
    path = sites(50)
    first = load_sites(store, path, actor="test")
    assert (first.sites, first.new, first.seen_again, first.already_loaded) == (50, 50, 0, False)
    assert first.run_id == "run-1" and first.profile == "brick_kilns_s2"
    entries = len(list(audit.entries(store)))
    again = load_sites(store, path, actor="test")
    assert again.already_loaded and again.new == 0
    assert _count(store, candidates) == 50
    assert _count(store, detections) == 50
    assert _count(store, runs) == 1
    assert len(list(audit.entries(store))) == entries
    with store.read() as conn:
        scenes = conn.execute(select(run_scenes.c.site_count)).scalars().all()
    assert sorted(scenes) == [16, 17, 17]
    screened = screened_scenes(
        store, profile="brick_kilns_s2", profile_version="0.1.0", model_sha256="ab" * 32
    )
    assert screened == {"S2_0", "S2_1", "S2_2"}
    assert not screened_scenes(store, profile="brick_kilns_s2", profile_version="0.2.0",
                               model_sha256="ab" * 32)  # fmt: skip
    c = store.candidates(order="id")[0]
    assert (c.status, c.version, c.score_mean is not None, c.tile_count is not None) == (
        "new",
        1,
        True,
        True,
    )
    assert c.evidence_path == "evidence/site-0000000.png" and c.scene_id == "S2_0"
    assert c.acquired is not None and c.acquired.isoformat() == "2024-01-15T05:31:21+00:00"
    assert c.first_seen == c.last_seen == c.acquired


def test_second_run_updates_sightings_not_reviews(store: Store, sites: Callable[..., Path]) -> None:
    load_sites(store, sites(20, acquired="2024-01-01T00:00:00Z"), actor="test")
    set_status(store, 1, "in_review", user="ann")
    set_status(store, 1, "rejected", user="ann", reason="a quarry, not kilns")
    add_note(store, 2, "look again in spring", user="bob")
    later = sites(30, run_id="run-2", acquired="2024-06-01T00:00:00Z", seed=1)
    result = load_sites(store, later, actor="test")
    assert (result.new, result.seen_again) == (10, 20)
    assert _count(store, candidates) == 30
    assert _count(store, detections) == 50
    first = store.candidate(1)
    assert (first.status, first.version) == ("rejected", 3)
    assert first.first_seen is not None and first.first_seen.month == 1
    assert first.last_seen is not None and first.last_seen.month == 6
    assert len(store.history(1)) == 2 and len(store.history(2)) == 1
    # An older run loaded afterwards does not replace the latest sighting.
    older = sites(20, run_id="run-0", acquired="2023-06-01T00:00:00Z", seed=2)
    load_sites(store, older, actor="test")
    assert store.candidate(1).last_seen == first.last_seen
    assert _count(store, detections) == 70


def test_minimal_geojson_without_ids(store: Store, tmp_path: Path) -> None:
    frame = gpd.GeoDataFrame(
        {"score": [0.9, 0.7]},
        geometry=[shapely.box(30, 10, 30.01, 10.01), shapely.Point(31, 11).buffer(0.01)],
        crs="EPSG:4326",
    )
    path = tmp_path / "sites.geojson"
    frame.to_file(path)
    with pytest.raises(InputError, match="which profile"):
        load_sites(store, path, actor="test")
    result = load_sites(store, path, profile="camps", actor="test")
    assert result.run_id.startswith("camps:file:") and result.new == 2
    assert load_sites(store, path, profile="camps", actor="test").already_loaded
    ids = {c.site_id for c in store.candidates()}
    assert all(s.startswith("g") and len(s) == 21 for s in ids)


def test_reprojects_and_reads_gpkg(store: Store, tmp_path: Path) -> None:
    frame = gpd.GeoDataFrame(
        {"score_max": [0.8], "site_id": ["a"]},
        geometry=[shapely.box(500_000, 4_649_000, 500_100, 4_649_100)],
        crs="EPSG:32633",
    )
    path = tmp_path / "sites.gpkg"
    frame.to_file(path)
    load_sites(store, path, profile="camps", actor="test")
    c = store.candidates()[0]
    assert c.lon == pytest.approx(15.0, abs=0.01) and c.lat == pytest.approx(42.0, abs=0.01)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop(columns=["score_max"]), "no 'score' or 'score_max' column"),
        (lambda f: f.assign(site_id="same"), "appears twice"),
        (lambda f: f.assign(run_id=[f"r{i}" for i in range(len(f))]), "several values of 'run_id'"),
        (lambda f: f.assign(acquired="yesterday-ish"), "not dates"),
    ],
)
def test_bad_sites_files(
    store: Store,
    sites: Callable[..., Path],
    change: Callable[[gpd.GeoDataFrame], gpd.GeoDataFrame],
    message: str,
) -> None:
    path = sites(5)
    change(gpd.read_parquet(path)).to_parquet(path)
    with pytest.raises(InputError, match=message):
        load_sites(store, path, actor="test")
    assert _count(store, runs) == 0 and _count(store, candidates) == 0


def test_pixel_space_sites_are_refused_with_the_reason(store: Store, tmp_path: Path) -> None:
    """Sites from an image without georeference: pixel coordinates, not places on Earth."""
    frame = gpd.GeoDataFrame(
        {"site_id": ["a"], "score_max": [0.9], "profile": ["tree_crowns_neon"]},
        geometry=[shapely.box(400, 300, 460, 350)],
    )
    frame.to_parquet(tmp_path / "px.parquet")
    with pytest.raises(InputError, match=r"pixel coordinates .* cannot be stored") as err:
        load_sites(store, tmp_path / "px.parquet", actor="test")
    assert "georeferenced scene" in str(err.value.fix)
    assert _count(store, runs) == 0 and _count(store, candidates) == 0


def test_missing_file_and_profile_mismatch(
    store: Store, sites: Callable[..., Path], tmp_path: Path
) -> None:
    with pytest.raises(InputError, match="sites file not found"):
        load_sites(store, tmp_path / "none.parquet", actor="test")
    with pytest.raises(InputError, match="the file says 'brick_kilns_s2'"):
        load_sites(store, sites(3), profile="camps", actor="test")


@pytest.mark.slow
def test_sigkill_during_load_then_rerun(
    store: Store, db_url: str, sites: Callable[..., Path]
) -> None:
    """A load killed mid-transaction leaves nothing; the rerun completes; reviews survive."""
    load_sites(store, sites(200, run_id="run-1"), actor="test")
    set_status(store, 3, "in_review", user="ann")
    set_status(store, 3, "confirmed", user="ann", reason="kiln rows with chimneys")
    add_note(store, 4, "same owner as site 3?", user="bob")
    events_before = [e.to_dict() for e in store.history(3) + store.history(4)]
    big = sites(12_000, run_id="run-2", seed=5)  # first 200 site ids overlap run-1
    env = {**os.environ, "GEOSCREEN_DB": db_url}
    cmd = [sys.executable, "-m", "geoscreen", "review", "load", str(big), "--user", "ann",
           "--as-admin-of-this-file"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert line.startswith("loading: 5000/12000"), line
    os.kill(proc.pid, signal.SIGKILL)  # mid-transaction: the commit comes after the last chunk
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert _count(store, candidates) == 200
    assert _count(store, detections) == 200
    with store.read() as conn:
        assert conn.execute(select(runs.c.run_id)).scalars().all() == ["run-1"]
    assert audit.verify(store).ok
    rerun = subprocess.run([*cmd, "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["new"] == 12_000 - 200
    assert _count(store, candidates) == 12_000
    assert _count(store, detections) == 12_200
    with store.read() as conn:
        per_run = conn.execute(
            select(
                detections.c.run_pk,
                func.count(func.distinct(detections.c.candidate_id)),
                func.count(),
            )
            .group_by(detections.c.run_pk)
            .order_by(detections.c.run_pk)
        ).all()
        assert [tuple(r)[1:] for r in per_run] == [(200, 200), (12_000, 12_000)]
        assert conn.execute(select(func.count()).select_from(review_events)).scalar_one() == 3
    assert [e.to_dict() for e in store.history(3) + store.history(4)] == events_before
    assert store.candidate(3).status == "confirmed"
    assert audit.verify(store).ok


def test_concurrent_loads_of_overlapping_runs(store: Store, sites: Callable[..., Path]) -> None:
    """Two runs sharing new sites, each loaded twice at once: no duplicates, no errors."""
    paths = [sites(300, run_id="run-a", seed=1), sites(300, run_id="run-b", seed=2)]
    results = []
    errors: list[BaseException] = []

    def work(path: Path) -> None:
        try:
            results.append(load_sites(store, path, actor="test"))
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(p,)) for p in paths * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(r.already_loaded for r in results) == [False, False, True, True]
    assert _count(store, candidates) == 300 and _count(store, detections) == 600
    assert audit.verify(store).ok


def test_another_run_of_the_same_places_adds_no_candidates(
    store: Store, tmp_path: Path, sites: Callable[..., Path]
) -> None:
    """Each run names its sites afresh (``sites extract`` hashes the run into the id), so
    a place found by two runs is matched by its outline, as ``scan`` matches it."""
    first = sites(12)
    load_sites(store, first, actor="test")
    set_status(store, 1, "in_review", user="ann")
    again = gpd.read_parquet(first)
    again["site_id"] = [f"other-run-{i}" for i in range(len(again))]
    again["run_id"] = "run-2"
    shifted = again.copy()  # the same places, outlines moved by a tenth of their width
    shifted["geometry"] = shifted.geometry.translate(0.0002, 0.0)
    far = again.iloc[:2].copy()  # two places no earlier run found
    far["geometry"] = far.geometry.translate(1.0, 1.0)
    far["site_id"] = ["far-0", "far-1"]
    table = gpd.GeoDataFrame(pd.concat([shifted, far], ignore_index=True), crs=again.crs)
    path = tmp_path / "run2.parquet"
    table.to_parquet(path)
    result = load_sites(store, path, actor="test")
    assert (result.new, result.seen_again) == (2, 12)
    assert _count(store, candidates) == 14
    assert _count(store, detections) == 26
    reviewed = store.candidate(1)
    assert (reviewed.status, reviewed.site_id) == ("in_review", "site-0000000")
    with store.read() as conn:
        per_candidate = conn.execute(
            select(detections.c.candidate_id, func.count()).group_by(detections.c.candidate_id)
        ).all()
    assert sorted(n for _, n in per_candidate) == [1, 1] + [2] * 12
    ids = {c.site_id for c in store.candidates()}
    assert {"far-0", "far-1"} <= ids and not any(i.startswith("other-run") for i in ids)


def test_points_are_not_matched_by_outline(store: Store, tmp_path: Path) -> None:
    """Points have no outline to overlap: a second run of points adds its own candidates
    unless their ids match (IoU matching needs areas)."""
    for run in ("a", "b"):
        frame = gpd.GeoDataFrame(
            {"score": [0.9], "site_id": [f"{run}-0"], "run_id": [run]},
            geometry=[shapely.Point(30, 10)],
            crs="EPSG:4326",
        )
        frame.to_file(tmp_path / f"{run}.geojson")
        load_sites(store, tmp_path / f"{run}.geojson", profile="camps", actor="test")
    assert _count(store, candidates) == 2


def test_an_objects_table_loads_what_scores_at_its_threshold(
    store: Store, sites: Callable[..., Path], tmp_path: Path
) -> None:
    """A detection screen's objects.parquet holds every object and the threshold in force:
    only the objects at or above it become candidates, and the run keeps the threshold."""
    frame = read_sites(sites(30))
    frame["score_max"] = [0.02 * k for k in range(30)]  # 0.00 .. 0.58
    objects = frame.assign(threshold=0.4)
    path = tmp_path / "objects.parquet"
    write_sites(objects, path)
    prepared = prepare_sites(path)
    assert (prepared.threshold, prepared.below_threshold, len(prepared.rows)) == (0.4, 20, 10)
    result = load_sites(store, prepared, actor="test")
    assert result.sites == result.new == 10
    assert sorted(c.score for c in store.candidates()) == pytest.approx(
        [0.02 * k for k in range(20, 30)]
    )
    with store.read() as conn:
        assert conn.execute(select(runs.c.threshold)).scalar_one() == pytest.approx(0.4)
    # A table whose threshold column holds several values is not one screening's.
    write_sites(frame.assign(threshold=[0.4] * 15 + [0.5] * 15), tmp_path / "mixed.parquet")
    with pytest.raises(InputError, match="holds 2 values"):
        prepare_sites(tmp_path / "mixed.parquet")
