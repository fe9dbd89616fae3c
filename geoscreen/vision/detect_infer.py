"""Detection over large scenes: overlapping tiles, boxes in scene coordinates, one site per object.

Tiles of the profile's grid (overlapping by ``tiling.overlap``) are read by a
DataLoader (:class:`~geoscreen.imagery.dataset.TileDataset`) while the detector
runs. Each tile's boxes are shifted to scene pixels and clipped to the scene.

Cross-tile duplicates: an object in the overlap of two tiles is found twice, and
an object cut by a tile border is found whole in one tile and in part in the
other (or in part in both). A box is *cut* on a side when that side lies within
``edge_px`` of its tile's edge and that edge is inside the scene. Two detections are
the same object when

- they come from different tiles and one is a *part* of the other: the part is cut,
  the other box goes on past one of the part's cut sides (the object continues
  beyond the tile edge where the part stops), and the other box cut back to the
  part's cut sides (what the part's tile saw of it) matches the part at IoU
  ``merge_ios`` or more. Each part goes with the box it matches best, and only there:
  being smaller than its object, a part can overlap a neighbour's box too; or
- their IoU reaches ``merge_iou`` (the profile's ``nms_iou``), unless they come from
  different tiles and one of them is a part placed by the rule above; or
- they come from different tiles, are cut on facing sides (the first on its right,
  the second, starting further right, on its left; or bottom and top), meet or
  overlap (within ``2 * edge_px``), and overlap along that border by at least
  ``merge_ios`` of the shorter side: two partial views of one object larger than
  the tile overlap (or halves on a border of tiles that do not overlap).

Groups form greedily in descending score (the highest-scoring detection absorbs
its neighbours, as NMS does), and a group goes on to the cut pieces linked to its
members: an object on a tile corner is in four pieces; a chain never goes from a
piece to a whole box. Until session 11 a piece was part of any box covering half of
the smaller of the two and chains went through pieces: in a dense scene one piece
lies inside the boxes of two neighbours, and they were merged (on the real YELL crop a
third of the crowns a detector had found were lost: ``docs/detector.md``, session 11).
A group keeps the box of its best detection; when that one is cut, the box of its best
uncut member, and without one the union of its parts (which rebuilds an object larger than the
overlap). Scores: ``score_max`` (the best), ``score_mean`` (over the group),
``tile_count`` (distinct tiles that saw the object). Candidate pairs come from a
shapely STRtree, so the cost grows with the number of detections, not its square.

A fused detector (:class:`~geoscreen.vision.detector.FusedDetector`) screens the scene
once per member, each merged as above, and the members' objects are then fused
(:func:`fuse_objects`).

Output: :class:`Objects` (boxes in scene pixels and their scores); the sites stage
makes one site per object (:mod:`geoscreen.sites.detections`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import shapely
import torch
from shapely.geometry.base import BaseGeometry
from torch.utils.data import DataLoader
from tqdm import tqdm

from geoscreen.errors import ConfigError
from geoscreen.imagery.dataset import TileDataset, collate
from geoscreen.imagery.preprocess import ScenePreprocessor
from geoscreen.imagery.scene import Scene
from geoscreen.imagery.tiling import TileGrid
from geoscreen.profiles import Profile
from geoscreen.vision.boxes import paired_iou
from geoscreen.vision.detect_tta import (
    fusion_groups,
    group_boxes,
    mean_of_best,
    predict_dihedral,
)
from geoscreen.vision.detector import BLOBS, FUSION_IOU, Detector, FusedDetector, LoadedDetector
from geoscreen.vision.fold import folded_for_inference
from geoscreen.vision.infer import auto_workers, check_model_fits, prepare_scene
from geoscreen.vision.modelcard import ModelCard
from geoscreen.vision.runtime import autocast, gc_paused

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DetectOptions:
    """How to run detection (what to detect comes from the profile and model)."""

    batch_size: int = 8
    device: str = "auto"
    num_workers: int | None = None  # None: auto_workers(device), 0 on CPU, 1 on a GPU
    drop_empty: bool = True
    progress: bool = False
    merge_iou: float | None = None
    merge_ios: float = 0.5
    edge_px: float = 2.0
    pixel_size_m: float | None = None
    precision: str = "auto"  # fp32, bf16 or auto (runtime.pick_precision; int8 is refused)
    tta: bool = False  # the 8 flips/rotations of each tile, fused (detect_tta)
    tta_iou: float = 0.55


@dataclass
class RawDetections:
    """Per-tile detections in scene pixels, before cross-tile merging."""

    boxes: np.ndarray
    scores: np.ndarray
    tile: np.ndarray
    sides: np.ndarray
    tiles: int = 0

    @classmethod
    def empty(cls, tiles: int = 0) -> RawDetections:
        z = np.zeros(0)
        return cls(np.zeros((0, 4)), z, z.astype(np.int64), np.zeros((0, 4), bool), tiles)

    @property
    def cut(self) -> np.ndarray:
        """Whether each box is cut on any side."""
        return np.asarray(self.sides.any(axis=1), dtype=bool)


@dataclass
class Objects:
    """One row per object after cross-tile merging (boxes in scene pixels)."""

    boxes: np.ndarray
    score_max: np.ndarray
    score_mean: np.ndarray
    tile_count: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.score_max)


def decision_threshold(profile: Profile, card: ModelCard, tta: bool = False) -> tuple[float, str]:
    """The score threshold screening applies, and where it comes from: the profile's when
    it sets ``threshold``, else the model card's (held-out F1-optimal; with ``tta`` the one
    chosen on the strips detected under the 8 flips/rotations, when the card has it),
    else the default."""
    if "threshold" in profile.model_fields_set:
        return float(profile.threshold), "profile"
    tta_threshold = getattr(card, "tta_threshold", None)
    if tta and tta_threshold is not None:
        return float(tta_threshold), "model card, for --tta"
    if card.threshold_source and card.threshold is not None:
        return float(card.threshold), "model card"
    return float(profile.threshold), "profile default"


def check_detector_fits(loaded: LoadedDetector, profile: Profile, scene: Scene) -> None:
    """Refuse a model/scene that does not fit the profile (as for classifiers); warn when
    the scene's pixel size differs from the one the anchors were set for."""
    check_model_fits(loaded, profile, scene)
    trained = loaded.card.detector.resolution_m
    res = scene.resolution_m
    if res is not None and abs(math.sqrt(res[0] * res[1]) / trained - 1) > 0.1:
        log.warning(
            "%s has %.3g m pixels but the detector's anchors were set for %.3g m; "
            "objects will look %.2gx their trained size",
            scene.uri, math.sqrt(res[0] * res[1]), trained, trained / math.sqrt(res[0] * res[1]),
        )  # fmt: skip


