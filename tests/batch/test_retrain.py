"""Train from the review store: files -> scan -> review -> train --from-store, on real NEON."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from geoscreen.batch.retrain import train_from_store
from geoscreen.cli.app import EXIT_USER_ERROR, main
from geoscreen.fileio import sha256_file
from geoscreen.imagery.scene import open_scene
from geoscreen.labels import load_labels
from geoscreen.profiles import load_profile
from geoscreen.review import audit
from geoscreen.review.schema import detections
from geoscreen.review.store import open_store
from geoscreen.review.testing import PG_ENV, pg_base_url, pg_schema
from geoscreen.review.trainlabels import decisions_since, last_training, write_review_labels
from geoscreen.review.users import add_user
from geoscreen.review.workflow import set_status
from geoscreen.samples import cut_quadrants, sample_path
from geoscreen.vision.train import TrainOptions

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / "geoscreen" / "configs" / "tree_crowns_neon.yaml"
FAST = ("--mode", "spectral", "--device", "cpu", "--folds", "3")


def call(*args: str | Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def scanned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite store holding one scan of the four OSBS quadrants by a file-trained model."""
    work = tmp_path_factory.mktemp("retrain")
    cut_quadrants(sample_path("neon_osbs"), work / "incoming")
    labels, scene = sample_path("neon_osbs_labels"), sample_path("neon_osbs")
    code, _, err = call("train", PROFILE, "--labels", labels, "--imagery", scene,
                        "--out", work / "m1", *FAST)  # fmt: skip
    assert code == 0, err
    db = work / "g.sqlite"
    assert call("scan", PROFILE, work / "incoming", "--model", work / "m1", "--db", db)[0] == 0
    with open_store(db) as store:
        for name, role in (("ann", "analyst"), ("bob", "analyst")):
            add_user(store, name, role, actor="test")
    return db


@pytest.fixture(scope="module")
def crowns(scanned: Path) -> Path:
    """The 61 OSBS crowns as georeferenced polygons (pixel CSVs name one image only)."""
    import geopandas as gpd
    import shapely

    scene = open_scene(sample_path("neon_osbs"))
    t = scene.transform
    boxes = load_labels(sample_path("neon_osbs_labels"), scene).boxes_px()
    geoms = [shapely.affinity.affine_transform(shapely.box(*b), [t.a, t.b, t.d, t.e, t.c, t.f])
             for b in boxes]  # fmt: skip
    path = scanned.with_name("crowns.geojson")
    gpd.GeoDataFrame({"label": ["Tree"] * len(geoms)}, geometry=geoms, crs=scene.crs).to_file(path)
    return path


def copy_store(db: Path, name: str) -> Path:
    """A copy beside the original (scene paths are stored relative to the folder)."""
    target = db.with_name(name)
    shutil.copy(db, target)
    return target


def decide(db: Path | str, decisions: list[tuple[str, str]]) -> list[int]:
    """Decide the candidates best score first: (status, user) each; returns their ids."""
    with open_store(db) as store:
        found = store.candidates(order="score")
        for c, (status, user) in zip(found, decisions, strict=False):
            set_status(store, c.id, status, user=user, reason="test", claim=True)
        return [c.id for c in found[: len(decisions)]]


def test_too_few_reviewed_labels_are_refused(scanned: Path, tmp_path: Path) -> None:
    db = copy_store(scanned, "few.sqlite")
    code, _, err = call("train", PROFILE, "--from-store", db, "--out", tmp_path / "m", *FAST)
    assert code == EXIT_USER_ERROR and "no reviewed candidate" in err and "Traceback" not in err
    decide(db, [("confirmed", "ann"), ("rejected", "bob")])
    code, _, err = call("train", PROFILE, "--from-store", db, "--out", tmp_path / "m", *FAST)
    assert code == EXIT_USER_ERROR and "Traceback" not in err
    assert "1 positive (confirmed or escalated; need 6) and 1 negative (rejected; need 6)" in err
    assert not (tmp_path / "m").exists()
    code, _, err = call("train", PROFILE, "--out", tmp_path / "m", *FAST)
    assert code == EXIT_USER_ERROR and "--labels and --imagery, or --from-store" in err
    for bad in ("-1", "0", "1e3"):
        code, _, err = call("train", PROFILE, "--from-store", db, "--out", tmp_path / "m",
                            "--hard-negative-weight", bad, *FAST)  # fmt: skip
        assert code == EXIT_USER_ERROR and "Traceback" not in err
        assert err.count("\n") == 1 and "--hard-negative-weight" in err
    code, _, err = call("train", PROFILE, "--labels", "x.csv", "--imagery", "x.tif",
                        "--out", tmp_path / "m", "--hard-negative-weight", "2", *FAST)  # fmt: skip
    assert code == EXIT_USER_ERROR and err.count("\n") == 1 and "--from-store" in err


