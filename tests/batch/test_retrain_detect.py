"""Train a detector from the review store on real NEON: a briefly trained detector scans
OSBS, a simulated analyst confirms the objects on a labelled crown and rejects the others
(from the ground truth), and ``train --from-store`` trains a detector on those outlines
(rejected ones are background) through the task interface."""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
import yaml

from geoscreen.batch.retrain import train_from_store
from geoscreen.cli.app import EXIT_USER_ERROR, main
from geoscreen.fileio import sha256_file
from geoscreen.imagery.scene import open_scene
from geoscreen.labels import load_labels
from geoscreen.profiles import load_profile
from geoscreen.review.store import open_store
from geoscreen.review.trainlabels import last_training
from geoscreen.review.users import add_user
from geoscreen.review.workflow import set_status
from geoscreen.vision.blob_train import MIN_BLOB_OBJECTS
from geoscreen.vision.detect_train import DetectTrainOptions, train_detector
from geoscreen.vision.modelcard import read_card

CONFIGS = Path(__file__).resolve().parents[2] / "geoscreen" / "configs"
TINY = {"device": "cpu", "max_epochs": 1, "patience": 1, "chips_per_epoch": 8, "refit": False}


def _cli_err(*args: str | Path) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main([str(a) for a in args])
    return code, err.getvalue()


