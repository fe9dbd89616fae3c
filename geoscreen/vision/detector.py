"""Object detectors (Faster R-CNN, RetinaNet, FCOS) on a feature pyramid over our backbones.

A :class:`Detector` takes tiles ``(B, C, H, W)`` scaled to [0, 1], any number of
bands, and returns one set of boxes (pixel coordinates of the tile, edges at
integers) and scores per tile. It wraps a torchvision detection model whose
backbone is :class:`FeaturePyramid`: three levels tapped from ``Backbone.body``
(the last stage at each stride; the stride-32 level is the trunk's own output)
under a ``torchvision.ops.FeaturePyramidNetwork``. Any backbone of
:mod:`geoscreen.vision.backbones` works, EfficientNet-Lite0 with its packaged
ImageNet weights included, with the same band adaptation.

Anchors come from the profile's object size, so one profile fits any resolution.
With ``s = object_size_m / resolution_m`` the typical object width in pixels:

- pyramid strides: ``(8, 16, 32)``, or ``(4, 8, 16)`` when ``s < 32`` (small objects
  need a finer grid than the stride-32 trunk output);
- RetinaNet: level ``l = 0, 1, 2`` gets base size ``s * 2**(l - 1)``, i.e.
  ``(s/2, s, 2s)``, each times the octave scales ``(1, 2**(1/3), 2**(2/3))``;
- Faster R-CNN: one size per level, ``(s/2,), (s,), (2s,)``, plus ``(4s,)`` on the
  max-pooled fourth level its RPN uses (as torchvision's FPN models);
- FCOS is anchor-free: its "anchors" are the strides, as torchvision's FCOS needs;
- aspect ratios ``(0.5, 1, 2)`` for RetinaNet and Faster R-CNN.

``anchor_px`` (set by training from the labels' size distribution,
:func:`anchors_from_sizes`) replaces the sizes above for RetinaNet and Faster R-CNN:
nine sizes, smallest first, three per level (Faster R-CNN takes the middle one of each
level, and twice the largest on its pooled level). Crowns range from 10 to 100 px;
one size cannot fit them all.

A 4 m crown is 40 px at 0.1 m (strides 8-32, anchors 20-127 px) and 8 px at
0.5 m (strides 4-16, anchors 4-25 px). A model keeps the anchors of the
resolution it was trained at (recorded in its card).

Scale-space blobs (``architecture: blobs``, :data:`BLOBS`) are a detector too, fitted
on labels rather than built and trained (:mod:`geoscreen.vision.blob_detector`): no
backbone, no anchors; :func:`load_detector` loads them like any other.

Tiles are never resized: torchvision's ``GeneralizedRCNNTransform`` is replaced by
one that only normalises (with the backbone's :func:`input_stats`) and pads to a
multiple of 32, so box coordinates are tile pixels in and out.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from geoscreen.errors import ConfigError, InputError
from geoscreen.vision.backbones import Backbone, BackboneSpec, build_backbone
from geoscreen.vision.detect_tta import weighted_box_fusion
from geoscreen.vision.modelcard import DetectCard
from geoscreen.vision.modeldir import (
    CARD_FILE,
    LoadedModelDir,
    read_model_dir,
    restore_weights,
    save_model_dir,
)
from geoscreen.vision.stages import stage_container, stage_maps, trunk_stages

ARCHITECTURES = ("faster_rcnn", "retinanet", "fcos")  # trained (build_detector)
BLOBS = "blobs"  # fitted, not trained: geoscreen.vision.blob_detector
ASPECT_RATIOS = (0.5, 1.0, 2.0)
OCTAVE_SCALES = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
MIN_OBJECT_PX = 4.0


def object_size_px(object_size_m: float, resolution_m: float) -> float:
    """Typical object width in pixels at ``resolution_m`` metres per pixel."""
    if not (object_size_m > 0 and resolution_m > 0):
        raise ConfigError(
            f"object size ({object_size_m} m) and pixel size ({resolution_m} m) must be positive",
            fix="Set detection.object_size_m in the profile to the objects' typical width in "
            "metres, and use a georeferenced scene (its pixel size comes from its transform).",
        )
    return object_size_m / resolution_m


def pyramid_strides(size_px: float) -> tuple[int, int, int]:
    """Feature-pyramid strides for objects ``size_px`` wide (see the module docstring)."""
    return (4, 8, 16) if size_px < 32 else (8, 16, 32)


def anchors_from_sizes(sizes_px: Sequence[float], low: float = 0.03, high: float = 0.97
                       ) -> tuple[float, ...]:  # fmt: skip
    """Nine anchor sizes spaced evenly in log between the ``low`` and ``high`` quantiles of
    the labelled objects' sizes (square root of box area, pixels)."""
    sizes = [float(v) for v in sizes_px if v > 0]
    if not sizes:
        raise ConfigError(
            "no labelled object has a size to fit anchors to (every box is empty)",
            fix="Give boxes with a width and height (xmin < xmax, ymin < ymax) in the labels, "
            "or train without fitting anchors to the labels.",
        )
    sizes.sort()
    pick = lambda q: sizes[min(len(sizes) - 1, max(0, round(q * (len(sizes) - 1))))]  # noqa: E731
    a, b = max(MIN_OBJECT_PX, pick(low)), max(MIN_OBJECT_PX * 1.5, pick(high))
    b = max(b, a * 1.5)
    return tuple(round(a * (b / a) ** (i / 8), 2) for i in range(9))


