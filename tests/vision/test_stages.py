"""Trunk stages: found per architecture, read in one pass, pooled by the deep learners."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

from geoscreen.vision.backbones import BackboneSpec, build_backbone
from geoscreen.vision.scorer import DeepFeatures
from geoscreen.vision.stages import stage_maps, trunk_stages


@pytest.mark.parametrize(
    ("name", "channels", "top"),
    [
        ("resnet18", [64, 64, 128, 256, 512], 512),
        ("efficientnet_lite0", [16, 24, 40, 112, 320], 1280),
    ],
)
def test_trunk_stages_end_each_stride(name: str, channels: list[int], top: int) -> None:
    stages, out = trunk_stages(build_backbone(BackboneSpec(name, 4)), 4)
    assert [s.stride for s in stages] == [2, 4, 8, 16, 32]
    assert [s.channels for s in stages] == channels
    assert (out.path, out.channels, out.stride) == ("", top, 32)
    assert all(s.path for s in stages)


def test_stage_maps_reads_the_stage_outputs_and_leaves_no_hook() -> None:
    torch.manual_seed(0)
    backbone = build_backbone(BackboneSpec("resnet18", 3)).eval()
    stages, _ = trunk_stages(backbone, 3)
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        maps, top = stage_maps(backbone.body, [s.path for s in stages], x)
        body = backbone.body
        torch.testing.assert_close(maps[0], body.relu(body.bn1(body.conv1(x))))
        torch.testing.assert_close(maps[-1], top)  # resnet's last stage is the output
        torch.testing.assert_close(top, body(x))
    assert [m.shape[1] for m in maps] == [s.channels for s in stages]
    assert not any(m._forward_hooks for m in backbone.modules())


def test_deep_features_with_stages_pool_every_stage_then_the_last_layer() -> None:
    """What the ``deep`` learners fit on (``TrainOptions.deep_stages``): the stages'
    pooled maps, then the last layer's features exactly as without stages."""
    torch.manual_seed(0)
    backbone = build_backbone(BackboneSpec("efficientnet_lite0", 3)).eval()
    plain = DeepFeatures(backbone, [0.5] * 3, [0.25] * 3)
    staged = DeepFeatures(backbone, [0.5] * 3, [0.25] * 3, stages=True).eval()
    assert staged.stage_channels == 16 + 24 + 40 + 112 + 320
    assert staged.out_features == staged.stage_channels + 1280 == 1792
    x = torch.rand(3, 3, 40, 40)  # below DEEP_MIN_SIZE: enlarged as without stages
    with torch.inference_mode():
        both = staged(x)
        torch.testing.assert_close(both[:, staged.stage_channels :], plain.eval()(x))
        first = backbone.body.get_submodule(staged.stage_paths[0])
        seen: list[torch.Tensor] = []
        handle = first.register_forward_hook(lambda _m, _i, out: seen.append(out))
        plain(x)
        handle.remove()
        torch.testing.assert_close(both[:, :16], seen[0].mean(dim=(2, 3)))
    assert both.shape == (3, 1792)
    eight = staged.with_views(8)
    assert eight.stages and eight.stage_paths == staged.stage_paths
    assert eight.backbone is backbone
    # Hooks live only for one call: the module copies and pickles like any other.
    for clone in (copy.deepcopy(staged), pickle.loads(pickle.dumps(staged))):
        with torch.inference_mode():
            torch.testing.assert_close(clone(x), both)
