"""geoscreen scan with a detection profile: a real NEON scene, a briefly trained detector,
objects into the review store; a model that cannot be used stops the scan before it writes."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import yaml

from geoscreen.cli.app import main
from geoscreen.imagery.scene import open_scene
from geoscreen.profiles import Profile, load_profile
from geoscreen.review.store import open_store
from geoscreen.sites.make import scene_sites
from geoscreen.vision.detect_train import DetectTrainOptions, train_detector
from geoscreen.vision.task import RunSettings, task_for

CONFIGS = Path(__file__).resolve().parents[2] / "geoscreen" / "configs"


@pytest.fixture(scope="module", params=[0.5, 0.0], ids=["pair", "one-model"])
def detect_profile(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
                   ) -> Path:  # fmt: skip
    """The NEON crown detection profile on 200 px tiles (a 400 px scene is 9 tiles), keeping
    every detection: a one-epoch model scores low, and these tests are about mechanics. As
    a pair of models whose boxes are fused, and one model."""
    data = yaml.safe_load((CONFIGS / "tree_crowns_detect_neon.yaml").read_text(encoding="utf-8"))
    data["tiling"] = {"tile_size": 200, "overlap": 48}
    data["detection"].update(score_threshold=0.001, max_detections=20,
                             paired_colour_rotation=request.param)  # fmt: skip
    data["threshold"] = 0.0
    path = tmp_path_factory.mktemp("detect-profile") / "crowns.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def detect_model(tmp_path_factory: pytest.TempPathFactory, detect_profile: Path,
                 osbs_path: Path, osbs_labels_path: Path) -> Path:  # fmt: skip
    out = tmp_path_factory.mktemp("detector")
    opts = DetectTrainOptions(device="cpu", max_epochs=1, patience=1, chips_per_epoch=8,
                              refit=False, seed=0)  # fmt: skip
    train_detector(load_profile(detect_profile), [osbs_labels_path], [osbs_path], out, opts)
    return out


def _whole_scene_sites(profile: Profile, model: Path, scene_path: Path, tta: bool = False
                       ) -> np.ndarray:  # fmt: skip
    task = task_for(profile)
    loaded = task.load(model)
    scene = open_scene(scene_path, sensor=profile.imagery.sensor)
    settings = RunSettings(device="cpu", num_workers=0, tta=tta)
    result = task.score_scene(loaded, profile, scene, settings)
    threshold, _ = task.threshold(loaded, profile, tta)
    sites = scene_sites(result, profile, scene, threshold=threshold, run_id="whole")
    return np.sort(sites["score_max"].to_numpy())


def test_scan_puts_detected_objects_in_the_store(
    detect_profile: Path, detect_model: Path, osbs_path: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "incoming"
    folder.mkdir()
    shutil.copy(osbs_path, folder / "osbs.tif")
    db = tmp_path / "g.sqlite"
    code = main(["scan", str(detect_profile), str(folder), "--model", str(detect_model),
                 "--db", str(db), "--chunk-tiles", "2"])  # fmt: skip
    assert code == 0
    profile = load_profile(detect_profile)
    with open_store(db) as store:
        stored = store.candidates()
    assert stored and {c.profile for c in stored} == {profile.name}
    # Chunks of two tiles scored apart and merged across tiles give the objects that
    # screening the whole scene at once gives: same count, same scores (a pair: each
    # model's boxes merged across the chunks, then fused, as screen does).
    whole = _whole_scene_sites(profile, detect_model, folder / "osbs.tif")
    scores = np.sort([float(c.score or 0) for c in stored])
    assert len(scores) == len(whole)
    np.testing.assert_allclose(scores, whole, rtol=1e-4, atol=1e-6)
    scene = open_scene(folder / "osbs.tif")
    assert scene.footprint is not None
    west, south, east, north = scene.footprint.bounds  # in degrees
    for c in stored:  # boxes on the scene, one per object
        assert west <= c.lon <= east and south <= c.lat <= north


def test_scan_with_tta_gives_the_objects_screen_tta_gives(
    detect_profile: Path, detect_model: Path, osbs_path: Path, tmp_path: Path
) -> None:
    """``scan --tta`` in chunks of two tiles: each tile under the 8 flips/rotations, the
    same objects as screening the whole scene with TTA (and not those without it)."""
    db = tmp_path / "g.sqlite"
    code = main(["scan", str(detect_profile), str(osbs_path), "--model", str(detect_model),
                 "--db", str(db), "--chunk-tiles", "2", "--tta"])  # fmt: skip
    assert code == 0
    profile = load_profile(detect_profile)
    with open_store(db) as store:
        scores = np.sort([float(c.score or 0) for c in store.candidates()])
    whole = _whole_scene_sites(profile, detect_model, osbs_path, tta=True)
    assert len(scores) == len(whole) > 0
    np.testing.assert_allclose(scores, whole, rtol=1e-4, atol=1e-6)
    once = _whole_scene_sites(profile, detect_model, osbs_path)
    assert len(once) != len(whole) or not np.allclose(once, whole)


def test_scan_with_tta_applies_the_cards_threshold_for_it(
    detect_profile: Path, detect_model: Path, osbs_path: Path, tmp_path: Path
) -> None:
    """A profile that sets no threshold: ``scan --tta`` makes sites at the card's
    ``tta_threshold`` and records it with the run; without ``--tta`` the card's other one."""
    data = yaml.safe_load(detect_profile.read_text(encoding="utf-8"))
    del data["threshold"]
    own = tmp_path / "no_threshold.yaml"
    own.write_text(yaml.safe_dump(data), encoding="utf-8")
    # a one-epoch model's two thresholds are both the lowest: set the card's apart
    model = tmp_path / "model"
    shutil.copytree(detect_model, model)
    raw = yaml.safe_load((model / "model.yaml").read_text(encoding="utf-8"))
    raw["tta_threshold"] = 0.2
    (model / "model.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    card = task_for(load_profile(own)).load(model).card
    assert card.threshold is not None and card.tta_threshold == 0.2 != card.threshold
    recorded = {}
    for tta in (True, False):
        db = tmp_path / f"tta_{tta}.sqlite"
        code = main(["scan", str(own), str(osbs_path), "--model", str(model), "--db",
                     str(db), *(["--tta"] if tta else [])])  # fmt: skip
        assert code == 0
        with sqlite3.connect(db) as conn:
            recorded[tta] = conn.execute("SELECT threshold FROM runs").fetchone()[0]
    assert recorded == {True: card.tta_threshold, False: card.threshold}


def test_a_corrupt_model_stops_the_scan_before_it_writes(
    detect_profile: Path, detect_model: Path, osbs_path: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    broken = tmp_path / "broken-model"
    shutil.copytree(detect_model, broken)
    weights = broken / "model.pt"
    weights.write_bytes(weights.read_bytes()[:-100])
    db, work = tmp_path / "g.sqlite", tmp_path / "work"
    capsys.readouterr()
    code = main(["scan", str(detect_profile), str(osbs_path), "--model", str(broken),
                 "--db", str(db), "--work", str(work)])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "model.pt" in err
    assert not db.exists() and not work.exists()


def test_a_detector_for_a_classification_profile_is_refused(
    detect_model: Path, osbs_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "g.sqlite"
    code = main(["scan", str(CONFIGS / "tree_crowns_neon.yaml"), str(osbs_path), "--model",
                 str(detect_model), "--db", str(db)])  # fmt: skip
    assert code == 2 and "holds a detect model" in capsys.readouterr().err
    assert not db.exists()


def test_sources_without_scenes_create_nothing(
    detect_profile: Path, detect_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, work = tmp_path / "g.sqlite", tmp_path / "work"
    code = main(["scan", str(detect_profile), str(tmp_path / "missing"), "--model",
                 str(detect_model), "--db", str(db), "--work", str(work)])  # fmt: skip
    assert code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not db.exists() and not work.exists()
