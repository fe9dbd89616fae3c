"""Re-ranking on real NEON imagery: a scan with a second, different model re-screens the
OSBS quadrants; candidates it still finds get its score (the first model's score kept in
their history), those it no longer finds are flagged "below threshold with model ...",
never deleted, and every decision stays (SQLite and PostgreSQL)."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from geoscreen.cli.app import main
from geoscreen.fileio import sha256_file
from geoscreen.review.store import open_store
from geoscreen.review.testing import PG_ENV, pg_base_url, pg_schema
from geoscreen.review.users import add_user
from geoscreen.review.workflow import set_status
from geoscreen.samples import cut_quadrants, sample_path

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / "geoscreen" / "configs" / "tree_crowns_neon.yaml"
FAST = ("--mode", "spectral", "--device", "cpu", "--folds", "3")


def call(*args: str | Path | int) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """The quadrants folder and two small models: one from all 61 OSBS crowns, one from
    every other crown (another seed), so they rank the same trees differently."""
    work = tmp_path_factory.mktemp("rerank")
    cut_quadrants(sample_path("neon_osbs"), work / "incoming")
    labels, scene = sample_path("neon_osbs_labels"), sample_path("neon_osbs")
    half = work / "half.csv"
    pd.read_csv(labels).iloc[::2].to_csv(half, index=False)
    for name, given, seed in (("m1", labels, "0"), ("m2", half, "1")):
        code, _, err = call("train", PROFILE, "--labels", given, "--imagery", scene,
                            "--out", work / name, "--seed", seed, *FAST)  # fmt: skip
        assert code == 0, err
    return work / "incoming", work / "m1", work / "m2"


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "g.sqlite")
        return
    base = pg_base_url()
    if base is None:
        pytest.skip(f"PostgreSQL tests need {PG_ENV}")
    with pg_schema(base) as url:
        yield url


def test_a_new_model_rescores_or_flags_every_candidate_and_keeps_decisions(
    models: tuple[Path, Path, Path], db: str, tmp_path: Path
) -> None:
    incoming, m1, m2 = models
    old, new = sha256_file(m1 / "model.pt"), sha256_file(m2 / "model.pt")
    assert old != new
    work = ("--db", db, "--work", tmp_path / "work")
    assert call("scan", PROFILE, incoming, "--model", m1, *work)[0] == 0
    with open_store(db) as store:
        add_user(store, "ann", "analyst", actor="test")
        for i, c in enumerate(store.candidates(order="id")):  # every one decided
            status = "confirmed" if i % 2 else "rejected"
            set_status(store, c.id, status, user="ann", reason="looked", claim=True)
        before = {c.id: c for c in store.candidates(order="id")}
    assert before and all(c.model_sha256 == old for c in before.values())

    code, said, err = call("scan", PROFILE, incoming, "--model", m2, *work)
    assert code == 0, err
    with open_store(db) as store:
        after = {c.id: c for c in store.candidates(order="id")}
        history = {i: store.score_history(i) for i in before}
    assert set(before) <= set(after)  # nothing deleted
    assert all((after[i].status, after[i].version) == (c.status, c.version)
               for i, c in before.items())  # fmt: skip
    rescored = [i for i in before if after[i].model_sha256 == new]
    flagged = [i for i in before if after[i].below_model_sha256 == new]
    assert rescored and flagged and sorted(rescored + flagged) == sorted(before)
    for i in rescored:
        assert after[i].below_threshold is None
        assert [h.model_sha256 for h in history[i]] == [old, new]
        assert history[i][0].score == before[i].score and history[i][1].score == after[i].score
    for i in flagged:  # kept with the old model's score
        assert after[i].below_threshold == f"below threshold with model {new[:12]}"
        assert after[i].score == before[i].score and after[i].model_sha256 == old
        assert [h.model_sha256 for h in history[i]] == [old]
    assert f"{len(flagged)} earlier candidate(s) not found again: flagged below threshold" in said

    code, listed, _ = call("review", "list", "--db", db, "--limit", "0")
    assert code == 0
    for line in listed.splitlines():
        cid = int(line.split()[0]) if line.split() and line.split()[0].isdigit() else None
        if cid in before:
            assert (f"[below threshold with model {new[:12]}]" in line) == (cid in flagged)
    code, shown, _ = call("review", "show", flagged[0], "--db", db)
    assert code == 0 and f"flag:       below threshold with model {new[:12]}" in shown
    code, shown, _ = call("review", "show", rescored[0], "--db", db, "--json")
    scores = json.loads(shown)["scores"]
    assert [s["model_sha256"] for s in scores] == [old, new]
