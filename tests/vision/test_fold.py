"""Inference copies with batch normalisation folded in: the same outputs, fewer passes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from geoscreen.vision.backbones import BackboneSpec, build_backbone
from geoscreen.vision.fold import fold_batchnorm, folded_for_inference


def _randomise_batchnorm(model: nn.Module, seed: int = 0) -> None:
    """Statistics and affine parameters far from the identity (a fresh BatchNorm is one)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)  # type: ignore[union-attr]
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)  # type: ignore[union-attr]
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)


def test_fold_batchnorm_equals_conv_then_batchnorm() -> None:
    torch.manual_seed(0)
    for bias in (False, True):
        conv = nn.Conv2d(3, 5, 3, padding=1, bias=bias)
        bn = nn.BatchNorm2d(5).eval()
        _randomise_batchnorm(bn)
        x = torch.rand(2, 3, 9, 9)
        expected = bn(conv(x))
        fold_batchnorm(conv, bn)
        torch.testing.assert_close(conv(x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "batchnorms_left"),
    [("efficientnet_lite0", 0), ("mobilenet_v3_small", 0), ("resnet18", 16)],
)
def test_folded_backbone_gives_the_same_features(name: str, batchnorms_left: int) -> None:
    """EfficientNet-Lite's named pairs and every conv -> BN in a Sequential fold (resnet's
    blocks name theirs differently and keep them: folding them did not run faster); the
    original model is untouched."""
    torch.manual_seed(0)
    model = build_backbone(BackboneSpec(name, 4, band_roles=(None,) * 4)).eval()
    _randomise_batchnorm(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = folded_for_inference(model)
    x = torch.rand(2, 4, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-5)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules()) == batchnorms_left
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert not folded.training


def test_lite_stride1_convolutions_pad_by_themselves() -> None:
    """No F.pad copy before EfficientNet-Lite's stride-1 convolutions; strided ones keep
    their asymmetric "same" padding."""
    model = build_backbone(BackboneSpec("efficientnet_lite0", 3, band_roles=(None,) * 3))
    folded = folded_for_inference(model)
    kinds = [type(m).__name__ for m in folded.modules() if isinstance(m, nn.Conv2d)]
    assert "Conv2d" in kinds
    strided = [
        m for m in folded.modules()
        if type(m).__name__ == "Conv2dDynamicSamePadding" and tuple(m.stride) == (1, 1)  # type: ignore[arg-type]
    ]  # fmt: skip
    assert strided == []
    assert any(type(m).__name__ == "Conv2dDynamicSamePadding" for m in folded.modules())
