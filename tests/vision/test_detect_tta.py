"""Dihedral test-time augmentation: weighted box fusion, and invariance under the group."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from scipy.sparse.csgraph import connected_components

from geoscreen.vision.augment import DIHEDRAL, dihedral
from geoscreen.vision.backbones import BackboneSpec, input_stats
from geoscreen.vision.boxes import dihedral_boxes, paired_iou
from geoscreen.vision.detect_data import SceneView
from geoscreen.vision.detect_train import predict_views_tta
from geoscreen.vision.detect_tta import (
    fusion_groups,
    inverse_dihedral,
    predict_dihedral,
    weighted_box_fusion,
)
from geoscreen.vision.detector import DetectorConfig, FusedDetector, build_detector


def test_inverse_undoes_each_symmetry() -> None:
    x = torch.arange(12.0).reshape(1, 3, 4)
    box = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    for k in range(DIHEDRAL):
        assert torch.equal(dihedral(dihedral(x, k), inverse_dihedral(k)), x)
        h, w = (4, 3) if k % 2 else (3, 4)
        moved = dihedral_boxes(box, k, 3, 4)
        assert torch.allclose(dihedral_boxes(moved, inverse_dihedral(k), h, w), box)


def test_fusion_of_agreeing_views_gives_the_boxes_back() -> None:
    boxes = np.array([[10, 10, 30, 30], [50, 40, 90, 70]], float)
    scores = np.array([0.8, 0.4])
    jitter = [boxes + d for d in (-1, 1, 0, 0, -1, 1, 0, 0)]
    fused, fused_scores = weighted_box_fusion(jitter, [scores] * 8)
    np.testing.assert_allclose(fused, boxes, atol=1e-9)
    np.testing.assert_allclose(fused_scores, scores)
    # An object found in one view of eight keeps an eighth of its score.
    _, lone_scores = weighted_box_fusion([boxes[:1]] + [np.zeros((0, 4))] * 7,
                                         [scores[:1]] + [np.zeros(0)] * 7)  # fmt: skip
    np.testing.assert_allclose(lone_scores, [0.1])
    assert weighted_box_fusion([], [])[0].shape == (0, 4)


def test_a_chain_of_overlaps_counts_each_view_once() -> None:
    """Two neighbouring objects that one view's boxes join through another view's box in
    between: each view gives the cluster its best box only, so the fused score is the
    mean of the views' best (never above the best box, no cap needed), and low-scoring
    boxes around an object do not add up to a confident one."""
    left, right = np.array([[0.0, 0, 20, 20]]), np.array([[6.0, 0, 26, 20]])
    middle = np.array([[3.0, 0, 23, 20]])  # IoU left/right 0.54, each with the middle 0.74
    assert paired_iou(left, right)[0] < 0.55 <= paired_iou(left, middle)[0]
    boxes = [np.concatenate([left, right]), middle]
    fused, scores = weighted_box_fusion(boxes, [np.array([0.9, 0.8]), np.array([0.5])])
    assert len(fused) == 1  # one cluster through the middle box
    np.testing.assert_allclose(scores, [(0.9 + 0.5) / 2])  # the sum gave 1.1, capped at 1
    # eight views of low-scoring boxes around an object stay low
    halo = [np.array([[0.0, 0, 20, 20], [2.0, 0, 22, 20]]) for _ in range(8)]
    _, low = weighted_box_fusion(halo, [np.array([0.1, 0.1])] * 8)
    np.testing.assert_allclose(low, [0.1])


def _groups_from_every_pair(boxes: np.ndarray, iou: float) -> np.ndarray:
    """The definition, over all N x N pairs (what fusion_groups computed until session 20)."""
    rows, cols = np.indices((len(boxes), len(boxes))).reshape(2, -1)
    linked = (paired_iou(boxes[rows], boxes[cols]) >= iou).reshape(len(boxes), len(boxes))
    return np.asarray(connected_components(linked, directed=False)[1])


def test_fusion_groups_are_the_components_of_every_pair() -> None:
    """Pairs from the spatial index give the groups of all pairs, with empty (zero-width)
    and inverted boxes among them, at IoU thresholds up to 1 (only equal boxes)."""
    rng = np.random.default_rng(0)
    for _ in range(60):
        n = int(rng.integers(1, 200))
        corner = rng.uniform(0, 150, (n, 2))
        boxes = np.column_stack([corner, corner + rng.uniform(0, 40, (n, 2))])
        boxes[: n // 6, 2] = boxes[: n // 6, 0]  # empty
        boxes[n // 6 : n // 3] = boxes[n // 6 : n // 3][:, [2, 1, 0, 3]]  # inverted
        boxes[-(n // 8) or n :] = boxes[0]  # some equal to the first
        for iou in (0.05, 0.3, 0.55, 0.9, 1.0):
            np.testing.assert_array_equal(fusion_groups(boxes, iou),
                                          _groups_from_every_pair(boxes, iou))  # fmt: skip
    assert fusion_groups(np.zeros((0, 4)), 0.55).shape == (0,)
    np.testing.assert_array_equal(fusion_groups(boxes, 0.0), np.zeros(len(boxes)))


def test_fusion_groups_of_a_whole_scene_of_boxes() -> None:
    """A scene's objects from two detectors: 40,000 boxes (all pairs would take 1.6e9
    IoUs, over 12 GB per array). Each crown found by both models, a little shifted."""
    rng = np.random.default_rng(1)
    centres = np.stack(np.meshgrid(np.arange(200) * 50.0, np.arange(100) * 50.0), -1)
    first = np.concatenate([centres.reshape(-1, 2) - 15, centres.reshape(-1, 2) + 15], axis=1)
    second = first + rng.uniform(-2, 2, first.shape)
    group = fusion_groups(np.concatenate([first, second]), 0.55)
    assert group.max() + 1 == len(first)
    np.testing.assert_array_equal(group[: len(first)], group[len(first) :])


@pytest.fixture(scope="module")
def detector() -> torch.nn.Module:
    torch.manual_seed(0)
    spec = BackboneSpec("resnet18", 3)
    mean, std = input_stats(spec)
    config = DetectorConfig(architecture="retinanet", backbone=spec, mean=tuple(mean),
                            std=tuple(std), object_size_m=2.0, resolution_m=0.1, tile_size=96,
                            fpn_channels=32, score_threshold=0.0, max_detections=50)  # fmt: skip
    return build_detector(config).eval()


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """The same boxes with the same scores, in any order (ties in score may swap places)."""
    assert len(a["boxes"]) == len(b["boxes"]) > 0
    ea = np.column_stack([a["boxes"].numpy(), 100 * a["scores"].numpy()])
    eb = np.column_stack([b["boxes"].numpy(), 100 * b["scores"].numpy()])
    gap = np.abs(ea[:, None, :] - eb[None, :, :]).max(axis=2)
    assert gap.min(axis=1).max() < 1e-2 and gap.min(axis=0).max() < 1e-2


def test_tta_is_equivariant_and_invariant_on_a_symmetric_tile(detector: torch.nn.Module) -> None:
    yy, xx = torch.meshgrid(torch.arange(96.0), torch.arange(96.0), indexing="ij")
    disk = (((yy - 47.5) ** 2 + (xx - 47.5) ** 2) < 20**2).float()
    symmetric = torch.stack([disk * 0.8, disk * 0.6, disk * 0.2])[None]
    ref = predict_dihedral(detector, symmetric)[0]
    for k in range(DIHEDRAL):  # a tile equal to each of its turns gives boxes equal to theirs
        turned = {"boxes": dihedral_boxes(ref["boxes"], k, 96, 96), "scores": ref["scores"]}
        _same(ref, turned)
    rng = torch.Generator().manual_seed(0)
    tile = torch.rand(1, 3, 96, 96, generator=rng)
    base = predict_dihedral(detector, tile)[0]
    for k in (1, 4, 7):  # any tile: TTA of a turned tile is the turned TTA of the tile
        moved = predict_dihedral(detector, dihedral(tile, k))[0]
        _same(moved, {"boxes": dihedral_boxes(base["boxes"], k, 96, 96), "scores": base["scores"]})


def test_strips_under_tta_are_scored_as_screen_tta_scores_them(detector: torch.nn.Module) -> None:
    """Training's ``--tta`` threshold comes from :func:`predict_views_tta`: one model's
    boxes are :func:`predict_dihedral`'s; a pair's are each member's under the 8 views, then
    the two sets fused, and a turned view gives the turned boxes."""
    rng = torch.Generator().manual_seed(1)
    image = torch.rand(3, 96, 128, generator=rng)
    view = SceneView(image, torch.ones(96, 128, dtype=torch.bool), np.zeros((0, 4)),
                     (0, 0, 128, 96))  # fmt: skip
    ((boxes, scores),) = predict_views_tta(detector, [view], torch.device("cpu"))
    alone = predict_dihedral(detector, image[None])[0]
    _same({"boxes": torch.from_numpy(boxes), "scores": torch.from_numpy(scores)}, alone)
    pair = FusedDetector(detector.config, [detector, copy.deepcopy(detector)])
    ((fused_boxes, fused_scores),) = predict_views_tta(pair, [view], torch.device("cpu"))
    # two identical members: the same boxes, the same scores
    _same({"boxes": torch.from_numpy(fused_boxes), "scores": torch.from_numpy(fused_scores)},
          alone)  # fmt: skip
    turned = SceneView(dihedral(image, 1), torch.ones(128, 96, dtype=torch.bool),
                       np.zeros((0, 4)), (0, 0, 96, 128))  # fmt: skip
    ((moved, moved_scores),) = predict_views_tta(pair, [turned], torch.device("cpu"))
    expected = {"boxes": dihedral_boxes(torch.from_numpy(fused_boxes), 1, 96, 128),
                "scores": torch.from_numpy(fused_scores)}  # fmt: skip
    _same({"boxes": torch.from_numpy(moved), "scores": torch.from_numpy(moved_scores)}, expected)
