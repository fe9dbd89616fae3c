"""int8 screening: the traced trunk returns the maps the hooks read, int8 scores follow
fp32's on real imagery, the fp32 check decides the tiles near the threshold, and int8
is refused clearly where it does not apply."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from geoscreen.errors import ConfigError
from geoscreen.imagery.dataset import TileDataset, collate
from geoscreen.imagery.scene import Scene, open_scene
from geoscreen.profiles import Profile, load_profile
from geoscreen.vision import quantize
from geoscreen.vision.backbones import BackboneSpec, build_backbone, input_stats
from geoscreen.vision.classifier import TileClassifier
from geoscreen.vision.infer import ScreenOptions, calibration_tiles, prepare_scene, screen_scene
from geoscreen.vision.quantize import (
    INT8_BACKBONES,
    check_int8,
    int8_model,
    int8_refusal,
    trunk_of,
)
from geoscreen.vision.runtime import pick_precision
from geoscreen.vision.scorer import DeepFeatures, FeatureScorer
from geoscreen.vision.stages import StageTaps, stage_maps, tap_stages, trunk_stages
from geoscreen.vision.tabular import LinearHead, PlattCalibrator
from geoscreen.vision.testing import assert_checked_like_fp32
from geoscreen.vision.tilefeatures import SpectralContext

PROFILE = Path(__file__).resolve().parents[2] / "geoscreen" / "configs" / "tree_crowns_neon.yaml"
CPU = torch.device("cpu")


def resnet_profile() -> Profile:
    """The NEON tree-crown profile (64 px tiles at 0.1 m) on an untrained resnet18."""
    profile = load_profile(PROFILE)
    model = profile.model.model_copy(
        update={"backbone": "resnet18", "weights": None, "weights_sha256": None}
    )
    return profile.model_copy(update={"model": model})


def scene_tiles(profile: Profile, scene: Scene) -> torch.Tensor:
    """Every tile of ``scene`` on ``profile``'s grid, preprocessed as screening feeds them."""
    _, grid, preprocessor = prepare_scene(profile, scene, "cpu")
    dataset = TileDataset(grid, preprocessor)
    try:
        image: torch.Tensor = collate(dataset.__getitems__(list(range(len(dataset)))))["image"]
    finally:
        dataset.close()
    return image


def resnet_scorer(stages: bool, tiles: torch.Tensor) -> FeatureScorer:
    """Deep features of an untrained resnet18 (every stage pooled when ``stages``) and a
    linear head with fixed random weights, its features standardised on ``tiles``: scores
    spread over (0, 1) as a fitted head's do."""
    torch.manual_seed(0)
    spec = BackboneSpec("resnet18", 3, band_roles=("red", "green", "blue"))
    mean, std = input_stats(spec)
    deep = DeepFeatures(build_backbone(spec), mean, std, stages=stages).eval()
    head = LinearHead(deep.out_features)
    with torch.no_grad():
        features = deep(tiles)
        head.mean.copy_(features.mean(0))
        head.scale.copy_(features.std(0) + 1e-6)
        head.coef.copy_(torch.randn(deep.out_features) / deep.out_features**0.5)
    return FeatureScorer(head, PlattCalibrator(), deep=deep).eval()


def test_traced_trunk_returns_the_maps_the_hooks_read() -> None:
    backbone = build_backbone(BackboneSpec("resnet18", 3)).eval()
    paths = [stage.path for stage in trunk_stages(backbone, 3)[0]]
    assert paths == ["relu", "layer1", "layer2", "layer3", "layer4"]
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        hooked, top = stage_maps(backbone.body, paths, x)
        taps = StageTaps(tap_stages(backbone.body, paths), paths)
        traced, traced_top = stage_maps(taps, paths, x)
        torch.testing.assert_close(taps(x), top, rtol=0, atol=0)
    torch.testing.assert_close(traced_top, top, rtol=0, atol=0)
    for a, b in zip(traced, hooked, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="returns the maps of"):
        stage_maps(taps, paths[:1], x)
    with pytest.raises(ValueError, match="no operation"):
        tap_stages(backbone.body, ["layer9"])


@pytest.mark.parametrize("stages", [False, True])
def test_int8_scores_follow_fp32_on_real_imagery(osbs_path: Path, stages: bool) -> None:
    """NEON OSBS_029 (64 tiles of 64 px): int8 moves scores little and keeps their order;
    the model handed in is left in fp32."""
    profile = resnet_profile()
    scene = open_scene(osbs_path, sensor="rgb")
    model = resnet_scorer(stages, scene_tiles(profile, scene))

    def screen(precision: str) -> np.ndarray:
        opts = ScreenOptions(device="cpu", num_workers=0, precision=precision, check_margin=0.0)
        return screen_scene(model, profile, scene, opts).scores.astype(np.float64)

    fp32, int8 = screen("fp32"), screen("int8")
    assert fp32.std() > 0.1  # scores spread: the comparison means something
    assert np.abs(int8 - fp32).max() < 0.1
    assert not np.array_equal(int8, fp32)  # int8 arithmetic did run
    ranks = np.argsort(np.argsort(fp32)), np.argsort(np.argsort(int8))
    assert np.corrcoef(*ranks)[0, 1] > 0.95
    assert trunk_of(model) is not None
    assert not any(p.dtype == torch.qint8 for p in model.parameters())
    np.testing.assert_array_equal(screen("fp32"), fp32)


