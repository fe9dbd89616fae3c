"""The simple detectors a trained detector must beat: pixel peaks, scale-space blobs and
random boxes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geoscreen.vision.detect_baselines import (
    CLEAR_MARGIN,
    MIN_CUE_OBJECTS,
    PixelPeaks,
    baseline_table,
    baseline_verdict,
    baselines_record,
    beats_pixel_baseline,
    cue_limit,
    median_size_px,
    random_boxes,
    scene_cues,
)
from geoscreen.vision.detect_data import SceneView
from geoscreen.vision.modelcard import DetectorBaselines


def _scene(seed: int, n: int = 12, side: int = 16, size: int = 160, band: int = 1) -> SceneView:
    """Bright squares of one size on a dark, noisy background (3 bands in [0, 1]), bright
    in one band (green unless ``band`` says another)."""
    rng = np.random.default_rng(seed)
    image = rng.uniform(0.05, 0.25, (3, size, size)).astype(np.float32)
    boxes: list[list[float]] = []
    while len(boxes) < n:
        c, r = (int(v) for v in rng.integers(0, size - side, 2))
        box = [c, r, c + side, r + side]
        if all(c + side + 2 < b[0] or b[2] + 2 < c or r + side + 2 < b[1] or b[3] + 2 < r
               for b in boxes):  # fmt: skip
            boxes.append(box)
            image[band, r : r + side, c : c + side] += 0.6
    return SceneView(torch.from_numpy(image), torch.ones(size, size, dtype=torch.bool),
                     np.array(boxes, np.float64), (0, 0, size, size), f"scene{seed}")  # fmt: skip


def test_pixel_peaks_find_objects_that_differ_by_colour() -> None:
    train, test = _scene(0), _scene(1)
    peaks = PixelPeaks(seed=0).fit([train])
    assert peaks.side == pytest.approx(median_size_px([train])) == 16
    boxes, scores = peaks.predict(test)
    assert boxes.shape[1] == 4 and len(boxes) == len(scores) and np.all(np.diff(scores) <= 0)
    table = baseline_table([train], [test], [(boxes, scores)], iou=0.4)
    # Colour alone separates these objects: the per-pixel baseline finds them, and so do
    # blobs of the green band (one size: no blob-scale error); chance does not.
    assert table["pixel_peaks"]["ap"] > 0.8
    assert table["scale_space_blobs"]["ap"] > 0.8
    assert table["random_boxes"]["ap"] < 0.3
    assert table["model"]["ap"] == pytest.approx(table["pixel_peaks"]["ap"])


def test_random_boxes_follow_the_training_density() -> None:
    train, test = _scene(0, n=12), _scene(1, n=3, size=320)
    ((boxes, scores),) = random_boxes([train], [test], seed=0)
    # 12 objects on 160^2 px -> 4x the area holds about 48 boxes of the median size.
    assert len(boxes) == 48 and len(scores) == 48
    assert np.allclose(boxes[:, 2] - boxes[:, 0], 16) and np.all((scores >= 0) & (scores < 1))
    again, _ = random_boxes([train], [test], seed=0)[0]
    assert np.array_equal(boxes, again)  # fixed seed, same boxes


def test_invalid_pixels_are_neither_fitted_nor_detected() -> None:
    train = _scene(0)
    train.valid[:, 80:] = False  # a held-out block blanked out of the training view
    train.image[:, :, 80:] = 0.0
    peaks = PixelPeaks(seed=0).fit([train])
    test = _scene(1)
    test.valid[:80] = False
    boxes, _ = peaks.predict(test)
    assert np.all((boxes[:, 1] + boxes[:, 3]) / 2 >= 80)  # only where the view is valid
    assert np.all(peaks.probability(test)[:80] == 0.0)


def test_verdict_and_card_record() -> None:
    train, test = _scene(0), _scene(1)
    truth = (test.boxes, np.ones(len(test.boxes)))
    perfect = baseline_table([train], [test], [truth], iou=0.4)
    assert perfect["model"]["ap"] == pytest.approx(1.0) and beats_pixel_baseline(perfect)
    # Squares of one size in one band are what blobs find best: even a perfect model
    # cannot beat them by the margin, and the verdict says so ...
    assert perfect["scale_space_blobs"]["ap"] > 1.0 - CLEAR_MARGIN
    assert "for scale-space blobs" in baseline_verdict(perfect)
    # ... while a model clearly above both simple baselines gets no verdict.
    weaker = {**perfect["scale_space_blobs"], "ap": 0.5}
    assert baseline_verdict({**perfect, "scale_space_blobs": weaker}) == ""
    nothing = baseline_table([train], [test], [(np.zeros((0, 4)), np.zeros(0))], iou=0.4)
    verdict = baseline_verdict(nothing)
    assert "does not beat the simple baselines" in verdict and "Label more objects" in verdict
    assert "for pixel peaks and" in verdict and "for scale-space blobs" in verdict
    record = DetectorBaselines.model_validate(baselines_record(nothing, 0.4, "green, k 1"))
    assert record.margin == CLEAR_MARGIN and not record.beats_pixel_baseline
    assert record.beats_blob_baseline is False and record.blob_cue == "green, k 1"
    assert record.scores["model"].ap == 0.0 and record.iou == 0.4
    # A model that beats the pixel peaks but not the blobs is told so, naming only them.
    between = {**nothing, "model": {"ap": nothing["pixel_peaks"]["ap"] + CLEAR_MARGIN,
                                    "best_f1": 0.0, "best_threshold": 0.5}}  # fmt: skip
    between["scale_space_blobs"] = {**between["scale_space_blobs"], "ap": 0.99}
    verdict = baseline_verdict(between)
    assert "for scale-space blobs" in verdict and "pixel peaks" not in verdict
    # Blobs above the model: they can be the model. Within the margin but below: not said.
    assert "detection.architecture: blobs" in verdict
    assert "detection.architecture: blobs" not in baseline_verdict(perfect)
    record = DetectorBaselines.model_validate(baselines_record(between, 0.4))
    assert record.beats_pixel_baseline and record.beats_blob_baseline is False


def test_each_scene_says_what_marks_its_objects() -> None:
    green, blue, empty = _scene(0), _scene(1, band=2), _scene(2)
    few = _scene(4, n=MIN_CUE_OBJECTS - 1)
    empty.boxes = np.zeros((0, 4))  # a scene without objects has no cue of its own,
    bands = ["red", "green", "blue"]  # nor one with too few objects to tell it
    cues = scene_cues([green, blue, empty, few], ["a.tif", "b.tif", "c.tif", "e.tif"], bands,
                      0.4)  # fmt: skip
    assert [(c["scene"], c["objects"]) for c in cues] == [("a.tif", 12), ("b.tif", 12)]
    assert cues[0]["cue"] in {"green", "nd(green,blue)", "-nd(red,green)"}
    assert cues[1]["cue"] in {"blue", "-nd(green,blue)", "-nd(red,blue)"}
    limit = cue_limit(cues)
    assert "choose different cues (a.tif: " in limit and "b.tif: " in limit
    assert "(12 objects)" in limit and "Score it on a few labelled objects" in limit
    assert "(detection.architecture: blobs)" in limit  # what to do there, with reviews
    same = scene_cues([green, _scene(3)], ["a.tif", "d.tif"], bands, 0.4)
    assert same[0]["cue"] == same[1]["cue"] and cue_limit(same) == ""
    assert cue_limit(cues[:1]) == ""
    table = baseline_table([green], [blue], [(blue.boxes, np.ones(12))], iou=0.4)
    record = DetectorBaselines.model_validate(baselines_record(table, 0.4, "green, k 1", cues))
    assert record.scene_cues is not None
    assert [(c.scene, c.cue, c.objects) for c in record.scene_cues] == [
        (c["scene"], c["cue"], c["objects"]) for c in cues
    ]
    one = DetectorBaselines.model_validate(baselines_record(table, 0.4, "green, k 1", cues[:1]))
    assert one.scene_cues is None  # one scene: nothing to compare


def test_pixel_peaks_need_both_classes() -> None:
    view = _scene(0)
    view.boxes = np.zeros((0, 4))
    with pytest.raises(ValueError, match="inside and outside boxes"):
        PixelPeaks().fit([view])