def cut_sides(
    boxes: np.ndarray, col_off: float, row_off: float, size: int, scene: Scene, edge_px: float
) -> np.ndarray:
    """(N, 4) flags: box side (left, top, right, bottom) on an edge of its tile inside the scene."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.column_stack(
        [
            (col_off > 0) & (b[:, 0] - col_off <= edge_px),
            (row_off > 0) & (b[:, 1] - row_off <= edge_px),
            (col_off + size < scene.width) & (col_off + size - b[:, 2] <= edge_px),
            (row_off + size < scene.height) & (row_off + size - b[:, 3] <= edge_px),
        ]
    ).astype(bool)


@torch.inference_mode()
def detect_grid(
    model: Detector,
    grid: TileGrid,
    preprocessor: ScenePreprocessor,
    opts: DetectOptions,
    device: torch.device,
) -> RawDetections:
    """Run the detector over every tile of ``grid``; boxes in scene pixels, clipped to it."""
    n = len(grid)
    if n == 0:
        return RawDetections.empty()
    model = folded_for_inference(model).to(device)  # type: ignore[assignment]  # an eval copy
    workers = opts.num_workers if opts.num_workers is not None else auto_workers(device)
    loader = DataLoader(
        TileDataset(grid, preprocessor),
        collate_fn=collate,
        batch_size=opts.batch_size,
        shuffle=False,
        num_workers=workers,
        prefetch_factor=4 if workers > 0 else None,
        pin_memory=device.type == "cuda",
    )
    scene, size, stride = grid.scene, grid.tile_size, grid.stride
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    with (
        tqdm(total=n, desc="detecting", unit="tile", disable=not opts.progress) as bar,
        autocast(opts.precision, device),  # auto: fp32 (boxes are not checked)
    ):
        for batch in loader:
            images = batch["image"].to(device, non_blocking=True)
            if model.reads_valid:  # fitted blobs (detect_scene refuses --tta for them)
                results = model(images, valid=batch["mask"])
            elif opts.tta:
                results = predict_dihedral(model, images, opts.tta_iou)
            else:
                results = model(images)
            for k, result in enumerate(results):
                boxes = result["boxes"].float().cpu().numpy().astype(np.float64)
                if len(boxes) == 0:
                    continue
                col_off = float(batch["col"][k]) * stride
                row_off = float(batch["row"][k]) * stride
                boxes = boxes + np.array([col_off, row_off, col_off, row_off])
                sides = cut_sides(boxes, col_off, row_off, size, scene, opts.edge_px)
                boxes[:, 0::2] = boxes[:, 0::2].clip(0, scene.width)
                boxes[:, 1::2] = boxes[:, 1::2].clip(0, scene.height)
                ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
                scores = result["scores"].float().cpu().numpy().astype(np.float64)
                tile = np.full(int(ok.sum()), int(batch["index"][k]), dtype=np.int64)
                parts.append((boxes[ok], scores[ok], tile, sides[ok]))
            bar.update(len(results))
    if not parts:
        return RawDetections.empty(n)
    boxes, scores, tiles, sides = (np.concatenate(p) for p in zip(*parts, strict=True))
    return RawDetections(boxes, scores, tiles, sides, n)


@gc_paused()  # tens of thousands of small arrays and geometries in a dense scene
def merge_across_tiles(
    raw: RawDetections, merge_iou: float, merge_ios: float = 0.5, edge_px: float = 2.0
) -> Objects:
    """Cross-tile duplicate suppression and box merging (see the module docstring)."""
    n = len(raw.scores)
    if n == 0:
        z = np.zeros(0)
        return Objects(np.zeros((0, 4)), z, z.copy(), np.zeros(0, np.int64))
    b, sides, cut = raw.boxes, raw.sides, raw.cut
    i, j = _near_pairs(b, 2 * edge_px)
    iou = paired_iou(b[i], b[j])
    other_tile = raw.tile[i] != raw.tile[j]
    # each cut piece belongs to the box from another tile it fits best (if well enough);
    # only pairs across tiles with a cut member can fit or abut (a few in a dense scene)
    fit_ij, fit_ji, abut = np.zeros(len(i)), np.zeros(len(i)), np.zeros(len(i), dtype=bool)
    for fit, part, whole in ((fit_ij, i, j), (fit_ji, j, i)):  # part of whole
        rows = np.flatnonzero(other_tile & cut[part])
        fit[rows] = _part_fit(b, sides, part[rows], whole[rows], edge_px)
    rows = np.flatnonzero(other_tile & cut[i] & cut[j])
    abut[rows] = _abut(b, sides, i[rows], j[rows], merge_ios, edge_px)
    best = np.zeros(n)
    np.maximum.at(best, np.r_[i, j], np.r_[fit_ij, fit_ji])
    part_of = ((fit_ij >= merge_ios) & (fit_ij >= best[i])) | (
        (fit_ji >= merge_ios) & (fit_ji >= best[j])
    )
    pieces = other_tile & (part_of | abut)
    # A piece that fits some box goes with that one only: being smaller than its object,
    # it can reach merge_iou with a neighbour's box from another tile too.
    placed = best >= merge_ios
    duplicate = (iou >= merge_iou) & ~(other_tile & (placed[i] | placed[j]))
    same = duplicate | pieces
    neighbours = _adjacency(i[same], j[same], n)
    # The cut pieces of one object chain together (an object on a tile corner is in
    # four parts, and one whole view holds the parts on either side of it); a chain
    # only ever goes on to a cut piece, never from a piece to another whole box.
    chained = _adjacency(i[pieces], j[pieces], n)
    # A detection with no link to any other is an object of its own: only the linked
    # ones need the greedy pass (most of them in a sparse scene, few in a dense one).
    linked = np.zeros(n, dtype=bool)
    linked[i[same]] = linked[j[same]] = True
    leader = np.where(linked, -1, np.arange(n))
    order = np.argsort(-raw.scores, kind="stable")
    for k in order[linked[order]].tolist():
        if leader[k] >= 0:
            continue
        leader[k] = k
        members = neighbours(k)
        members = members[leader[members] < 0]
        leader[members] = k
        queue = [k, *members.tolist()]
        while queue:
            more = chained(queue.pop())
            more = more[(leader[more] < 0) & cut[more]]
            leader[more] = k
            queue += more.tolist()
    heads, group = np.unique(leader, return_inverse=True)
    boxes = _group_boxes(b, raw.scores, raw.cut, heads, group)
    counts = np.bincount(group, minlength=len(heads))
    score_mean = np.bincount(group, weights=raw.scores, minlength=len(heads)) / counts
    tiles = int(raw.tile.max()) + 1
    group_tile = np.unique(group * tiles + raw.tile)  # the distinct (object, tile) pairs
    tile_count = np.bincount(group_tile // tiles, minlength=len(heads))
    rank = np.argsort(-raw.scores[heads], kind="stable")
    return Objects(
        boxes[rank], raw.scores[heads][rank], score_mean[rank], tile_count[rank].astype(np.int64)
    )


def _near_pairs(b: np.ndarray, distance: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs i < j of boxes (x0, y0, x1, y1) no further apart than ``distance``.

    What ``STRtree.query(predicate="dwithin")`` gives for boxes with area, about 10x
    faster: the tree only finds the boxes meeting each box grown by ``distance``; the
    exact gap is computed in numpy.
    """
    grown = shapely.box(*(b + np.array([-distance, -distance, distance, distance])).T)
    i, j = shapely.STRtree(shapely.box(*b.T)).query(grown)
    keep = i < j
    i, j = i[keep], j[keep]
    dx = np.clip(np.maximum(b[i, 0], b[j, 0]) - np.minimum(b[i, 2], b[j, 2]), 0, None)
    dy = np.clip(np.maximum(b[i, 1], b[j, 1]) - np.minimum(b[i, 3], b[j, 3]), 0, None)
    keep = dx * dx + dy * dy <= distance * distance
    return i[keep], j[keep]