def anchor_sizes(size_px: float, architecture: str, anchor_px: Sequence[float] = ()
                 ) -> tuple[tuple[float, ...], ...]:  # fmt: skip
    """Anchor sizes (pixels) per pyramid level for objects ``size_px`` wide."""
    if architecture == BLOBS:
        return ()  # sized by their LoG scales instead
    strides = pyramid_strides(size_px)
    if architecture == "fcos":
        return tuple((float(s),) for s in strides)
    if len(anchor_px) == 9:
        levels = [tuple(anchor_px[3 * i : 3 * i + 3]) for i in range(3)]
        if architecture == "faster_rcnn":
            return (*((lv[1],) for lv in levels), (2 * levels[-1][-1],))
        return tuple(levels)
    bases = [size_px * 2.0 ** (level - 1) for level in range(len(strides))]
    if architecture == "faster_rcnn":
        return (*((b,) for b in bases), (bases[-1] * 2,))
    if architecture == "retinanet":
        return tuple(tuple(b * k for k in OCTAVE_SCALES) for b in bases)
    raise ConfigError(f"unknown detector {architecture!r}", fix=f"Use one of {ARCHITECTURES}.")


@dataclass(frozen=True)
class DetectorConfig:
    """Everything needed to rebuild a detector (recorded in its model card)."""

    architecture: str
    backbone: BackboneSpec | None  # None for scale-space blobs (BLOBS), which need none
    mean: tuple[float, ...]
    std: tuple[float, ...]
    object_size_m: float
    resolution_m: float
    tile_size: int
    max_detections: int = 300
    nms_iou: float = 0.4
    score_threshold: float = 0.05
    fpn_channels: int = 128
    anchor_px: tuple[float, ...] = ()
    tile_norm: bool = False
    members: int = 1  # >1: that many detectors trained apart, their boxes fused (FusedDetector)

    def __post_init__(self) -> None:
        if self.architecture not in (*ARCHITECTURES, BLOBS):
            raise ConfigError(
                f"unknown detector {self.architecture!r}",
                fix=f"Use one of {(*ARCHITECTURES, BLOBS)}.",
            )
        if self.backbone is None and self.architecture != BLOBS:
            raise ConfigError(f"a {self.architecture} detector needs a backbone",
                              fix="Set model.backbone in the profile.")  # fmt: skip
        size = self.object_size_px
        if size < MIN_OBJECT_PX:
            raise ConfigError(
                f"objects of {self.object_size_m:g} m are {size:.1f} px at "
                f"{self.resolution_m:g} m per pixel: too small to detect",
                fix=f"Use imagery with pixels of at most {self.object_size_m / MIN_OBJECT_PX:g} m.",
            )
        if size > self.tile_size:
            raise ConfigError(
                f"objects of {self.object_size_m:g} m ({size:.0f} px) do not fit in "
                f"{self.tile_size} px tiles",
                fix=f"Use tiles of at least {2 * math.ceil(size)} px (tiling.tile_size).",
            )

    @property
    def object_size_px(self) -> float:
        return object_size_px(self.object_size_m, self.resolution_m)

    @property
    def strides(self) -> tuple[int, int, int]:
        return pyramid_strides(self.object_size_px)

    @property
    def anchor_sizes(self) -> tuple[tuple[float, ...], ...]:
        return anchor_sizes(self.object_size_px, self.architecture, self.anchor_px)

    def to_card(self) -> dict[str, Any]:
        """Plain values for a model card (sizes derived, for people, included)."""
        out = asdict(self)
        out.pop("backbone")
        out["mean"], out["std"] = list(self.mean), list(self.std)
        out["anchor_px"] = list(self.anchor_px)
        out["object_size_px"] = round(self.object_size_px, 3)
        out["strides"] = list(self.strides)
        out["anchor_sizes"] = [[round(a, 2) for a in level] for level in self.anchor_sizes]
        if self.architecture == BLOBS:  # no pyramid, no anchors, no feature channels
            out["strides"] = out["anchor_sizes"] = None
        return out

    @classmethod
    def from_card(cls, card: DetectCard) -> DetectorConfig:
        d, b = card.detector, card.backbone
        spec = (
            BackboneSpec(
                name=b.name,
                in_channels=b.in_channels,
                band_roles=tuple(b.band_roles) if b.band_roles else None,
            )
            if b is not None
            else None  # blobs
        )
        return cls(
            architecture=d.architecture,
            backbone=spec,
            mean=tuple(d.mean),
            std=tuple(d.std),
            object_size_m=d.object_size_m,
            resolution_m=d.resolution_m,
            tile_size=d.tile_size,
            max_detections=d.max_detections,
            nms_iou=d.nms_iou,
            score_threshold=d.score_threshold,
            fpn_channels=d.fpn_channels,
            anchor_px=tuple(d.anchor_px),
            tile_norm=d.tile_norm,
            members=d.members,
        )


