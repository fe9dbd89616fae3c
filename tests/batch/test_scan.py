"""geoscreen scan: incremental, resumable, isolated failures, Dask = local, STAC sources."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pystac
import pytest
from sqlalchemy import func, select

from geoscreen.cli.app import main
from geoscreen.review.schema import candidates, detections, runs, scenes
from geoscreen.review.store import open_store

PROFILE = Path(__file__).resolve().parents[2] / "geoscreen" / "configs" / "tree_crowns_neon.yaml"


def _scan(*args: str) -> int:
    return main(["scan", str(PROFILE), *args])


def _counts(db: Path) -> dict[str, int]:
    store = open_store(db)
    try:
        with store.read() as conn:
            return {
                name: int(conn.execute(select(func.count()).select_from(table)).scalar_one())
                for name, table in (("runs", runs), ("candidates", candidates),
                                    ("detections", detections))
            }  # fmt: skip
    finally:
        store.close()


def _sites(db: Path) -> list[tuple[str, float]]:
    store = open_store(db)
    try:
        return sorted((c.site_id, float(c.score or 0)) for c in store.candidates())
    finally:
        store.close()


def test_second_scan_skips_everything(tree_model: Path, scene_folder: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    db = tmp_path / "g.sqlite"
    assert _scan(str(scene_folder), "--model", str(tree_model), "--db", str(db)) == 0
    first = _counts(db)
    assert first["runs"] == 4 and first["candidates"] > 0
    with open_store(db) as store, store.read() as conn:  # where the scenes are, for imagery
        uris = set(conn.execute(select(scenes.c.uri)).scalars())
    assert uris == {f"incoming/quadrant{i}.tif" for i in range(4)}  # relative to the store
    capsys.readouterr()
    assert _scan(str(scene_folder), "--model", str(tree_model), "--db", str(db),
                 "--json-log") == 0  # fmt: skip
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["status"] for x in lines if x["event"] == "scene"] == ["skipped"] * 4
    assert lines[-1]["event"] == "summary" and lines[-1]["skipped"] == 4
    assert _counts(db) == first


def test_renamed_file_is_still_skipped(tree_model: Path, scene_folder: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    db = tmp_path / "g.sqlite"
    assert _scan(str(scene_folder / "quadrant0.tif"), "--model", str(tree_model),
                 "--db", str(db)) == 0  # fmt: skip
    renamed = scene_folder / "renamed.tif"
    (scene_folder / "quadrant0.tif").rename(renamed)
    capsys.readouterr()
    assert _scan(str(renamed), "--model", str(tree_model), "--db", str(db), "--json-log") == 0
    assert '"skipped"' in capsys.readouterr().out


def test_corrupt_scene_fails_alone(tree_model: Path, scene_folder: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    good = (scene_folder / "quadrant1.tif").read_bytes()
    (scene_folder / "broken.tif").write_bytes(good[: len(good) // 3])
    db = tmp_path / "g.sqlite"
    code = _scan(str(scene_folder), "--model", str(tree_model), "--db", str(db), "--json-log")
    assert code == 1  # some scenes failed
    events = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    failed = [e for e in events if e.get("status") == "failed"]
    assert len(failed) == 1 and failed[0]["uri"].endswith("broken.tif")
    assert "corrupt" in failed[0]["error"] or "cannot" in failed[0]["error"]
    assert _counts(db)["runs"] == 4
    assert "Traceback" not in failed[0]["error"]


def test_dask_gives_the_same_sites_as_local(tree_model: Path, scene_folder: Path,
                                            tmp_path: Path) -> None:  # fmt: skip
    local, dask = tmp_path / "local.sqlite", tmp_path / "dask.sqlite"
    assert _scan(str(scene_folder), "--model", str(tree_model), "--db", str(local)) == 0
    assert _scan(str(scene_folder), "--model", str(tree_model), "--db", str(dask),
                 "--workers", "2", "--chunk-tiles", "5") == 0  # fmt: skip
    # Same sites; scores equal up to float rounding (one thread and other batches on Dask).
    here, there = _sites(local), _sites(dask)
    assert here and [s for s, _ in here] == [s for s, _ in there]
    assert all(abs(a - b) < 1e-4 for (_, a), (_, b) in zip(here, there, strict=True))


def test_stac_catalog_source(tree_model: Path, scene_folder: Path, tmp_path: Path) -> None:
    catalog = pystac.Catalog(id="drop", description="incoming imagery")
    for path in sorted(scene_folder.glob("*.tif")):
        item = pystac.Item(id=path.stem, geometry=None, bbox=None,
                           datetime=pystac.utils.str_to_datetime("2024-03-01T10:00:00Z"),
                           properties={})  # fmt: skip
        item.add_asset("image", pystac.Asset(href=str(path), media_type=pystac.MediaType.GEOTIFF))
        catalog.add_item(item)
    root = tmp_path / "stac"
    catalog.normalize_and_save(str(root), catalog_type=pystac.CatalogType.SELF_CONTAINED)
    db = tmp_path / "g.sqlite"
    assert _scan(str(root / "catalog.json"), "--model", str(tree_model), "--db", str(db)) == 0
    assert _counts(db)["runs"] == 4


def test_sigkill_then_resume_duplicates_nothing(tree_model: Path, scene_folder: Path,
                                                tmp_path: Path) -> None:  # fmt: skip
    reference = tmp_path / "ref.sqlite"
    assert _scan(str(scene_folder), "--model", str(tree_model), "--db", str(reference)) == 0
    db = tmp_path / "g.sqlite"
    command = [sys.executable, "-m", "geoscreen", "scan", str(PROFILE), str(scene_folder),
               "--model", str(tree_model), "--db", str(db), "--json-log"]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:  # kill as soon as one scene is in: the next is mid-flight
        if '"screened"' in line:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    partial = _counts(db)
    assert 1 <= partial["runs"] < 4
    assert _scan(str(scene_folder), "--model", str(tree_model), "--db", str(db)) == 0
    assert _counts(db) == _counts(reference)
    assert _sites(db) == _sites(reference)


# A scan process that SIGKILLs itself at the second scene's load: just before it (its
# coverage row is written, the run not yet complete) or just after (the run complete).
_KILLER = """
import os, signal, sys
import geoscreen.batch.scan as scan
from geoscreen.cli.app import main
real, calls = scan.load_sites, []
def load_then_die(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2 and sys.argv[1] == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    result = real(*args, **kwargs)
    if len(calls) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return result
scan.load_sites = load_then_die
sys.exit(main(sys.argv[2:]))
"""


def _coverage(db: Path) -> list[tuple[str, int, str]]:
    from geoscreen.batch.scan import COVERAGE_FILE
    from geoscreen.sites.coverage import read_coverage

    frame = read_coverage(db.with_name(f"{db.stem}-runs") / COVERAGE_FILE)
    return sorted(
        (str(r), int(t), g.normalize().wkt)
        for r, t, g in zip(frame["run_id"], frame["tiles"], frame.geometry, strict=True)
    )


@pytest.mark.parametrize("point", ["before", "after"])
def test_kill_around_the_run_load_keeps_coverage(tree_model: Path, scene_folder: Path,
                                                 tmp_path: Path, point: str) -> None:  # fmt: skip
    reference = tmp_path / "ref.sqlite"
    assert _scan(str(scene_folder), "--model", str(tree_model), "--db", str(reference)) == 0
    db = tmp_path / "g.sqlite"
    args = ["scan", str(PROFILE), str(scene_folder), "--model", str(tree_model), "--db", str(db)]
    killed = subprocess.run([sys.executable, "-c", _KILLER, point, *args], check=False)
    assert killed.returncode == -signal.SIGKILL
    assert _counts(db)["runs"] == (1 if point == "before" else 2)
    assert len(_coverage(db)) == 2  # the killed scene's row is there in both cases
    assert _scan(str(scene_folder), "--model", str(tree_model), "--db", str(db)) == 0
    assert _counts(db) == _counts(reference)
    assert _coverage(db) == _coverage(reference)  # one row per scene, none lost or doubled


def test_a_complete_run_without_coverage_is_screened_again(
    tree_model: Path, scene_folder: Path, tmp_path: Path
) -> None:
    from geoscreen.batch.scan import COVERAGE_FILE
    from geoscreen.sites.coverage import read_coverage, write_coverage

    db = tmp_path / "g.sqlite"
    assert _scan(str(scene_folder), "--model", str(tree_model), "--db", str(db)) == 0
    full, counts = _coverage(db), _counts(db)
    path = tmp_path / "g-runs" / COVERAGE_FILE
    frame = read_coverage(path)
    write_coverage(frame.iloc[1:].reset_index(drop=True), path)  # as an older version lost it
    assert len(_coverage(db)) == 3
    assert _scan(str(scene_folder), "--model", str(tree_model), "--db", str(db)) == 0
    assert _coverage(db) == full and _counts(db) == counts  # restored; nothing duplicated
