"""Inference copies of backbones: batch normalisation folded into the convolutions.

In eval mode a BatchNorm right after a convolution is a per-channel scale and shift,
which the convolution's weights and bias can carry: one pass over the activations
fewer per layer. EfficientNet-Lite (``efficientnet-lite-pytorch``) also pads the input
of every convolution with ``F.pad`` ("same" padding computed per call), a copy of the
activations; for a stride-1 convolution with an odd kernel that padding is symmetric,
and the convolution's own zero padding gives the same result without the copy.

Only inference uses these copies (:func:`geoscreen.vision.infer.model_for_inference`,
detection alike); training keeps the modules as they are. The outputs equal the
original's up to float rounding (``tests/vision/test_fold.py``).
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn

# Convolution -> BatchNorm pairs that a module's forward applies one right after the
# other, by module class (efficientnet-lite-pytorch names them; nn.Sequential is by order).
_PAIRS: dict[str, tuple[tuple[str, str], ...]] = {
    "MBConvBlock": (
        ("_expand_conv", "_bn0"),
        ("_depthwise_conv", "_bn1"),
        ("_project_conv", "_bn2"),
    ),
    "EfficientNet": (("_conv_stem", "_bn0"), ("_conv_head", "_bn1")),
}
_LITE_PACKAGE = "efficientnet_lite_pytorch"


def folded_for_inference(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every BatchNorm that directly follows a
    convolution folded into it, and EfficientNet-Lite's stride-1 "same" padding done by
    the convolution; ``model`` itself is left as it is."""
    out = copy.deepcopy(model).eval()
    for module in list(out.modules()):
        if isinstance(module, nn.Sequential):
            _fold_sequential(module)
        elif type(module).__module__.startswith(_LITE_PACKAGE):
            for conv_name, bn_name in _PAIRS.get(type(module).__name__, ()):
                conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
                if _foldable(conv, bn):
                    fold_batchnorm(conv, bn)  # type: ignore[arg-type]
                    setattr(module, bn_name, nn.Identity())
        for name, child in list(module.named_children()):
            plain = _plain_padding(child)
            if plain is not None:
                setattr(module, name, plain)
    return out


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Make ``conv`` compute ``bn(conv(x))`` (``bn`` in eval mode), in place."""
    with torch.no_grad():
        var = bn.running_var
        mean = bn.running_mean
        assert var is not None and mean is not None
        scale = torch.rsqrt(var + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight
        shift = -mean * scale
        if bn.bias is not None:
            shift = shift + bn.bias
        bias = conv.bias if conv.bias is not None else torch.zeros_like(mean)
        conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
        conv.bias = nn.Parameter(bias * scale + shift, requires_grad=False)


def _foldable(conv: nn.Module | None, bn: nn.Module | None) -> bool:
    return (
        isinstance(conv, nn.Conv2d)
        and isinstance(bn, nn.BatchNorm2d)
        and bn.track_running_stats
        and bn.running_mean is not None
        and bn.num_features == conv.out_channels
    )


def _fold_sequential(seq: nn.Sequential) -> None:
    names = list(seq._modules)
    for first, second in itertools.pairwise(names):
        conv, bn = seq._modules[first], seq._modules[second]
        if _foldable(conv, bn):
            fold_batchnorm(conv, bn)  # type: ignore[arg-type]
            seq._modules[second] = nn.Identity()


def _plain_padding(conv: nn.Module) -> nn.Conv2d | None:
    """An ``nn.Conv2d`` padding by itself in place of EfficientNet-Lite's stride-1 dynamic
    "same"-padding convolution with an odd kernel (None for any other module)."""
    if type(conv).__name__ != "Conv2dDynamicSamePadding" or not isinstance(conv, nn.Conv2d):
        return None
    kh, kw = conv.kernel_size
    if tuple(conv.stride) != (1, 1) or tuple(conv.dilation) != (1, 1) or kh % 2 == 0 or kw % 2 == 0:
        return None
    plain = nn.Conv2d(conv.in_channels, conv.out_channels, (kh, kw), padding=(kh // 2, kw // 2),
                      groups=conv.groups, bias=conv.bias is not None)  # fmt: skip
    plain.weight = conv.weight
    plain.bias = conv.bias
    return plain