class FeaturePyramid(nn.Module):
    """Multi-level features of ``Backbone.body`` under an FPN (torchvision's detector backbone).

    Returns an ``OrderedDict`` of ``out_channels``-wide maps ``"0"``, ``"1"``, ``"2"`` at
    ``strides`` (plus ``"pool"`` with ``extra_pool``). Levels are read with forward
    hooks registered for the duration of one call, so the module copies and pickles
    like any other.
    """

    def __init__(
        self,
        backbone: Backbone,
        in_channels: int,
        strides: Sequence[int],
        out_channels: int,
        extra_pool: bool = False,
    ) -> None:
        super().__init__()
        self.body = backbone.body
        self.strides = tuple(strides)
        self.out_channels = out_channels
        taps = _find_taps(backbone, in_channels, self.strides)
        self.tap_paths = tuple(path for path, _ in taps)
        self.fpn = FeaturePyramidNetwork(
            [channels for _, channels in taps],
            out_channels,
            extra_blocks=LastLevelMaxPool() if extra_pool else None,
        )

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        paths = [path for path in self.tap_paths if path]
        maps, top = stage_maps(self.body, paths, x)
        read = dict(zip(paths, maps, strict=True))
        levels = OrderedDict(
            (str(i), read[path] if path else top) for i, path in enumerate(self.tap_paths)
        )
        out: OrderedDict[str, torch.Tensor] = self.fpn(levels)
        return out