def test_review_labels_file(scanned: Path, tmp_path: Path) -> None:
    db = copy_store(scanned, "labels.sqlite")
    ids = decide(db, [("confirmed", "ann"), ("rejected", "ann"), ("needs_imagery", "bob")])
    with open_store(db) as store:
        got = write_review_labels(store, "tree_crowns_neon", tmp_path / "l.geojson")
        head = audit.verify(store).head_seq
    import geopandas as gpd

    frame = gpd.read_file(tmp_path / "l.geojson")
    assert frame["label"].tolist() == ["positive", "negative"]
    assert frame["candidate_id"].tolist() == ids[:2]
    assert (got.positives, got.negatives, got.by_reviewer) == (1, 1, {"ann": 2})
    assert got.audit_seq == head and len(got.scene_paths) >= 1 and not got.missing_scenes


@pytest.fixture(params=["sqlite", "postgresql"])
def loop_db(request: pytest.FixtureRequest, scanned: Path, tmp_path: Path) -> Iterator[str]:
    """The scanned store: a SQLite copy, or the same scan into a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield str(copy_store(scanned, "loop.sqlite"))
        return
    base = pg_base_url()
    if base is None:
        pytest.skip(f"PostgreSQL tests need {PG_ENV}")
    with pg_schema(base) as url:
        work = scanned.parent
        code, _, err = call("scan", PROFILE, work / "incoming", "--model", work / "m1",
                            "--db", url, "--work", tmp_path / "work")  # fmt: skip
        assert code == 0, err
        with open_store(url) as store:
            for name, role in (("ann", "analyst"), ("bob", "analyst")):
                add_user(store, name, role, actor="test")
        yield url


def test_full_loop_files_then_store(
    loop_db: str, scanned: Path, crowns: Path, tmp_path: Path
) -> None:
    """Files -> scan -> review -> train from the store -> scan again: decisions kept,
    re-seen candidates re-scored by the new model, the old score kept in the history."""
    db = loop_db
    decide(db, [("confirmed", "ann"), ("confirmed", "ann"), ("confirmed", "ann"),
                ("rejected", "ann"), ("rejected", "bob")])  # fmt: skip
    out = tmp_path / "m2"
    code, stdout, err = call("train", PROFILE, "--labels", crowns, "--from-store", db,
                             "--out", out, *FAST)  # fmt: skip
    assert code == 0, err
    assert "3 positive and 2 negative labels from 2 reviewer(s)" in err
    assert "not where the store recorded it" not in err  # the four quadrants were found
    assert "warning: ann made 4 of 5 review labels" not in err  # 80% is not "most" enough
    assert f"model written to {out}" in stdout
    card = yaml.safe_load((out / "model.yaml").read_text())
    digest = sha256_file(out / "model.pt")
    assert card["model_sha256"] == digest
    prov = card["provenance"]
    # Counted per scene: the crowns fall on the four quadrants, those on an edge on two.
    assert 61 <= prov["from_files"]["positives"] < 2 * 61
    assert prov["from_files"]["files"] == [str(crowns)]
    assert prov["from_reviews"]["positives"] == 3 and prov["from_reviews"]["negatives"] == 2
    assert prov["from_reviews"]["by_reviewer"] == {"ann": 4, "bob": 1}
    assert all("review_labels" not in r["path"] for r in card["data"]["labels"])
    assert "## Provenance" in (out / "MODEL_CARD.md").read_text()
    with open_store(db) as store:
        trained = last_training(store, "tree_crowns_neon")
        assert trained is not None and trained["model_sha256"] == digest
        assert trained["seq"] == prov["audit_entry"] > prov["from_reviews"]["up_to_audit_seq"]
        assert audit.verify(store).ok
        assert decisions_since(store, "tree_crowns_neon", trained["seq"]) == 0
        before = decisions_since(store, "tree_crowns_neon", 0)
        # A new candidate taken into review, or (when the scan found only the five decided)
        # a rejected one reopened, then decided: one label-making decision since the model
        # (taking into review teaches nothing and is not counted).
        open_ones = [c for c in store.candidates(order="score") if c.status == "new"]
        reopen = open_ones or [c for c in store.candidates() if c.status == "rejected"]
        add_user(store, "sup", "supervisor", actor="test")  # reopening needs a supervisor
        set_status(store, reopen[0].id, "in_review", user="sup", reason="second look")
        assert decisions_since(store, "tree_crowns_neon", trained["seq"]) == 0
        set_status(store, reopen[0].id, "confirmed", user="sup", reason="a crown after all")
        assert decisions_since(store, "tree_crowns_neon", trained["seq"]) == 1
        assert decisions_since(store, "tree_crowns_neon", 0) == before + 1
    code, listed, _ = call("review", "list", "--db", db, "--profile", "tree_crowns_neon",
                        "--order", "diverse")  # fmt: skip
    assert code == 0
    assert (
        f"1 decisions on tree_crowns_neon since the model trained from the store at audit "
        f"entry {trained['seq']}; retrain with: geoscreen train PROFILE.yaml --from-store "
    ) in listed
    code, listed, _ = call("review", "list", "--db", db, "--profile", "tree_crowns_neon", "--json")
    assert json.loads(listed)["since_model"] == {
        "decisions": 1, "model_audit_seq": trained["seq"], "model_sha256": digest,
    }  # fmt: skip
    with open_store(db) as store:
        kept = {c.id: c for c in store.candidates(order="id")}
    code, _, err = call("scan", PROFILE, scanned.parent / "incoming", "--model", out,
                        "--db", db, "--work", tmp_path / "work")  # fmt: skip
    assert code == 0, err
    with open_store(db) as store:
        after = {c.id: c for c in store.candidates(order="id")}
        with store.read() as conn:
            runs_of = Counter(conn.execute(select(detections.c.candidate_id)).scalars())
    assert all((after[i].status, after[i].version) == (c.status, c.version)
               for i, c in kept.items())  # fmt: skip
    rescored = [i for i in kept if after[i].model_sha256 == digest]
    assert rescored and all(runs_of[i] == 2 for i in rescored)  # old and new score kept
    assert all(after[i].model_sha256 == kept[i].model_sha256 for i in kept
               if i not in rescored)  # fmt: skip


def test_one_reviewer_is_warned_about(scanned: Path, crowns: Path, tmp_path: Path) -> None:
    """(Six candidates in this scan: too few to train on reviews alone, see the refusal.)"""
    db = copy_store(scanned, "alone.sqlite")
    decide(db, [("confirmed", "ann"), ("confirmed", "ann"), ("rejected", "ann"),
                ("rejected", "ann")])  # fmt: skip
    said: list[str] = []
    opts = TrainOptions(mode="spectral", device="cpu", folds=3, hard_negative_weight=3.0)
    card = train_from_store(load_profile(PROFILE), str(db), tmp_path / "m3", labels=[crowns],
                            opts=opts, progress=said.append)  # fmt: skip
    assert any(s.startswith("warning: ann made 4 of 4 review labels (100%)") for s in said)
    assert card["provenance"]["from_reviews"]["by_reviewer"] == {"ann": 4}
    used = card["provenance"]["from_reviews"]
    assert (used["positives_used"], used["negatives_used"]) == (2, 2)  # each on its own scene
    # The two rejections are the hard negatives, weighed 3 each; the card says so.
    assert card["hard_negatives"]["chips"] == 2 and card["hard_negatives"]["weight"] == 3.0
    options = card["training"]["options"]
    assert options["hard_negative_labels"] == [f"review store {db}"]
    assert options["hard_negative_weight"] == 3.0
    page = (tmp_path / "m3" / "MODEL_CARD.md").read_text()
    assert "- hard negatives (rejected candidates): 2, each weighing 3 random background" in page
    told = "2 hard negative chips (rejected candidates) weigh 3 each"
    assert any(s.startswith(told) for s in said)
