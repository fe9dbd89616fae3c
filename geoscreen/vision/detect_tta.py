"""Dihedral test-time augmentation for detectors, merged by weighted box fusion.

Overhead imagery has no "up": the detector sees each tile under all 8 flips and
rotations, each view's boxes are mapped back to the tile, and boxes of one object
across views are fused (:func:`weighted_box_fusion`): clustered at IoU ``iou``
(connected components), the fused box is the score-weighted mean of the cluster's
boxes and its score the mean over the views of each view's best score in the cluster
(:func:`mean_of_best`: an object found in one view of eight scores an eighth). The result
is the same, up to the symmetry, whichever way the tile is turned.

Until session 21 the score was the cluster's summed score over the number of views,
capped at 1. Overlaps can chain the boxes of two neighbouring crowns into one cluster, so
several boxes of one view added up, and so did the low-scoring boxes around each object:
with the pair trained in session 20 (seeds 0 and 1), `--tta` ranked the other NEON site's
crowns worse than no TTA (AP 0.326 / 0.341 against 0.334 / 0.381 OSBS -> YELL); counting
each view's best box once raised that to 0.363 / 0.380 (YELL -> OSBS 0.201 / 0.233 ->
0.239 / 0.263; docs/detector.md, session 21).
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


def mean_of_best(scores: np.ndarray, source: np.ndarray, group: np.ndarray, groups: int,
                 sources: int) -> np.ndarray:  # fmt: skip
    """Each group's score: the mean over ``sources`` (views, models) of the best score each
    gives one of its boxes, 0 for a source with none. One source's boxes that a chain of
    overlaps joins count once, so a score never exceeds the best box's."""
    best = np.zeros(groups * sources)
    np.maximum.at(best, group * sources + source, scores)
    return best.reshape(groups, sources).mean(axis=1)


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
    per_view = [np.asarray(x, np.float64).reshape(-1) for x in scores]
    s = np.concatenate(per_view or [np.zeros(0)])
    if len(s) == 0:
        return np.zeros((0, 4)), np.zeros(0)
    view = np.repeat(np.arange(len(per_view)), [len(x) for x in per_view])
    group = fusion_groups(b, iou)
    fused = group_boxes(b, s, group)
    out_scores = mean_of_best(s, view, group, len(fused), views)
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