@pytest.fixture(scope="module")
def detect_profile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The NEON crown detection profile on 200 px tiles, keeping every detection (a
    one-epoch model scores low; this test is about the loop, not accuracy)."""
    data = yaml.safe_load((CONFIGS / "tree_crowns_detect_neon.yaml").read_text(encoding="utf-8"))
    data["tiling"] = {"tile_size": 200, "overlap": 48}
    # RetinaNet: after one epoch FCOS (the profile's default) draws boxes too large to
    # leave reviewed outlines in both of the refit's strips on these 200 px tiles.
    # One model (the shipped profile trains a pair): the loop is the same for each.
    data["detection"].update(score_threshold=0.001, max_detections=20, architecture="retinanet",
                             paired_colour_rotation=0.0)  # fmt: skip
    data["threshold"] = 0.0
    path = tmp_path_factory.mktemp("detect-profile") / "crowns.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_a_detector_trains_from_reviewed_outlines(
    detect_profile: Path,
    osbs_path: Path,
    osbs_labels_path: Path,
    yell_path: Path,
    yell_labels_path: Path,
    tmp_path: Path,
) -> None:
    profile = load_profile(detect_profile)
    first = tmp_path / "m1"
    train_detector(profile, [osbs_labels_path], [osbs_path], first,
                   DetectTrainOptions(seed=0, **TINY))  # fmt: skip
    folder = tmp_path / "incoming"
    folder.mkdir()
    shutil.copy(osbs_path, folder / "osbs.tif")
    db = tmp_path / "g.sqlite"
    assert main(["scan", str(detect_profile), str(folder), "--model", str(first),
                 "--db", str(db)]) == 0  # fmt: skip
    scene = open_scene(osbs_path)
    t = scene.transform
    crowns = gpd.GeoSeries(
        [shapely.affinity.affine_transform(shapely.box(*b), [t.a, t.b, t.d, t.e, t.c, t.f])
         for b in load_labels(osbs_labels_path, scene).boxes_px()], crs=scene.crs,
    )  # fmt: skip
    code, err = _cli_err("train", detect_profile, "--from-store", db, "--out", tmp_path / "x")
    assert code == EXIT_USER_ERROR and "no reviewed candidate" in err  # the detect task's path
    assert "Traceback" not in err and not (tmp_path / "x").exists()
    with open_store(db) as store:
        add_user(store, "ann", "analyst", actor="test")
        add_user(store, "bob", "analyst", actor="test")
        found = store.candidates(order="score")
        outlines = gpd.GeoSeries(shapely.from_wkb([c.geom_wkb for c in found]), crs=4326)
        outlines = outlines.to_crs(scene.crs)
        overlap = np.array([crowns.intersection(o).area.max() / o.area for o in outlines])
        on_crown = overlap >= 0.5  # the simulated analyst answers from the ground truth
        for i, (c, yes) in enumerate(zip(found, on_crown, strict=True)):
            set_status(store, c.id, "confirmed" if yes else "rejected",
                       user="ann" if i % 2 else "bob", reason="truth", claim=True)  # fmt: skip
    positives, negatives = int(on_crown.sum()), int((~on_crown).sum())
    assert positives >= 6 and negatives >= 6, (positives, negatives)

    said: list[str] = []
    out = tmp_path / "m2"
    trained_card = train_from_store(profile, str(db), out,
                                    opts=DetectTrainOptions(seed=1, **TINY),
                                    progress=said.append)  # fmt: skip
    assert read_card(out / "model.yaml") == trained_card  # returned as written
    card = trained_card.to_yaml_dict()
    assert card["task"] == "detect" and card["model_sha256"] == sha256_file(out / "model.pt")
    reviews = card["provenance"]["from_reviews"]
    assert (reviews["positives"], reviews["negatives"]) == (positives, negatives)
    assert reviews["positives_used"] == positives  # every confirmed outline is a box
    assert reviews["by_reviewer"] == {"ann": len(found) // 2, "bob": len(found) - len(found) // 2}
    assert card["provenance"]["from_files"]["positives"] == 0
    assert [r["path"] for r in card["data"]["labels"]] == [f"review store {db}"]
    page = (out / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "## Provenance" in page and "review_labels.geojson" not in page
    with open_store(db) as store:
        trained = last_training(store, profile.name)
    assert trained is not None and trained["model_sha256"] == card["model_sha256"]
    assert card["provenance"]["audit_entry"] == trained["seq"]
    assert any(f"{positives} positive and {negatives} negative labels" in s for s in said)
    # Every rejected outline is a hard negative: a background chip around it each epoch.
    assert card["hard_negatives"] == {"chips": negatives, "chips_per_epoch_each": 1,
                                      "weighted": False}  # fmt: skip
    assert "each given a background chip around it every epoch (not weighted)" in page
    assert card["training"]["options"]["scene_balance"] is False
    # A profile that balances its scenes does so from the store too: beside a label file's
    # larger scene, the reviewed scene gets as many chips per epoch as that one.
    assert profile.detection is not None
    balancing = profile.model_copy(update={"detection": profile.detection.model_copy(
        update={"scene_balance": True})})  # fmt: skip
    both = tmp_path / "m3"
    train_from_store(balancing, str(db), both, labels=[yell_labels_path], imagery=[yell_path],
                     opts=DetectTrainOptions(seed=1, **TINY))  # fmt: skip
    two = read_card(both / "model.yaml")
    assert two.to_yaml_dict()["training"]["options"]["scene_balance"]
    page = (both / "MODEL_CARD.md").read_text()
    assert "every scene as many as the largest one" in page
    # Each scene's own cue (scale-space blobs on its labels alone) is on the card: YELL's
    # 279 crowns and the reviewed scene's confirmed outlines.
    assert two.baselines is not None and two.baselines.scene_cues is not None
    assert [(c.scene, c.objects) for c in two.baselines.scene_cues] == [
        (yell_path.name, 279), ("osbs.tif", positives)]  # fmt: skip
    assert "What marks the objects of each training scene" in page
    assert f"{yell_path.name}: {two.baselines.scene_cues[0].cue} (279 objects)" in page
    differ = two.baselines.scene_cues[0].cue != two.baselines.scene_cues[1].cue
    assert differ == any("choose different cues" in limit for limit in two.limits)


def test_blobs_fitted_on_reviewed_outlines_scan_the_site(
    detect_profile: Path, osbs_path: Path, osbs_labels_path: Path, tmp_path: Path
) -> None:
    """The review loop with scale-space blobs as the model (``detection.architecture:
    blobs``): fitted on the analyst's confirmed outlines alone by ``train --from-store``,
    recorded in the audit log like any model, and scanning through ``scan``."""
    folder = tmp_path / "incoming"
    folder.mkdir()
    shutil.copy(osbs_path, folder / "osbs.tif")
    scene = open_scene(osbs_path)
    t = scene.transform
    crowns = [shapely.affinity.affine_transform(shapely.box(*b), [t.a, t.b, t.d, t.e, t.c, t.f])
              for b in load_labels(osbs_labels_path, scene).boxes_px()]  # fmt: skip
    first = tmp_path / "m1"
    train_detector(load_profile(detect_profile), [osbs_labels_path], [osbs_path], first,
                   DetectTrainOptions(seed=0, **TINY))  # fmt: skip
    db = tmp_path / "g.sqlite"
    assert main(["scan", str(detect_profile), str(folder), "--model", str(first),
                 "--db", str(db)]) == 0  # fmt: skip
    truth = gpd.GeoSeries(crowns, crs=scene.crs)
    with open_store(db) as store:
        add_user(store, "ann", "analyst", actor="test")
        found = store.candidates(order="score")
        outlines = gpd.GeoSeries(shapely.from_wkb([c.geom_wkb for c in found]), crs=4326)
        on_crown = [truth.intersection(o).area.max() / o.area >= 0.5
                    for o in outlines.to_crs(scene.crs)]  # fmt: skip
        for c, yes in zip(found, on_crown, strict=True):
            set_status(store, c.id, "confirmed" if yes else "rejected", user="ann",
                       reason="truth", claim=True)  # fmt: skip
    data = yaml.safe_load(detect_profile.read_text(encoding="utf-8"))
    data["detection"]["architecture"] = "blobs"
    blob_profile = tmp_path / "crowns_blobs.yaml"
    blob_profile.write_text(yaml.safe_dump(data), encoding="utf-8")
    code, err = _cli_err("train", blob_profile, "--from-store", db, "--out", tmp_path / "blobs")
    assert code == 0, err
    card = read_card(tmp_path / "blobs" / "model.yaml")
    assert card.task == "detect" and card.detector.blobs is not None and card.backbone is None
    assert card.provenance is not None
    assert card.provenance.from_reviews.positives_used == int(np.sum(on_crown))
    few = int(np.sum(on_crown)) < MIN_BLOB_OBJECTS  # the card says when the cue is unsure
    assert few == any(f"below {MIN_BLOB_OBJECTS} the cue" in limit for limit in card.limits)
    with open_store(db) as store:
        trained = last_training(store, card.profile.name)
    assert trained is not None and trained["model_sha256"] == card.model_sha256
    rescanned = tmp_path / "g2.sqlite"
    assert main(["scan", str(blob_profile), str(folder), "--model", str(tmp_path / "blobs"),
                 "--db", str(rescanned)]) == 0  # fmt: skip
    with open_store(rescanned) as store:
        assert len(store.candidates()) > 0
