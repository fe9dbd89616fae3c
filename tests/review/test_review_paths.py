"""Portable paths: scene file locations (migration 0002) and evidence paths that move with
a SQLite store's folder; PostgreSQL keeps absolute paths."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import geopandas as gpd
import shapely
from alembic import command
from sqlalchemy import Connection, Insert, insert, inspect, select

from geoscreen.review import audit, db, migrate
from geoscreen.review.export import export_candidates
from geoscreen.review.loader import load_sites
from geoscreen.review.schema import candidates, detections, runs, scenes
from geoscreen.review.store import Store, open_store, relative_to

NOW = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)


def _file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n")
    return path


def _pk(conn: Connection, statement: Insert) -> int:
    inserted = conn.execute(statement).inserted_primary_key
    assert inserted is not None
    return int(inserted[0])


def _store_at_0001(url: str, evidence: list[str]) -> None:
    """A store at schema revision 0001 holding a run, a scene and a candidate per chip."""
    engine = db.make_engine(db.resolve_url(url))
    box = shapely.to_wkb(shapely.box(10.0, 20.0, 10.01, 20.01))
    try:
        with engine.begin() as conn:
            command.upgrade(migrate._config(conn), "0001")
            conn.execute(insert(scenes).values(scene_id="S1", first_loaded_at=NOW))
            run_pk = _pk(conn, insert(runs).values(
                run_id="r1", profile="p", loaded_by="t", started_at=NOW, completed_at=NOW,
                site_count=len(evidence), new_count=len(evidence),
            ))  # fmt: skip
            for i, path in enumerate(evidence):
                cid = _pk(conn, insert(candidates).values(
                    profile="p", site_id=f"s{i}", status="new", version=1, geom_wkb=box,
                    minx=10.0, miny=20.0, maxx=10.01, maxy=20.01, lon=10.005, lat=20.005,
                    scene_id="S1", evidence_path=path, last_run_pk=run_pk, created_at=NOW,
                ))  # fmt: skip
                conn.execute(insert(detections).values(
                    candidate_id=cid, run_pk=run_pk, scene_id="S1", evidence_path=path,
                    geom_wkb=box,
                ))  # fmt: skip
    finally:
        engine.dispose()


def test_upgrade_from_0001_keeps_data(db_url: str, tmp_path: Path) -> None:
    inside = _file(tmp_path / "runs" / "evidence" / "s0.png")
    outside = _file(tmp_path.parent / f"{tmp_path.name}-elsewhere" / "s1.png")
    _store_at_0001(db_url, [str(inside), str(outside)])
    store = open_store(db_url)
    try:
        with store.read() as conn:
            assert migrate.current_revision(conn) == migrate.head_revision() == "0008"
            assert "uri" in {c["name"] for c in inspect(conn).get_columns("scenes")}
            assert "mac" in {c["name"] for c in inspect(conn).get_columns("audit_log")}
            assert conn.execute(select(scenes.c.scene_id, scenes.c.uri)).all() == [("S1", None)]
            kept = conn.execute(select(detections.c.evidence_path).order_by(detections.c.id))
            stored = [c.evidence_path for c in store.candidates(order="id")]
            assert list(kept.scalars()) == stored
        if store.dialect == "sqlite":  # under the store's folder: now relative to it
            assert stored == ["runs/evidence/s0.png", str(outside)]
        else:  # PostgreSQL has no folder: paths stay absolute
            assert stored == [str(inside), str(outside)]
        assert [store.locate(p) for p in stored] == [inside, outside]
        # the chain is intact; the run was written by the fixture's SQL, not loaded
        assert audit.verify(store).problems == [
            "run r1 has no audit entry (entries deleted, or loaded directly)"
        ]
        load_sites(store, _sites(tmp_path / "later.parquet", "S1", "imagery/a.tif"), actor="t")
        assert _uris(store) == {"S1": "imagery/a.tif"}  # kept as given: no such file here
    finally:
        store.close()


def _sites(path: Path, scene_id: str, scene_uri: str | None, evidence: str | None = None) -> Path:
    """One site of ``scene_id``; scenes sit apart (the same place would be one candidate)."""
    west = 30.0 + 0.1 * (sum(map(ord, scene_id)) % 50)
    frame = gpd.GeoDataFrame(
        {"site_id": [f"{scene_id}-site"], "score_max": [0.9], "profile": "p",
         "scene_id": scene_id, "scene_uri": [scene_uri], "evidence_path": [evidence],
         "run_id": f"run-{path.stem}"},
        geometry=[shapely.box(west, 10.0, west + 0.01, 10.01)],
        crs="EPSG:4326",
    )  # fmt: skip
    frame.to_parquet(path)
    return path


def _uris(store: Store) -> dict[str, str | None]:
    with store.read() as conn:
        return dict(conn.execute(select(scenes.c.scene_id, scenes.c.uri)).all())


def test_load_records_scene_files_portably(store: Store, tmp_path: Path) -> None:
    scene = _file(tmp_path / "imagery" / "scene.tif")
    chip = _file(tmp_path / "out" / "chip.png")
    remote = "s3://bucket/scene.tif"
    load_sites(store, _sites(tmp_path / "a.parquet", "A", str(scene), str(chip)), actor="t")
    load_sites(store, _sites(tmp_path / "b.parquet", "B", remote), actor="t")
    load_sites(store, _sites(tmp_path / "c.parquet", "C", None), actor="t")
    uris = _uris(store)
    evidence = store.candidates(order="id")[0].evidence_path
    if store.dialect == "sqlite":
        assert uris == {"A": "imagery/scene.tif", "B": remote, "C": None}
        assert evidence == "out/chip.png"
    else:
        assert uris == {"A": str(scene), "B": remote, "C": None}
        assert evidence == str(chip)
    assert store.locate(uris["A"]) == scene and store.locate(evidence) == chip
    assert store.locate(remote) is None  # never opened: offline
    # A later load that knows where the scene is now updates it; one that does not, keeps it.
    moved = shutil.move(scene, tmp_path / "moved.tif")
    load_sites(store, _sites(tmp_path / "a2.parquet", "A", str(moved)), actor="t")
    load_sites(store, _sites(tmp_path / "a3.parquet", "A", None), actor="t")
    assert store.locate(_uris(store)["A"]) == Path(moved)


def test_relative_paths_resolve_against_roots_then_store_folder(
    store: Store, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    chip = _file(root / "evidence" / "x.png")
    assert store.locate("evidence/x.png") is None
    assert store.locate("evidence/x.png", (root,)) == root / "evidence" / "x.png"
    assert store.locate(str(chip)) == chip
    assert store.locate(str(tmp_path / "gone.png")) is None
    assert store.portable_path(None) is None and store.portable_path("") is None
    assert store.portable_path("not/here.png") == "not/here.png"  # kept as given


def test_relative_to() -> None:
    folder = Path("/data/work")
    assert relative_to("/data/work/runs/a.png", folder) == "runs/a.png"
    assert relative_to("/data/work/../other/a.png", folder) == "/data/work/../other/a.png"
    assert relative_to("/data/workshop/a.png", folder) == "/data/workshop/a.png"
    assert relative_to("runs/a.png", folder) == "runs/a.png"


def test_internal_export_writes_evidence_paths_usable_from_anywhere(
    store: Store, tmp_path: Path
) -> None:
    chip = _file(tmp_path / "out" / "chip.png")
    load_sites(store, _sites(tmp_path / "a.parquet", "A", None, str(chip)), actor="t")
    out = tmp_path / "exports" / "all.parquet"
    out.parent.mkdir()
    export_candidates(store, out, user="ann")
    assert gpd.read_parquet(out)["evidence_path"].tolist() == [str(chip)]