def _adjacency(i: np.ndarray, j: np.ndarray, n: int) -> Callable[[int], np.ndarray]:
    """Neighbours of each of ``n`` nodes for the undirected edges (i, j), in CSR form."""
    src, dst = np.r_[i, j], np.r_[j, i]
    order = np.argsort(src, kind="stable")
    dst = dst[order]
    starts = np.searchsorted(src[order], np.arange(n + 1))
    return lambda k: dst[starts[k] : starts[k + 1]]


def _part_fit(
    b: np.ndarray, sides: np.ndarray, part: np.ndarray, other: np.ndarray, edge_px: float
) -> np.ndarray:
    """How well ``part`` fits as a cut view of the object ``other`` shows (0 to 1; 0 when
    ``part`` is not cut or ``other`` stops where it does): the IoU of the part with
    ``other`` cut back to the part's cut sides, i.e. what the part's tile sees of it, when
    ``other`` goes on past a cut side by more than ``edge_px``. Covering most of a piece
    is not enough: in a dense scene a neighbour's box covers most of a cut piece too, but
    cut back to the tile it has another shape."""
    beyond = (
        (sides[part, 0] & (b[other, 0] < b[part, 0] - edge_px))
        | (sides[part, 1] & (b[other, 1] < b[part, 1] - edge_px))
        | (sides[part, 2] & (b[other, 2] > b[part, 2] + edge_px))
        | (sides[part, 3] & (b[other, 3] > b[part, 3] + edge_px))
    )
    seen = b[other].copy()
    for k, keep in enumerate((np.maximum, np.maximum, np.minimum, np.minimum)):
        seen[:, k] = np.where(sides[part, k], keep(seen[:, k], b[part, k]), seen[:, k])
    return np.where(beyond, paired_iou(seen, b[part]), 0.0)


