"""Dihedral test-time augmentation: weighted box fusion, and invariance under the group."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geoscreen.vision.augment import DIHEDRAL, dihedral
from geoscreen.vision.backbones import BackboneSpec, input_stats
from geoscreen.vision.boxes import dihedral_boxes
from geoscreen.vision.detect_tta import inverse_dihedral, predict_dihedral, weighted_box_fusion
from geoscreen.vision.detector import DetectorConfig, build_detector


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