def _find_taps(
    backbone: Backbone, in_channels: int, strides: Sequence[int]
) -> list[tuple[str, int]]:
    """(module path, channels) of the last trunk stage at each stride; "" = the trunk output."""
    stages, top = trunk_stages(backbone, in_channels)
    taps: list[tuple[str, int]] = []
    for stride in strides:
        if stride == top.stride:
            taps.append(("", top.channels))
            continue
        found = [stage for stage in stages if stage.stride == stride]
        if not found:
            raise ConfigError(
                f"backbone {backbone.name!r} has no stage at stride {stride}, which objects of "
                "this size need",
                fix="Choose another backbone in the profile's model section, or change "
                "detection.object_size_m so that the pyramid uses strides the backbone has.",
            )
        taps.append((found[-1].path, found[-1].channels))
    return taps


class _TileTransform(GeneralizedRCNNTransform):
    """Normalise and pad to a multiple of 32; never resize (tiles are at model resolution)."""

    def resize(
        self, image: torch.Tensor, target: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        return image, target


class _TileStandardise(_TileTransform):
    """Each tile's bands standardised by the tile's own mean and spread instead of fixed
    statistics: another site's light, season or camera shifts every band, and this takes
    the shift out (``DetectorConfig.tile_norm``)."""

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        flat = image.flatten(1)
        mean = flat.mean(dim=1)[:, None, None]
        std = flat.std(dim=1).clamp(min=0.02)[:, None, None]
        return (image - mean) / std


class Detector(nn.Module):
    """A torchvision detector on a :class:`FeaturePyramid`, for one object class.

    ``forward(images)`` in eval mode gives, per tile, ``{"boxes": (N, 4), "scores": (N,)}``
    (tile pixels, best first); in train mode ``forward(images, boxes)`` gives the
    loss dict. ``images`` is a ``(B, C, H, W)`` batch or a list of ``(C, H, W)`` tiles
    in [0, 1]; ``boxes`` a list of ``(N_i, 4)`` tensors (``N_i`` may be 0).
    """

    # Whether forward takes the tiles' valid masks (``valid=``): fitted blobs do
    # (blob_detector); trained detectors see nodata as the zeros it is read as.
    reads_valid = False
    # Whether it always computes in full precision (``--precision`` does not apply), as a
    # similarity classifier does: fitted blobs run no network, only numpy in fp64.
    fp32_only = False

    def __init__(self, config: DetectorConfig, net: nn.Module) -> None:
        super().__init__()
        self.config = config
        self.net = net
        # torchvision's RetinaNet/FCOS count classes without background, Faster R-CNN with.
        self.label = 1 if config.architecture == "faster_rcnn" else 0

    @property
    def pyramid(self) -> FeaturePyramid:
        """The backbone and its feature pyramid."""
        return cast(FeaturePyramid, self.net.backbone)

    def forward(
        self,
        images: torch.Tensor | Sequence[torch.Tensor],
        boxes: Sequence[torch.Tensor] | None = None,
    ) -> Any:
        tiles = list(images)
        if boxes is None:
            if self.training:
                raise ValueError("training needs target boxes (empty tensors for empty tiles)")
            results = self.net(tiles)
            return [{"boxes": r["boxes"], "scores": r["scores"]} for r in results]
        targets = [
            {
                "boxes": b.to(torch.float32).reshape(-1, 4),
                "labels": torch.full((len(b),), self.label, dtype=torch.int64, device=b.device),
            }
            for b in boxes
        ]
        return self.net(tiles, targets)


# Boxes of different members overlapping at least this much (IoU) are one object.
FUSION_IOU = 0.55


class FusedDetector(Detector):
    """Detectors trained apart (the same configuration, other training) whose boxes are
    fused by weighted box fusion: a box is the score-weighted mean of the members'
    overlapping boxes and its score their mean, so a box that one member of two finds
    alone keeps half its score. Called on images, it fuses each image's boxes (training
    scores whole held-out strips so); screening a scene runs each member over the tiles
    and fuses the merged objects (:func:`geoscreen.vision.detect_infer.detect_scene`).
    The members train one by one (:mod:`geoscreen.vision.detect_train`).
    """

    def __init__(self, config: DetectorConfig, members: Sequence[Detector]) -> None:
        nn.Module.__init__(self)
        self.config = config
        self.members = nn.ModuleList(members)
        self.label = members[0].label

    @property
    def pyramid(self) -> FeaturePyramid:
        return cast(Detector, self.members[0]).pyramid

    def forward(
        self,
        images: torch.Tensor | Sequence[torch.Tensor],
        boxes: Sequence[torch.Tensor] | None = None,
    ) -> Any:
        if boxes is not None or self.training:
            raise ValueError("the members of a fused detector train one by one")
        return fuse_results([member(images) for member in self.members])


def fuse_results(
    per_member: Sequence[Sequence[dict[str, torch.Tensor]]],
) -> list[dict[str, torch.Tensor]]:
    """Each image's boxes from several detectors (one list of per-image results each) as
    one set, by weighted box fusion at :data:`FUSION_IOU`."""
    out = []
    for n in range(len(per_member[0])):
        fused, scores = weighted_box_fusion(
            [r[n]["boxes"].float().cpu().numpy() for r in per_member],
            [r[n]["scores"].float().cpu().numpy() for r in per_member],
            FUSION_IOU,
        )
        out.append(
            {"boxes": torch.from_numpy(fused).float(), "scores": torch.from_numpy(scores).float()}
        )
    return out


def fuse(config: DetectorConfig, members: Sequence[Detector]) -> Detector:
    """One detector of ``members`` (itself when there is one), recorded as ``config``
    with their number."""
    if len(members) == 1:
        return members[0]
    return FusedDetector(replace(config, members=len(members)), members)


def freeze_stages(model: Detector, blocks: int) -> int:
    """Freeze the stem and the first ``blocks`` stages of the trunk (no gradients, no
    weight decay): early layers see generic edges and colours, and skipping their backward
    pass is most of a CPU step at high resolution. Returns the parameters frozen."""
    body = model.pyramid.body
    assert model.config.backbone is not None  # a trained detector has one
    container_path = stage_container(model.config.backbone.name)
    stages = list(body.get_submodule(container_path).children()) if container_path else []
    frozen: list[nn.Parameter] = []
    if container_path and blocks > 0:
        stage_ids = {id(p) for stage in stages for p in stage.parameters()}
        frozen += [p for p in body.parameters() if id(p) not in stage_ids and _early(body, p)]
        for stage in stages[:blocks]:
            frozen += list(stage.parameters())
    elif blocks > 0:  # torchvision trunks: children in order (stem first)
        for child in list(body.children())[: blocks + 1]:
            frozen += list(child.parameters())
    for p in frozen:
        p.requires_grad_(False)
    return sum(p.numel() for p in frozen)


def _early(body: nn.Module, param: nn.Parameter) -> bool:
    """Whether a trunk parameter outside the stage container belongs to its stem."""
    for name, p in body.named_parameters():
        if p is param:
            return "stem" in name or name.startswith("net._bn0")
    return False


def build_detector(config: DetectorConfig) -> Detector:
    """Build the detector ``config`` describes (backbone weights loaded as its spec says;
    a :class:`FusedDetector` of ``config.members`` when there are several)."""
    if config.architecture == BLOBS:
        raise ConfigError(
            "scale-space blobs are fitted on labels, not built",
            fix="Train them with 'geoscreen train' (detection.architecture: blobs).",
        )
    if config.members > 1:
        one = replace(config, members=1)
        return FusedDetector(config, [build_detector(one) for _ in range(config.members)])
    spec = config.backbone
    assert spec is not None  # checked by the config
    backbone = build_backbone(spec)
    frcnn = config.architecture == "faster_rcnn"
    pyramid = FeaturePyramid(
        backbone, spec.in_channels, config.strides, config.fpn_channels, extra_pool=frcnn
    )
    sizes = config.anchor_sizes
    ratios = ((1.0,),) if config.architecture == "fcos" else (ASPECT_RATIOS,)
    anchors = AnchorGenerator(sizes, ratios * len(sizes))
    common: dict[str, Any] = {
        "min_size": config.tile_size,
        "max_size": config.tile_size,
        "image_mean": list(config.mean),
        "image_std": list(config.std),
    }
    channels, n_anchors = config.fpn_channels, anchors.num_anchors_per_location()[0]
    net: nn.Module
    if frcnn:
        net = FasterRCNN(
            pyramid,
            num_classes=None,
            rpn_anchor_generator=anchors,
            box_roi_pool=MultiScaleRoIAlign(["0", "1", "2"], output_size=7, sampling_ratio=2),
            box_head=TwoMLPHead(channels * 7 * 7, 256),
            box_predictor=FastRCNNPredictor(256, 2),
            rpn_pre_nms_top_n_test=1000,
            rpn_post_nms_top_n_test=max(500, config.max_detections),
            rpn_pre_nms_top_n_train=1000,
            rpn_post_nms_top_n_train=1000,
            box_batch_size_per_image=256,
            box_score_thresh=config.score_threshold,
            box_nms_thresh=config.nms_iou,
            box_detections_per_img=config.max_detections,
            **common,
        )
    elif config.architecture == "retinanet":
        norm = partial(nn.GroupNorm, math.gcd(32, channels))
        net = RetinaNet(
            pyramid,
            num_classes=1,
            anchor_generator=anchors,
            head=RetinaNetHead(channels, n_anchors, 1, norm_layer=norm),
            score_thresh=config.score_threshold,
            nms_thresh=config.nms_iou,
            detections_per_img=config.max_detections,
            **common,
        )
    else:
        net = FCOS(
            pyramid,
            num_classes=1,
            anchor_generator=anchors,
            head=FCOSHead(channels, n_anchors, 1),
            score_thresh=config.score_threshold,
            nms_thresh=config.nms_iou,
            detections_per_img=config.max_detections,
            **common,
        )
    net.transform = (_TileStandardise if config.tile_norm else _TileTransform)(**common)
    return Detector(config, net)


# -- model directories -------------------------------------------------------------------
@dataclass(frozen=True)
class LoadedDetector(LoadedModelDir[Detector]):
    """A detector loaded from a model directory, with its card and hash."""

    card: DetectCard


def save_detector(model: Detector, card: DetectCard, out_dir: str | Path, markdown: str) -> str:
    """Write ``model.pt``, ``model.yaml`` and ``MODEL_CARD.md`` atomically; returns the hash.

    The same layout as a classifier's model directory; ``markdown`` may hold the
    placeholder ``{model_sha256}``.
    """

    def render(full: DetectCard) -> str:
        return markdown.replace("{model_sha256}", str(full.model_sha256))

    saved = save_model_dir(model, card, out_dir, render)
    return str(saved.model_sha256)


def load_detector(model_dir: str | Path, device: str | torch.device = "cpu") -> LoadedDetector:
    """Load a model directory written by :func:`save_detector`, checking the recorded hash."""
    path = Path(model_dir)
    not_a_detector = InputError(
        "model.yaml is not the card of a detection model",
        where=str(path / CARD_FILE),
        fix="Use a model trained for a 'task: detect' profile with 'geoscreen train'.",
    )
    card, state = read_model_dir(path, DetectCard, not_a_detector)
    if card.detector.architecture == BLOBS:
        from geoscreen.vision import blob_detector  # it builds on this module

        blobs = blob_detector.blob_detector_from_card(card)
        digest = restore_weights(blobs, state, path, "detector", device)
        blob_detector.check_blob_weights(blobs, card, str(path))
        return LoadedDetector(blobs, card, digest, path)
    model = build_detector(DetectorConfig.from_card(card))
    digest = restore_weights(model, state, path, "detector", device)
    return LoadedDetector(model, card, digest, path)