def _abut(
    b: np.ndarray, sides: np.ndarray, i: np.ndarray, j: np.ndarray, ratio: float, edge_px: float
) -> np.ndarray:
    """Pairs cut on facing sides (one on its right, the other, further right, on its left;
    or bottom/top) that meet or overlap (within ``2 * edge_px``), overlapping along the
    border by at least ``ratio`` of the shorter side: the two views of one object."""
    gap = 2 * edge_px
    h_overlap = np.minimum(b[i, 3], b[j, 3]) - np.maximum(b[i, 1], b[j, 1])
    w_overlap = np.minimum(b[i, 2], b[j, 2]) - np.maximum(b[i, 0], b[j, 0])
    h_short = np.minimum(b[i, 3] - b[i, 1], b[j, 3] - b[j, 1])
    w_short = np.minimum(b[i, 2] - b[i, 0], b[j, 2] - b[j, 0])

    def facing(a: np.ndarray, c: np.ndarray, lo: int, hi: int) -> np.ndarray:
        # a is cut on its high side, c on its low side, c starts after a and meets a.
        return np.asarray(
            sides[a, hi] & sides[c, lo] & (b[a, lo] < b[c, lo]) & (b[a, hi] >= b[c, lo] - gap),
            dtype=bool,
        )

    across_x = facing(i, j, 0, 2) | facing(j, i, 0, 2)
    across_y = facing(i, j, 1, 3) | facing(j, i, 1, 3)
    return np.asarray(
        (across_x & (h_overlap >= ratio * h_short)) | (across_y & (w_overlap >= ratio * w_short)),
        dtype=bool,
    )


