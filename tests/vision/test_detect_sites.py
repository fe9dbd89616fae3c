"""Detector training on more NEON sites: label classes beyond one, and the FCOS path on a
real crop (SOAP_061: 37 crowns labelled Dead or Alive)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from geoscreen.errors import InputError
from geoscreen.imagery.scene import open_scene
from geoscreen.profiles import Profile, load_profile
from geoscreen.samples import sample_path
from geoscreen.sites.detections import objects_to_sites
from geoscreen.vision.detect_infer import DetectOptions, detect_scene
from geoscreen.vision.detect_scenes import load_detection_data
from geoscreen.vision.detect_train import DetectTrainOptions, train_detector
from geoscreen.vision.detector import load_detector

PROFILE = (
    Path(__file__).resolve().parents[2] / "geoscreen" / "configs" / "tree_crowns_detect_neon.yaml"
)
CROWNS = ["Tree", "Dead", "Alive"]


@pytest.fixture(scope="module")
def profile() -> Profile:
    """The shipped profile with one model (it ships a pair; these tests are about classes
    and the anchor-free detector, which the pair trains twice)."""
    shipped = load_profile(PROFILE)
    assert shipped.detection is not None
    one = shipped.detection.model_copy(update={"paired_colour_rotation": 0.0})
    return shipped.model_copy(update={"detection": one})


def test_positive_classes_take_dead_and_alive_crowns(profile: Profile) -> None:
    """SOAP names two classes: without saying which are crowns it gives no object (the
    one-line refusal names the classes); with them, every crown of every site counts."""
    with pytest.raises(InputError, match="several classes"):
        load_detection_data(profile, [sample_path("neon_soap_labels")], [sample_path("neon_soap")])
    data = load_detection_data(
        profile,
        [sample_path("neon_osbs_labels"), sample_path("neon_soap_labels")],
        [sample_path("neon_osbs"), sample_path("neon_soap")],
        positive_classes=CROWNS,
    )
    assert [len(v.boxes) for v in data.views] == [61, 37]
    assert [r["objects"] for r in data.label_records] == [61, 37]
    soap = [sample_path("neon_soap_labels")], [sample_path("neon_soap")]
    only_dead = load_detection_data(profile, *soap, positive_classes=["dead"])
    assert 0 < len(only_dead.views[0].boxes) < 37


def test_an_image_annotated_without_objects_is_background(profile: Profile, tmp_path: Path) -> None:
    """An empty VOC annotation of SOAP_061 makes it a view without boxes (every chip of it
    background) beside OSBS's crowns; alone, it gives nothing to learn and is refused."""
    empty = tmp_path / "SOAP_061.xml"
    empty.write_text("<annotation><filename>SOAP_061.png</filename></annotation>")
    data = load_detection_data(profile, [sample_path("neon_osbs_labels"), empty],
                               [sample_path("neon_osbs"), sample_path("neon_soap")])  # fmt: skip
    assert [len(v.boxes) for v in data.views] == [61, 0]
    assert [r["objects"] for r in data.label_records] == [61, 0]
    train, val = data.split(0.25, seed=0, min_visible=0.4)
    assert len(train[1].boxes) == len(val[1].boxes) == 0 and train[1].valid.any()
    with pytest.raises(InputError, match="no labelled object falls inside"):
        load_detection_data(profile, [empty], [sample_path("neon_soap")])


@pytest.mark.slow
def test_fcos_trains_and_detects_on_a_real_crop(profile: Profile, tmp_path: Path) -> None:
    """The anchor-free detector goes through the whole path: selection, refit, card, and
    detection on the scene, with boxes inside it and the card's threshold recorded."""
    fcos = profile.model_copy(update={"detection": profile.detection.model_copy(  # type: ignore[union-attr]
        update={"architecture": "fcos"})})  # fmt: skip
    opts = DetectTrainOptions(device="cpu", max_epochs=1, chips_per_epoch=8, seed=0,
                              positive_classes=CROWNS)  # fmt: skip
    card = train_detector(fcos, [sample_path("neon_soap_labels")], [sample_path("neon_soap")],
                          tmp_path / "fcos", opts)  # fmt: skip
    assert card.detector.architecture == "fcos" and card.split and card.split.objects == 37
    assert card.training and card.training.options["positive_classes"] == CROWNS
    loaded = load_detector(tmp_path / "fcos")
    assert loaded.model.config.architecture == "fcos"
    scene = open_scene(sample_path("neon_soap"), sensor="rgb")
    objects = detect_scene(loaded, fcos, scene, DetectOptions(device="cpu", num_workers=0))
    sites = objects_to_sites(objects, scene, fcos, model_sha256=loaded.sha256)
    assert len(sites) > 0
    bounds = np.asarray(sites.total_bounds)
    assert bounds[0] >= -1 and bounds[1] >= -1 and bounds[2] <= 401 and bounds[3] <= 401
    assert sites["score_max"].between(0, 1).all()


def test_benchmark_cases_keep_the_test_site_out_of_training() -> None:
    """Every case of ``benchmarks/detect.py --quality`` trains on images and labels that
    are not its test images'; the leave-one-out cases (one test crop) train on every
    other crop, and each crop is held out by one of them."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "detect.py"
    spec = importlib.util.spec_from_file_location("detect_benchmark", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert set(bench.POSITIVE_CLASSES) == set(CROWNS)
    for train, test in bench.CASES.values():
        files = lambda names: {sample_path(n) for s in names for n in bench.NEON[s]}  # noqa: E731
        assert train and test and not files(train) & files(test)
    loso = [(set(a), set(b)) for a, b in bench.CASES.values() if len(a) > 1 and len(b) == 1]
    assert all(a | b == set(bench.NEON) for a, b in loso)
    assert sorted(s for _, b in loso for s in b) == sorted(bench.NEON)