def test_checked_int8_puts_every_tile_on_the_side_fp32_puts_it(osbs_path: Path) -> None:
    """Threshold at the median fp32 score: tiles scoring within the margin in int8 get
    fp32's score, the others keep int8's, and the tiles at or above the threshold are
    fp32's."""
    profile = resnet_profile()
    scene = open_scene(osbs_path, sensor="rgb")
    model = resnet_scorer(True, scene_tiles(profile, scene))

    def screen(precision: str, threshold: float, margin: float) -> np.ndarray:
        opts = ScreenOptions(device="cpu", num_workers=0, precision=precision,
                             threshold=threshold, check_margin=margin, batch_size=16)  # fmt: skip
        return screen_scene(model, profile, scene, opts).scores.astype(np.float64)

    fp32 = screen("fp32", 0.5, 0.0)
    threshold = float(np.median(fp32))
    plain = screen("int8", threshold, 0.0)
    margin = 2 * float(np.abs(plain - fp32).max())  # the check's premise, as measured
    checked = screen("int8", threshold, margin)
    assert_checked_like_fp32(fp32, plain, checked, threshold, margin)


def test_calibration_tiles_spread_over_the_grid(osbs_path: Path) -> None:
    """The first and last tiles and evenly spaced ones between, as screening reads them."""
    profile = resnet_profile()
    scene = open_scene(osbs_path, sensor="rgb")
    every = scene_tiles(profile, scene)
    _, grid, preprocessor = prepare_scene(profile, scene, "cpu")
    dataset = TileDataset(grid, preprocessor)
    try:
        picked = calibration_tiles(dataset, 4)
        assert len(calibration_tiles(dataset, 1000)) == len(every) == 64
    finally:
        dataset.close()
    torch.testing.assert_close(picked, every[[0, 21, 42, 63]], rtol=0, atol=0)


def test_int8_model_quantizes_the_trunk_only() -> None:
    torch.manual_seed(0)
    spec = BackboneSpec("resnet18", 3)
    mean, std = input_stats(spec)
    model = TileClassifier(build_backbone(spec), mean, std).eval()
    quantized = int8_model(model, torch.rand(8, 3, 64, 64))
    trunk = trunk_of(quantized)
    assert trunk is not None and isinstance(trunk.body, StageTaps)
    assert any("Quantized" in type(m).__name__ or "quantized" in type(m).__module__
               for m in trunk.body.modules())  # fmt: skip
    assert quantized.head.weight.dtype == torch.float32
    x = torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        a, b = model.features(x), quantized.features(x)
    assert torch.nn.functional.cosine_similarity(a, b).min() > 0.95


def test_int8_is_refused_clearly_where_it_does_not_apply() -> None:
    spec = BackboneSpec("mobilenet_v3_small", 3)
    mean, std = input_stats(spec)
    mobile = TileClassifier(build_backbone(spec), mean, std)
    why = int8_refusal(mobile, CPU)
    assert why is not None and "mobilenet_v3_small" in why
    assert all(name in why for name in INT8_BACKBONES)
    with pytest.raises(ConfigError, match="int8"):
        check_int8(mobile, CPU)
    resnet = resnet_scorer(False, torch.rand(4, 3, 64, 64))
    assert int8_refusal(resnet, CPU) is None
    gpu_why = int8_refusal(resnet, torch.device("cuda"))
    assert gpu_why is not None and "CPU only" in gpu_why
    spectral = SpectralContext(3, 64, relative=False)
    head = LinearHead(spectral(torch.rand(1, 3, 64, 64)).shape[1])
    no_trunk_why = int8_refusal(FeatureScorer(head, PlattCalibrator(), spectral=spectral), CPU)
    assert no_trunk_why is not None and "no backbone" in no_trunk_why
    with pytest.raises(ConfigError, match="detectors run in fp32 or bf16"):
        pick_precision("int8", CPU)  # what detection asks


@pytest.mark.parametrize("vnni", [True, False])
def test_activations_use_all_8_bits_only_with_vnni(
    monkeypatch: pytest.MonkeyPatch, vnni: bool
) -> None:
    """Without VNNI the x86 kernels can overflow on full-range activations: 7 bits."""
    monkeypatch.setattr(quantize, "cpu_has_fast_int8", lambda: vnni)
    mapping = quantize.qconfig_mapping()
    assert mapping.global_qconfig is not None
    observer = mapping.global_qconfig.activation()
    assert (observer.quant_min, observer.quant_max) == (0, 255 if vnni else 127)
    assert type(observer).__name__ == "MinMaxObserver"
    # Ops with fixed output ranges (sigmoid) keep their own observers.
    fixed = mapping.object_type_qconfigs[torch.nn.Sigmoid]
    assert fixed is not None and type(fixed.activation()).__name__ == "FixedQParamsObserver"