def _group_boxes(
    b: np.ndarray, scores: np.ndarray, cut: np.ndarray, heads: np.ndarray, group: np.ndarray
) -> np.ndarray:
    """Each group's box: its best detection's, unless that one is cut; then the best uncut
    member's, and without one the union of the (cut) parts."""
    n = len(heads)
    boxes = b[heads].copy()
    cut_head = cut[heads]
    if not cut_head.any():
        return boxes
    whole = np.flatnonzero(~cut)
    best_whole = np.full(n, -1, dtype=np.int64)
    ranked = whole[np.lexsort((-scores[whole], group[whole]))]  # by group, best first
    first = np.r_[True, group[ranked][1:] != group[ranked][:-1]] if ranked.size else ranked
    best_whole[group[ranked[first]]] = ranked[first]
    parts = np.flatnonzero(cut)
    union = np.column_stack(
        [np.full(n, np.inf), np.full(n, np.inf), np.full(n, -np.inf), np.full(n, -np.inf)]
    )
    for k, reduce in enumerate((np.minimum, np.minimum, np.maximum, np.maximum)):
        reduce.at(union[:, k], group[parts], b[parts, k])
    use_whole = cut_head & (best_whole >= 0)
    use_union = cut_head & (best_whole < 0)
    boxes[use_whole] = b[best_whole[use_whole]]
    boxes[use_union] = union[use_union]
    return boxes


def detect_scene(
    loaded: LoadedDetector,
    profile: Profile,
    scene: Scene,
    opts: DetectOptions | None = None,
    aoi: BaseGeometry | None = None,
    meta: dict[str, Any] | None = None,
) -> Objects:
    """Detect objects over every (valid, in-AOI) tile of ``scene``, merged across tiles."""
    opts = opts or DetectOptions()
    check_detector_fits(loaded, profile, scene)
    if opts.tta and loaded.card.detector.architecture == BLOBS:
        raise ConfigError(
            "--tta does nothing for scale-space blobs (found alike under every flip and rotation)",
            where=str(loaded.path),
            fix="Leave --tta out with this model.",
        )
    device, grid, preprocessor = prepare_scene(
        profile, scene, opts.device, aoi, drop_empty=opts.drop_empty, progress=opts.progress
    )
    merge_iou = opts.merge_iou if opts.merge_iou is not None else loaded.model.config.nms_iou
    raws = [
        detect_grid(d, grid, preprocessor, opts, device) for d in screening_detectors(loaded.model)
    ]
    objects = scene_objects(raws, merge_iou, opts.merge_ios, opts.edge_px)
    objects.meta = {**(meta or {}), "tiles": len(grid),
                    "raw_detections": sum(len(r.scores) for r in raws)}  # fmt: skip
    return objects


def screening_detectors(model: Detector) -> list[Detector]:
    """The detectors that screen a scene one by one: a fused pair's members (their objects
    are fused afterwards, :func:`scene_objects`), or the one model."""
    if isinstance(model, FusedDetector):
        return [cast(Detector, member) for member in model.members]
    return [model]


def scene_objects(raws: Sequence[RawDetections], merge_iou: float, merge_ios: float = 0.5,
                  edge_px: float = 2.0) -> Objects:  # fmt: skip
    """Each detector's raw boxes (one entry per :func:`screening_detectors`) merged across
    tiles, then the detectors' objects fused: fusing per tile, before the cross-tile merge,
    found fewer crowns (docs/detector.md, session 16)."""
    found = [merge_across_tiles(raw, merge_iou, merge_ios, edge_px) for raw in raws]
    return found[0] if len(found) == 1 else fuse_objects(found)


def fuse_objects(found: Sequence[Objects], iou: float = FUSION_IOU) -> Objects:
    """The objects of several detectors as one set: objects overlapping at least ``iou``
    become one, boxes weighted by their scores, scores the detectors' mean of their best
    object there (an object one detector of two finds alone keeps half its score; as
    :func:`~geoscreen.vision.detect_tta.weighted_box_fusion`), tiles summed."""
    boxes = np.concatenate([f.boxes.reshape(-1, 4) for f in found])
    if len(boxes) == 0:
        return found[0]
    score_max = np.concatenate([f.score_max for f in found])
    score_mean = np.concatenate([f.score_mean for f in found])
    tile_count = np.concatenate([f.tile_count for f in found])
    member = np.repeat(np.arange(len(found)), [len(f) for f in found])
    group = fusion_groups(boxes, iou)
    fused = group_boxes(boxes, score_max, group)
    n = len(fused)
    score = mean_of_best(score_max, member, group, n, len(found))
    order = np.argsort(-score, kind="stable")
    return Objects(
        fused[order],
        score[order],
        mean_of_best(score_mean, member, group, n, len(found))[order],
        np.bincount(group, weights=tile_count, minlength=n).astype(np.int64)[order],
    )
