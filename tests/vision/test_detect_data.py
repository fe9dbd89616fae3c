"""Detector training chips: every object in each epoch, held-out blocks, augmentations that
keep boxes on their pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geoscreen.vision.detect_data import (
    AugmentSettings,
    PastePool,
    SceneView,
    Window,
    augment_chip,
    colour_rotation,
    copy_paste,
    ellipse_mask,
    grid_windows,
    hard_negative_windows,
    holdout_block,
    read_window,
    sample_windows,
    training_view,
    validation_view,
)
from geoscreen.vision.detector import anchor_sizes, anchors_from_sizes


def scene_with_squares(n: int = 12, side: int = 300, seed: int = 0) -> SceneView:
    """A dark scene with ``n`` bright squares of 10-40 px, their boxes exact."""
    rng = np.random.default_rng(seed)
    image = torch.zeros(3, side, side)
    boxes: list[np.ndarray] = []
    while len(boxes) < n:
        s = int(rng.integers(10, 41))
        x, y = (int(v) for v in rng.integers(0, side - s, 2))
        b = np.array([x, y, x + s, y + s], float)
        if boxes and any(_overlap(b, o) for o in boxes):
            continue
        image[:, y : y + s, x : x + s] = torch.tensor([0.9, 0.5, 0.2])[:, None, None]
        boxes.append(b)
    valid = torch.ones(side, side, dtype=torch.bool)
    return SceneView(image, valid, np.array(boxes), (0, 0, side, side))


def _overlap(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1]))


def bright(image: torch.Tensor) -> np.ndarray:
    return np.asarray((image[0] > 0.45).numpy())


def box_mask(boxes: np.ndarray, h: int, w: int) -> np.ndarray:
    out = np.zeros((h, w), bool)
    for x0, y0, x1, y1 in np.round(boxes).astype(int):
        out[y0:y1, x0:x1] = True
    return out


@pytest.mark.parametrize("scale", [(1.0, 1.0), (0.8, 1.25)])
def test_every_object_appears_whole_in_each_epoch(scale: tuple[float, float]) -> None:
    view = scene_with_squares(20, 500)
    rng = np.random.default_rng(1)
    for _ in range(3):
        windows = sample_windows([view], 128, rng, scale, random_chips=0.5)
        whole = np.zeros(len(view.boxes), bool)
        for w in windows:
            b = view.boxes
            whole |= (
                (b[:, 0] >= w.col)
                & (b[:, 2] <= w.col + w.side)
                & (b[:, 1] >= w.row)
                & (b[:, 3] <= w.row + w.side)
            )
        assert whole.all()
        assert any(w.side != 128 for w in windows) == (scale != (1.0, 1.0))


def test_grid_epochs_cover_every_pixel_once() -> None:
    view = scene_with_squares(20, 500)
    rng = np.random.default_rng(2)
    for _ in range(3):
        windows = grid_windows([view], 128, rng)
        count = np.zeros((500, 500), int)
        for w in windows:
            count[max(w.row, 0) : w.row + w.side, max(w.col, 0) : w.col + w.side] += 1
        assert (count == 1).all() and len(windows) == 16
        seen = np.zeros(len(view.boxes), bool)
        for w in windows:
            seen |= read_window_keep(view, w)
        assert seen.all()  # every object (at least in part) in the epoch's chips


def test_balanced_grid_gives_a_small_scene_as_many_chips_as_a_large_one() -> None:
    large, small = scene_with_squares(20, 500), scene_with_squares(4, 150, seed=1)
    plain = grid_windows([large, small], 128, np.random.default_rng(4))
    assert [sum(w.view == v for w in plain) for v in (0, 1)] == [16, 4]
    balanced = grid_windows([large, small], 128, np.random.default_rng(4), balance=True)
    assert [sum(w.view == v for w in balanced) for v in (0, 1)] == [16, 16]
    # The small scene's extra crops are fresh grids: shifted, still inside its reach.
    starts = {(w.col, w.row) for w in balanced if w.view == 1}
    assert len(starts) > 4
    assert all(-128 < w.col < 150 and -128 < w.row < 150 for w in balanced if w.view == 1)


def read_window_keep(view: SceneView, w: Window) -> np.ndarray:
    from geoscreen.vision.boxes import clip_boxes

    return clip_boxes(view.boxes, w.col, w.row, w.side, w.side, min_visible=1e-6)[1]


def test_read_window_resizes_boxes_with_pixels() -> None:
    view = scene_with_squares(8, 300, seed=3)
    for side in (100, 128, 160):
        image, valid, boxes = read_window(view, Window(0, 40, 30, side), 128, min_visible=1e-6)
        assert image.shape == (3, 128, 128) and bool(valid.all())
        # Bright pixels lie in the (resized) boxes and boxes hold bright pixels (slivers under
        # 2 px at the window edge have no box; resampling blurs edges by a pixel).
        inside = _grown(box_mask(boxes, 128, 128), 2)[4:-4, 4:-4]
        assert (bright(image)[4:-4, 4:-4] <= inside).all()
        for x0, y0, x1, y1 in np.round(boxes).astype(int):
            assert bright(image)[y0:y1, x0:x1].mean() > 0.8
        assert len(boxes) > 0


def _grown(mask: np.ndarray, px: int) -> np.ndarray:
    out = mask.copy()
    for dy in range(-px, px + 1):
        for dx in range(-px, px + 1):
            out |= np.roll(np.roll(mask, dy, 0), dx, 1)
    return out


def test_copy_paste_keeps_boxes_consistent_with_pixels() -> None:
    view = scene_with_squares(6, 200, seed=5)
    pool = PastePool.from_views([view])
    assert len(pool.patches) == 6
    image, valid, boxes = read_window(view, Window(0, 0, 0, 200), 200)
    rng = np.random.default_rng(0)
    pasted, out = copy_paste(image, valid, boxes, pool, 5, rng)
    assert len(out) > len(boxes)
    np.testing.assert_array_equal(out[: len(boxes)], boxes)  # the old boxes are kept as they were
    new = out[len(boxes) :]
    for i, b in enumerate(new):  # pasted boxes overlap no other box
        others = np.delete(out, len(boxes) + i, axis=0)
        assert not any(_overlap(b, o) for o in others)
    changed = (pasted != image).any(dim=0).numpy()
    assert changed.any() and (changed <= box_mask(new, 200, 200)).all()  # only inside new boxes
    for x0, y0, x1, y1 in np.round(new).astype(int):
        mask = ellipse_mask(y1 - y0, x1 - x0).bool().numpy()
        patch = bright(pasted[:, y0:y1, x0:x1])
        assert patch[mask].all()  # the pasted object fills its ellipse: the box is on the object
        assert bright(pasted).sum() >= bright(image).sum()


def test_augmented_boxes_follow_the_pixels() -> None:
    view = scene_with_squares(5, 160, seed=7)
    pool = PastePool.from_views([view])
    image, valid, boxes = read_window(view, Window(0, 0, 0, 160), 160)
    settings = AugmentSettings(dihedral=True, colour=0.0, paste=2)
    for seed in range(6):
        out, out_boxes = augment_chip(image, valid, boxes, pool, settings,
                                      np.random.default_rng(seed))  # fmt: skip
        mask = box_mask(out_boxes.numpy(), 160, 160)
        assert (bright(out) <= mask).all() and (mask <= bright(out)).sum() > 0


def test_colour_jitter_keeps_range_and_blank_pixels() -> None:
    view = scene_with_squares(5, 160, seed=8)
    valid = torch.ones(160, 160, dtype=torch.bool)
    valid[:, :20] = False
    image = view.image * valid
    settings = AugmentSettings(dihedral=False, colour=1.0)
    out, _ = augment_chip(image, valid, view.boxes, PastePool([]), settings,
                          np.random.default_rng(0))  # fmt: skip
    assert (
        float(out.min()) >= 0 and float(out.max()) <= 1 and float(out[:, :, :20].abs().sum()) == 0
    )
    assert not torch.equal(out, image)


def test_colour_rotation_turns_colours_about_their_mean() -> None:
    rng = np.random.default_rng(3)
    image = torch.from_numpy(0.5 + 0.1 * rng.standard_normal((3, 64, 64))).float()
    valid = torch.ones(64, 64, dtype=torch.bool)
    valid[:8] = False
    image = image * valid
    out = colour_rotation(image, valid, np.random.default_rng(0))
    inside = valid.expand(3, -1, -1)
    before, after = image[inside].reshape(3, -1), out[inside].reshape(3, -1)
    # The mean colour stays, the contrast moves between colour directions with its energy
    # kept (no clipping here: values stay well inside [0, 1]), blank pixels stay blank.
    assert torch.allclose(after.mean(dim=1), before.mean(dim=1), atol=1e-5)
    centred_before = before - before.mean(dim=1, keepdim=True)
    centred_after = after - after.mean(dim=1, keepdim=True)
    assert float((centred_after**2).sum()) == pytest.approx(float((centred_before**2).sum()),
                                                            rel=1e-4)  # fmt: skip
    assert not torch.allclose(after, before, atol=1e-3)
    assert float(out[:, :8].abs().sum()) == 0.0
    assert torch.equal(out, colour_rotation(image, valid, np.random.default_rng(0)))
    # The chip's pixels move together: a turn is one linear map of the colours.
    turn = torch.linalg.lstsq(centred_before.T, centred_after.T).solution
    assert torch.allclose(turn.T @ turn, torch.eye(3), atol=1e-3)
    # augment_chip applies it to the share of chips asked for; boxes do not move.
    view = scene_with_squares(5, 160, seed=8)
    settings = AugmentSettings(dihedral=False, colour=0.0, colour_rotation=1.0)
    turned, boxes = augment_chip(view.image, torch.ones(160, 160, dtype=torch.bool), view.boxes,
                                 PastePool([]), settings, np.random.default_rng(1))  # fmt: skip
    assert not torch.equal(turned, view.image)
    assert np.allclose(boxes.numpy(), view.boxes)


def test_holdout_strips_and_views() -> None:
    assert holdout_block(100, 400, 0.25, 0.0) == (0, 0, 100, 100)
    assert holdout_block(100, 400, 0.25, 1.0) == (300, 0, 400, 100)
    assert holdout_block(400, 100, 0.25, 0.5) == (0, 150, 100, 250)
    view = scene_with_squares(10, 200, seed=2)
    block = holdout_block(200, 200, 0.3, 0.5)
    train = training_view(view.image, view.boxes, block, 0.4)
    val = validation_view(view.image, view.boxes, block, 0.4)
    assert val.image.shape == (3, 200, 60) and int((~train.valid).sum()) == 200 * 60
    assert len(train.boxes) + len(val.boxes) >= len(view.boxes)


def test_anchors_follow_the_label_sizes() -> None:
    sizes = np.random.default_rng(0).uniform(12, 100, 300)
    anchors = anchors_from_sizes(sizes.tolist())
    assert len(anchors) == 9 and list(anchors) == sorted(anchors)
    assert 12 <= anchors[0] < 20 and 90 < anchors[-1] <= 100
    levels = anchor_sizes(40.0, "retinanet", anchors)
    assert [len(level) for level in levels] == [3, 3, 3] and levels[0][0] == anchors[0]
    assert anchor_sizes(40.0, "faster_rcnn", anchors)[-1] == (2 * anchors[-1],)


@pytest.mark.parametrize("scale", [(1.0, 1.0), (0.8, 1.25)])
def test_every_rejected_outline_gets_a_background_chip(scale: tuple[float, float]) -> None:
    """Hard negatives (rejected outlines) each get one crop holding them whole, per epoch;
    those in the held-out block are left out of training."""
    view = scene_with_squares(n=4, seed=3)
    negatives = np.array([[5, 5, 25, 30], [250, 260, 290, 295], [140, 10, 160, 40.0]])
    block = (0, 0, 100, 300)  # holds the first rejected outline's centre
    train = training_view(view.image, view.boxes, block, name="s", negatives=negatives)
    np.testing.assert_array_equal(train.negatives, negatives[1:])
    assert len(training_view(view.image, view.boxes, None, negatives=negatives).negatives) == 3
    rng = np.random.default_rng(0)
    for _ in range(3):  # epochs
        windows = hard_negative_windows([train], 64, rng, scale)
        assert len(windows) == len(train.negatives)
        for w, (x0, y0, x1, y1) in zip(windows, train.negatives, strict=True):
            assert w.col <= x0 and x1 <= w.col + w.side and w.row <= y0 and y1 <= w.row + w.side
    assert hard_negative_windows([view], 64, rng) == []  # none rejected, no extra chips
