"""Retention: evidence chips of rejected candidates and of expired runs are deleted;
candidates, paths, history and audit entries (with each file's hash) stay."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import pytest
from sqlalchemy import update

from geoscreen.errors import ConfigError
from geoscreen.review import audit
from geoscreen.review.loader import load_sites
from geoscreen.review.retention import plan, purge
from geoscreen.review.schema import runs
from geoscreen.review.store import Store
from geoscreen.review.workflow import set_status

PROFILE = "brick_kilns_s2"


def _chips(folder: Path, first: int, n: int) -> dict[str, str]:
    """Real PNG-sized files where make_sites says the chips are; name -> sha256."""
    (folder / "evidence").mkdir(exist_ok=True)
    digests = {}
    for i in range(first, first + n):
        path = folder / "evidence" / f"site-{i:07d}.png"
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + i.to_bytes(4, "big") * 64)
        digests[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def _age(store: Store, run_id: str, days: float) -> None:
    """Pretend ``run_id`` was loaded ``days`` ago."""
    when = dt.datetime.now(dt.UTC) - dt.timedelta(days=days)
    with store.write() as conn:
        conn.execute(update(runs).where(runs.c.run_id == run_id).values(completed_at=when))


@pytest.fixture
def loaded(
    store: Store, sites: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Store, dict[str, str]]:
    """Six candidates whose chips exist (relative paths found from the working folder)."""
    monkeypatch.chdir(tmp_path)
    digests = _chips(tmp_path, 0, 6)
    load_sites(store, sites(6), actor="test")
    return store, digests


def _id(store: Store, site: str) -> int:
    return next(c.id for c in store.candidates() if c.site_id == site)


def test_rejected_chips_go_and_records_stay(
    loaded: tuple[Store, dict[str, str]], tmp_path: Path
) -> None:
    store, digests = loaded
    target = _id(store, "site-0000002")
    set_status(store, target, "rejected", user="ann", reason="a quarry", claim=True)
    before = store.candidate(target)
    events = store.history(target)
    seq = audit.verify(store).head_seq

    dry = purge(store, {}, actor="sue", dry_run=True)
    assert (dry.dry_run, dry.files, dry.candidates, dry.rejected_candidates) == (True, 1, 1, 1)
    assert [i.candidate_id for i in dry.items] == [target]
    assert (tmp_path / "evidence" / "site-0000002.png").is_file()
    assert audit.verify(store).head_seq == seq  # a dry run changes nothing

    done = purge(store, {}, actor="sue")
    assert (done.files, done.candidates, done.expired_candidates) == (1, 1, 0)
    assert not (tmp_path / "evidence" / "site-0000002.png").exists()
    assert sorted(p.name for p in (tmp_path / "evidence").iterdir()) == sorted(
        n for n in digests if n != "site-0000002.png"
    )
    after = store.candidate(target)
    assert (after.status, after.version, after.evidence_path) == (
        before.status, before.version, before.evidence_path,
    )  # fmt: skip
    assert store.history(target) == events and len(events) >= 2
    new = list(audit.entries(store, since_seq=seq))
    assert [(e.action, e.entity, e.entity_id, e.actor) for e in new] == [
        ("evidence_purge", "candidate", str(target), "sue"),
        ("purge", "store", None, "sue"),
    ]
    files = new[0].to_dict()["after"]["files"]
    assert [f["sha256"] for f in files] == [digests["site-0000002.png"]]
    assert new[0].to_dict()["after"]["reason"] == "rejected"
    counts = new[1].to_dict()["after"]
    assert (counts["files"], counts["candidates"], counts["rejected_candidates"]) == (1, 1, 1)
    assert done.audit_seq == new[1].seq
    assert audit.verify(store).ok

    again = purge(store, {}, actor="sue")  # nothing left to delete; still recorded
    assert (again.files, again.candidates) == (0, 0)
    assert list(audit.entries(store, since_seq=new[1].seq))[-1].action == "purge"


def test_retention_period_per_profile(
    loaded: tuple[Store, dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, digests = loaded
    monkeypatch.setattr("geoscreen.review.retention.CHUNK", 4)  # two transactions
    _age(store, "run-1", 20)
    assert plan(store, {PROFILE: 30}).files == 0  # within the period
    assert plan(store, {"other_profile": 10}).files == 0  # another profile's limit
    assert plan(store, {PROFILE: None}).files == 0  # no limit: kept
    due = plan(store, {PROFILE: 10})
    assert (due.files, due.candidates, due.expired_candidates) == (6, 6, 6)
    assert {i.reason for i in due.items} == {"older than 10 days"}
    seq = audit.verify(store).head_seq
    calls: list[tuple[int, int]] = []
    done = purge(store, {PROFILE: 10}, actor="sue", progress=lambda *a: calls.append(a))
    assert done.files == 6 and not list((tmp_path / "evidence").iterdir())
    assert calls == [(4, 6), (6, 6)]
    assert store.count() == 6
    new = list(audit.entries(store, since_seq=seq))
    assert [e.action for e in new] == ["evidence_purge"] * 6 + ["purge"]
    recorded = {e.entity_id: e.to_dict()["after"]["files"][0]["sha256"] for e in new[:-1]}
    assert sorted(recorded.values()) == sorted(digests.values())
    assert audit.verify(store).ok


def test_chip_still_used_by_a_recent_run_is_kept(
    loaded: tuple[Store, dict[str, str]], sites: Callable[..., Path]
) -> None:
    store, _ = loaded
    # A later run sees the first three sites again with the same chip files.
    load_sites(store, sites(3, run_id="run-2", acquired="2024-03-01T05:00:00Z"), actor="test")
    _age(store, "run-1", 40)
    _age(store, "run-2", 5)
    due = plan(store, {PROFILE: 30})
    assert sorted(Path(i.file).name for i in due.items) == [
        f"site-{i:07d}.png" for i in range(3, 6)
    ]
    assert due.kept_shared == 3


def test_only_png_chips_are_deleted(
    store: Store, sites: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sites file from elsewhere may name any file as evidence: only PNGs go."""
    monkeypatch.chdir(tmp_path)
    _chips(tmp_path, 0, 2)
    scene = tmp_path / "scene.tif"
    scene.write_bytes(b"not a chip")
    path = sites(2)
    frame = gpd.read_parquet(path)
    frame.loc[1, "evidence_path"] = str(scene)
    frame.to_parquet(path)
    load_sites(store, path, actor="test")
    for c in store.candidates():
        set_status(store, c.id, "rejected", user="ann", reason="not kilns", claim=True)
    done = purge(store, {}, actor="sue")
    assert (done.files, done.not_chips) == (1, 1)
    assert scene.read_bytes() == b"not a chip"
    assert not (tmp_path / "evidence" / "site-0000000.png").exists()


def test_bad_limit_changes_nothing(loaded: tuple[Store, dict[str, str]], tmp_path: Path) -> None:
    store, _ = loaded
    _age(store, "run-1", 40)
    seq = audit.verify(store).head_seq
    with pytest.raises(ConfigError, match="retain_evidence_days"):
        purge(store, {PROFILE: 0}, actor="sue")
    assert audit.verify(store).head_seq == seq
    assert len(list((tmp_path / "evidence").iterdir())) == 6
