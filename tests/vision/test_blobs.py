"""Scale-space blobs, the classical baseline: cue choice, box sizes, calibration, masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geoscreen.vision.blob_detector import SCALES, band_names, cue_maps, find_blobs
from geoscreen.vision.blobs import ScaleSpaceBlobs, held_out_ap, object_folds, size_range
from geoscreen.vision.detect_data import SceneView
from geoscreen.vision.detect_metrics import detection_metrics

BANDS = ["red", "green", "blue"]


def _discs(seed: int, n: int = 14, size: int = 192, shift: float = 0.3) -> SceneView:
    """Discs 10-24 px across, greener and as much less red (the band mean is unchanged),
    on a noisy background with large brightness patches that are not objects."""
    rng = np.random.default_rng(seed)
    image = rng.uniform(0.3, 0.5, (3, size, size))
    rows, cols = np.mgrid[0:size, 0:size]
    for _ in range(6):  # bright and dark patches: brightness is no cue here
        r, c = rng.integers(0, size, 2)
        patch = (rows - r) ** 2 + (cols - c) ** 2 < rng.integers(8, 14) ** 2
        image[:, patch] += rng.choice([-0.2, 0.2])
    boxes: list[list[float]] = []
    while len(boxes) < n:
        radius = float(rng.uniform(5, 12))
        r, c = (float(v) for v in rng.uniform(radius + 2, size - radius - 2, 2))
        if all(abs(c - (b[0] + b[2]) / 2) > radius + (b[2] - b[0]) / 2 + 3
               or abs(r - (b[1] + b[3]) / 2) > radius + (b[2] - b[0]) / 2 + 3
               for b in boxes):  # fmt: skip
            disc = (rows + 0.5 - r) ** 2 + (cols + 0.5 - c) ** 2 < radius**2
            image[1, disc] += shift
            image[0, disc] -= shift
            boxes.append([c - radius, r - radius, c + radius, r + radius])
    tensor = torch.from_numpy(image.astype(np.float32))
    return SceneView(tensor, torch.ones(size, size, dtype=torch.bool),
                     np.array(boxes, np.float64), (0, 0, size, size), f"discs{seed}")  # fmt: skip


def test_cues_cover_bands_means_and_ratios_with_both_signs() -> None:
    maps = cue_maps(np.ones((3, 4, 4)), BANDS)
    assert {"red", "mean", "nd(red,green)", "-nd(green,blue)", "-mean"} <= set(maps)
    assert len(maps) == 2 * (3 + 1 + 3)
    assert band_names(3, BANDS) == BANDS and band_names(4, BANDS) == ["b1", "b2", "b3", "b4"]


def test_blobs_choose_the_cue_that_marks_the_objects_and_find_them_elsewhere() -> None:
    train, test = _discs(0), _discs(1)
    blobs = ScaleSpaceBlobs(bands=BANDS).fit([train])
    # The discs differ from their surroundings by green against red, not by brightness.
    assert blobs.cue in {"green", "-red", "-nd(red,green)"}
    assert blobs.cue_ap[blobs.cue] == blobs.fit_ap > 0.8
    assert blobs.cue_ap["mean"] < 0.3
    boxes, scores = blobs.predict(test)
    metrics = detection_metrics([(boxes, scores)], [test.boxes], 0.4, 0.5)
    assert metrics["average_precision"] > 0.8 and metrics["f1"] > 0.7


def test_the_cue_is_scored_on_objects_held_out_with_the_others_set_aside() -> None:
    view = _discs(0)
    folds = object_folds([view])[0]
    order = np.argsort(view.boxes[:, 0] + view.boxes[:, 2])
    assert folds[order].tolist() == [k % 2 for k in range(len(order))]  # west to east
    scores = np.linspace(1.0, 0.5, len(view.boxes))
    # Blobs exactly on every object: each fold finds its own, the other's are set aside
    # rather than counted as false alarms.
    assert held_out_ap([(view.boxes, scores)], [view], [folds], 0.4) == pytest.approx(1.0)
    # Blobs on one fold's objects only: that fold is found, the other missed.
    one = folds == 0
    assert held_out_ap([(view.boxes[one], scores[one])], [view], [folds], 0.4) == pytest.approx(0.5)
    # A false alarm ranked first counts in both folds.
    false = np.vstack([[0.0, 0.0, 8.0, 8.0], view.boxes])
    ap = held_out_ap([(false, np.r_[2.0, scores])], [view], [folds], 0.4)
    assert 0.5 < ap < 1.0
    # Views of one object each are split between the folds too.
    singles = [
        SceneView(view.image, view.valid, view.boxes[i : i + 1], view.area) for i in range(4)
    ]
    assert [f.tolist() for f in object_folds(singles)] == [[0], [1], [0], [1]]


def test_box_size_follows_the_blob_scale() -> None:
    view = _discs(2)
    lo, hi = size_range([view])
    sides = np.sqrt(np.prod(view.boxes[:, 2:] - view.boxes[:, :2], axis=1))
    assert lo == pytest.approx(np.percentile(sides, 10) / (2 * np.sqrt(2)))
    assert hi == pytest.approx(np.percentile(sides, 90) / (2 * np.sqrt(2)))
    cue = cue_maps(view.image.numpy(), BANDS)["green"]
    found = find_blobs(cue, np.ones(cue.shape, bool), (lo, hi), (1.0, 1.5))
    grid = np.geomspace(lo, hi, SCALES)  # the cue needs no block-averaging at these sizes
    for k, (boxes, _) in found.items():  # each box is 2 k sqrt(2) sigma wide, sigma a scale
        sigma = (boxes[:, 2] - boxes[:, 0]) / (2 * k * np.sqrt(2))
        assert np.abs(sigma[:, None] - grid[None]).min(axis=1).max() < 1e-9
        assert np.allclose(boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0])
    # The strongest blob of each labelled disc is about its size (one per disc).
    top = found[1.0][0][: len(view.boxes)]
    near = np.abs(top[:, None, :2] + top[:, None, 2:] - view.boxes[None, :, :2]
                  - view.boxes[None, :, 2:]).sum(-1).argmin(axis=1)  # fmt: skip
    ratio = (top[:, 2] - top[:, 0]) / (view.boxes[near, 2] - view.boxes[near, 0])
    assert 0.6 < np.median(ratio) < 1.6


def test_calibrated_scores_keep_the_blobs_order() -> None:
    train, test = _discs(0), _discs(3)
    blobs = ScaleSpaceBlobs(bands=BANDS).fit([train])
    boxes, prob = blobs.predict(test)
    cue = cue_maps(test.image.numpy(), BANDS)[blobs.cue]
    raw_boxes, strength = find_blobs(cue, np.ones(cue.shape, bool), blobs.sigmas,
                                     (blobs.width,))[blobs.width]  # fmt: skip
    assert np.array_equal(boxes, raw_boxes)
    assert np.all((prob > 0) & (prob < 1))
    order = np.argsort(-strength, kind="stable")
    assert np.all(np.diff(prob[order]) <= 1e-12)  # monotone in the blob strength
    assert blobs.calibration is not None and blobs.calibration[0] > 0
    assert prob[order][0] > 0.5 > prob[order][-1]  # strong blobs match, faint ones do not


def test_found_gives_any_cues_blobs_at_the_fitted_sizes() -> None:
    train, test = _discs(0), _discs(1)
    blobs = ScaleSpaceBlobs(bands=BANDS).fit([train])
    boxes, strength = blobs.found(test)  # the chosen cue, raw strengths
    assert np.array_equal(boxes, blobs.predict(test)[0])
    cue = cue_maps(test.image.numpy(), BANDS)["mean"]
    raw = find_blobs(cue, np.ones(cue.shape, bool), blobs.sigmas, (blobs.width,))[blobs.width]
    other = blobs.found(test, "mean")  # another cue at the same sizes and width
    assert np.array_equal(other[0], raw[0]) and np.array_equal(other[1], raw[1])
    aps = [detection_metrics([f], [test.boxes], 0.4, np.inf)["average_precision"]
           for f in ((boxes, strength), other)]  # fmt: skip
    assert aps[0] > 0.8 > 0.3 > aps[1]  # brightness does not mark the discs
    with pytest.raises(RuntimeError, match="fit the blobs first"):
        ScaleSpaceBlobs().found(test, "mean")


def test_invalid_pixels_make_no_blobs() -> None:
    view = _discs(0)
    view.valid[:, 96:] = False
    view.image[:, :, 96:] = 0.0  # a blanked held-out strip: its edge is no blob
    blobs = ScaleSpaceBlobs(bands=BANDS).fit([_discs(1)])
    boxes, _ = blobs.predict(view)
    assert len(boxes) and np.all((boxes[:, 0] + boxes[:, 2]) / 2 < 96)


def test_blobs_need_boxes_and_a_fit() -> None:
    view = _discs(0)
    with pytest.raises(RuntimeError, match="fit the blobs first"):
        ScaleSpaceBlobs().predict(view)
    view.boxes = np.zeros((0, 4))
    with pytest.raises(ValueError, match="no boxes"):
        ScaleSpaceBlobs().fit([view])


def test_one_labelled_object_is_fitted_on_itself() -> None:
    """One object makes no second fold: the cue is chosen on that object alone."""
    view = _discs(0)
    one = SceneView(view.image, view.valid, view.boxes[:1], view.area)
    assert [f.tolist() for f in object_folds([one])] == [[0]]
    blobs = ScaleSpaceBlobs(bands=BANDS).fit([one])
    assert blobs.cue_ap[blobs.cue] == blobs.fit_ap == max(blobs.cue_ap.values()) > 0
    boxes, scores = blobs.predict(view)
    assert len(boxes) == len(scores) > 0
