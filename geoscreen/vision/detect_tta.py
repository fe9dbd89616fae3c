"""Dihedral test-time augmentation for detectors, merged by weighted box fusion.

Overhead imagery has no "up": the detector sees each tile under all 8 flips and
rotations, each view's boxes are mapped back to the tile, and boxes of one object
across views are fused (:func:`weighted_box_fusion`): clustered at IoU ``iou``
(connected components), the fused box is the score-weighted mean of the cluster's
boxes and its score the cluster's summed score over the number of views (an object
found in one view of eight scores an eighth). The result is the same, up to the
symmetry, whichever way the tile is turned.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import shapely
import torch
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from geoscreen.vision.augment import DIHEDRAL, dihedral
from geoscreen.vision.boxes import dihedral_boxes, paired_iou

Predict = Callable[[torch.Tensor], list[dict[str, torch.Tensor]]]


def inverse_dihedral(k: int) -> int:
    """The symmetry undoing :func:`geoscreen.vision.augment.dihedral` ``k``: turns
    reverse; a turn followed by a flip is a reflection, its own inverse."""
    return (4 - k % 4) % 4 if k < 4 else k


def fusion_groups(boxes: np.ndarray, iou: float) -> np.ndarray:
    """The cluster of each box (N, 4): connected components of "IoU >= ``iou``".

    Only boxes that touch can reach a positive IoU, so the pairs come from a spatial
    index: fusing a scene's objects (tens of thousands of boxes, a detector pair) would
    need an N x N matrix (14 GB for 12,000 boxes) and a tile's views (hundreds) no less.
    """
    n = len(boxes)
    if n == 0 or iou <= 0:  # every IoU is >= 0: one group
        return np.zeros(n, np.int32)
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    index = shapely.STRtree(shapely.box(b[:, 0], b[:, 1], b[:, 2], b[:, 3]))
    left, right = index.query(index.geometries, predicate="intersects")
    ahead = left < right
    left, right = left[ahead], right[ahead]
    linked = paired_iou(b[left], b[right]) >= iou
    graph = csr_matrix(
        (np.ones(int(linked.sum()), np.int8), (left[linked], right[linked])), shape=(n, n)
    )
    return np.asarray(connected_components(graph, directed=False)[1])


def group_boxes(boxes: np.ndarray, scores: np.ndarray, group: np.ndarray) -> np.ndarray:
    """One box per group (ids 0..n-1): the mean of its members' boxes weighted by score."""
    n = int(group.max()) + 1
    w = np.maximum(scores, 1e-9)  # boxes scoring 0 still have a position
    return (
        np.column_stack(
            [np.bincount(group, weights=boxes[:, k] * w, minlength=n) for k in range(4)]
        )
        / np.bincount(group, weights=w, minlength=n)[:, None]
    )


def weighted_box_fusion(
    boxes: Sequence[np.ndarray], scores: Sequence[np.ndarray], iou: float = 0.55
) -> tuple[np.ndarray, np.ndarray]:
    """Fuse the boxes (N_i, 4) and scores (N_i,) of several views (module docstring).

    Clusters are the connected components of "IoU >= ``iou``": unlike greedy clustering
    in score order they do not depend on the order of tied scores, so fusing the views
    of a turned tile gives the turned result.
    """
    views = max(len(boxes), 1)
    b = np.concatenate(
        [np.asarray(x, np.float64).reshape(-1, 4) for x in boxes] or [np.zeros((0, 4))]
    )
    s = np.concatenate([np.asarray(x, np.float64).reshape(-1) for x in scores] or [np.zeros(0)])
    if len(s) == 0:
        return np.zeros((0, 4)), np.zeros(0)
    group = fusion_groups(b, iou)
    fused = group_boxes(b, s, group)
    out_scores = np.minimum(np.bincount(group, weights=s, minlength=len(fused)) / views, 1.0)
    rank = np.argsort(-out_scores, kind="stable")
    return fused[rank], out_scores[rank]


@torch.inference_mode()
def predict_dihedral(
    predict: Predict, images: torch.Tensor, iou: float = 0.55
) -> list[dict[str, torch.Tensor]]:
    """``predict`` (a batch -> per-image boxes and scores) under the 8 symmetries, fused."""
    h, w = images.shape[-2:]
    per_view: list[list[dict[str, torch.Tensor]]] = []
    for k in range(DIHEDRAL):
        results = predict(dihedral(images, k))
        vh, vw = (w, h) if k % 2 else (h, w)  # odd quarter turns swap the sides
        back = inverse_dihedral(k)
        per_view.append(
            [
                {"boxes": dihedral_boxes(r["boxes"].float().cpu(), back, vh, vw),
                 "scores": r["scores"].float().cpu()}
                for r in results
            ]
        )  # fmt: skip
    out = []
    for n in range(images.shape[0]):
        boxes, scores = weighted_box_fusion(
            [v[n]["boxes"].numpy() for v in per_view],
            [v[n]["scores"].numpy() for v in per_view],
            iou,
        )
        out.append(
            {"boxes": torch.from_numpy(boxes).float(), "scores": torch.from_numpy(scores).float()}
        )
    return out
