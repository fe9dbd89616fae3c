"""Detectors: anchors from object size and resolution, pyramid taps, bands, no resizing,
model directories, and the detection block of profiles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from geoscreen.errors import ConfigError, InputError
from geoscreen.profiles import load_profile
from geoscreen.vision.backbones import BACKBONE_NAMES, BackboneSpec, build_backbone, input_stats
from geoscreen.vision.detector import (
    ARCHITECTURES,
    Detector,
    DetectorConfig,
    anchor_sizes,
    build_detector,
    load_detector,
    object_size_px,
    pyramid_strides,
    save_detector,
)
from geoscreen.vision.modelcard import DetectCard
from geoscreen.vision.weights import EFFICIENTNET_LITE0_REF

CONFIGS = Path(__file__).resolve().parents[2] / "geoscreen" / "configs"
DETECT_PROFILE = CONFIGS / "tree_crowns_detect_neon.yaml"


def config(
    architecture: str = "retinanet",
    spec: BackboneSpec | None = None,
    resolution_m: float = 0.1,
    tile_size: int = 128,
    **changes: Any,
) -> DetectorConfig:
    spec = spec or BackboneSpec("resnet18", 3)
    mean, std = input_stats(spec)
    values: dict[str, Any] = {
        "architecture": architecture,
        "backbone": spec,
        "mean": tuple(mean),
        "std": tuple(std),
        "object_size_m": 4.0,
        "resolution_m": resolution_m,
        "tile_size": tile_size,
        "fpn_channels": 32,
        **changes,
    }
    return DetectorConfig(**values)


# -- anchors ------------------------------------------------------------------------------
def test_anchor_sizes_follow_object_size_in_pixels() -> None:
    assert object_size_px(4.0, 0.1) == pytest.approx(40.0)
    assert object_size_px(4.0, 0.5) == pytest.approx(8.0)
    assert pyramid_strides(40.0) == (8, 16, 32)
    assert pyramid_strides(8.0) == (4, 8, 16)
    retina = anchor_sizes(40.0, "retinanet")
    assert [level[0] for level in retina] == pytest.approx([20.0, 40.0, 80.0])
    assert retina[2][2] == pytest.approx(80.0 * 2 ** (2 / 3))
    assert anchor_sizes(40.0, "faster_rcnn") == ((20.0,), (40.0,), (80.0,), (160.0,))
    assert anchor_sizes(8.0, "faster_rcnn") == ((4.0,), (8.0,), (16.0,), (32.0,))
    assert anchor_sizes(8.0, "fcos") == ((4.0,), (8.0,), (16.0,))
    with pytest.raises(ConfigError, match="unknown detector"):
        anchor_sizes(8.0, "yolo")


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_one_profile_builds_at_01_and_05_m(architecture: str) -> None:
    """The same object size gives anchors scaled to each resolution, and both models run."""
    torch.manual_seed(0)
    for resolution, first in ((0.1, 20.0), (0.5, 4.0)):
        cfg = config(architecture, resolution_m=resolution, tile_size=64)
        detector = build_detector(cfg).eval()
        generator = (
            detector.net.rpn.anchor_generator
            if architecture == "faster_rcnn"
            else (detector.net.anchor_generator)
        )
        expected_first = float(cfg.strides[0]) if architecture == "fcos" else first
        assert generator.sizes[0][0] == pytest.approx(expected_first)
        assert len(generator.sizes) == (4 if architecture == "faster_rcnn" else 3)
        with torch.inference_mode():
            features = detector.pyramid(torch.rand(1, 3, 64, 64))
            out = detector(torch.rand(2, 3, 64, 64))
        sizes = [f.shape[-1] for name, f in features.items() if name != "pool"]
        assert sizes == [64 // s for s in cfg.strides]
        assert len(out) == 2 and set(out[0]) == {"boxes", "scores"}


def test_config_refuses_objects_too_small_or_too_large() -> None:
    with pytest.raises(ConfigError, match="too small to detect"):
        config(resolution_m=2.0)  # 4 m at 2 m per pixel: 2 px
    with pytest.raises(ConfigError, match="do not fit"):
        config(resolution_m=0.01, tile_size=256)  # 400 px objects in 256 px tiles
    with pytest.raises(ConfigError, match="unknown detector"):
        config("yolo")


# -- pyramid over every backbone ----------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", BACKBONE_NAMES)
def test_pyramid_taps_every_backbone_at_strides_8_16_32(name: str) -> None:
    detector = build_detector(config(spec=BackboneSpec(name, 3)))
    pyramid = detector.pyramid
    assert pyramid.tap_paths[-1] == ""  # the stride-32 level is the trunk output itself
    with torch.no_grad():
        features = pyramid.eval()(torch.rand(1, 3, 64, 64))
    assert [tuple(f.shape) for f in features.values()] == [
        (1, 32, 8, 8),
        (1, 32, 4, 4),
        (1, 32, 2, 2),
    ]


def test_efficientnet_lite0_detector_keeps_the_packaged_weights_and_any_bands() -> None:
    roles = ("blue", "green", "red", "nir", None)
    spec = BackboneSpec("efficientnet_lite0", 5, band_roles=roles, weights=EFFICIENTNET_LITE0_REF)
    detector = build_detector(config("faster_rcnn", spec=spec))
    reference = build_backbone(spec).body.state_dict()
    mine = detector.pyramid.body.state_dict()
    assert mine.keys() == reference.keys()
    assert all(torch.equal(mine[k], reference[k]) for k in reference)
    assert mine["net._conv_stem.weight"].shape[1] == 5
    assert detector.pyramid.tap_paths == ("net._blocks.4", "net._blocks.10", "")
    assert detector.net.transform.image_mean == pytest.approx(input_stats(spec)[0])
    detector.eval()
    with torch.inference_mode():
        out = detector(torch.rand(1, 5, 128, 128))
    assert out[0]["boxes"].shape[1] == 4


def test_tiles_are_never_resized() -> None:
    detector = build_detector(config(tile_size=128)).eval()
    transform = detector.net.transform
    for size in (96, 128, 200):  # training chips and edge tiles may differ from the tile size
        image = torch.rand(3, size, size)
        batch, _ = transform([image])
        assert batch.image_sizes == [(size, size)]
        mean = torch.tensor(transform.image_mean)[:, None, None]
        std = torch.tensor(transform.image_std)[:, None, None]
        assert torch.allclose(batch.tensors[0, :, :size, :size], (image - mean) / std)
    with torch.inference_mode():
        out = detector(torch.rand(1, 3, 200, 200))
    boxes = out[0]["boxes"]
    assert boxes.numel() == 0 or (boxes.min() >= 0 and boxes.max() <= 200)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_training_step_gives_finite_losses_with_and_without_objects(architecture: str) -> None:
    torch.manual_seed(0)
    detector = build_detector(config(architecture, tile_size=64)).train()
    boxes = [torch.tensor([[10.0, 12.0, 50.0, 48.0]]), torch.zeros(0, 4)]
    losses = detector(torch.rand(2, 3, 64, 64), boxes)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    with pytest.raises(ValueError, match="target boxes"):
        detector(torch.rand(1, 3, 64, 64))


# -- model directories --------------------------------------------------------------------
def card_for(cfg: DetectorConfig) -> DetectCard:
    return DetectCard.model_validate({
        "profile": {"name": "test", "version": "1"},
        "detector": cfg.to_card(),
        "backbone": {
            "name": cfg.backbone.name,
            "in_channels": cfg.backbone.in_channels,
            "band_roles": list(cfg.backbone.band_roles or []),
        },
        "preprocess": {},
        "tiling": {},
    })  # fmt: skip


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    anchors = (10.0, 12.0, 15.0, 19.0, 24.0, 30.0, 38.0, 48.0, 60.0)
    cfg = config("fcos", score_threshold=0.0, anchor_px=anchors, tile_norm=True)
    detector = build_detector(cfg).eval()
    digest = save_detector(detector, card_for(cfg), tmp_path, "# card `{model_sha256}`\n")
    assert (tmp_path / "MODEL_CARD.md").read_text() == f"# card `{digest}`\n"
    loaded = load_detector(tmp_path)
    assert loaded.sha256 == digest and isinstance(loaded.model, Detector)
    assert loaded.model.config == cfg
    x = torch.rand(1, 3, 128, 128)
    with torch.inference_mode():
        a, b = detector(x)[0], loaded.model(x)[0]
    assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["scores"], b["scores"])
    (tmp_path / "model.yaml").write_text(yaml.safe_dump({"task": "classify"}))
    with pytest.raises(InputError, match="not the card of a detection model"):
        load_detector(tmp_path)
    with pytest.raises(InputError, match="not a geoscreen model directory"):
        load_detector(tmp_path / "missing")


def test_tile_standardisation_takes_out_a_band_shift() -> None:
    """With ``tile_norm`` a tile and the same tile under other light detect alike."""
    torch.manual_seed(0)
    detector = build_detector(config(tile_norm=True, score_threshold=0.0)).eval()
    x = torch.rand(1, 3, 128, 128) * 0.5
    shifted = x * torch.tensor([1.3, 0.9, 1.1])[:, None, None] + 0.1
    with torch.inference_mode():
        a, b = detector(x)[0], detector(shifted)[0]
    assert len(a["scores"]) > 0
    torch.testing.assert_close(a["scores"], b["scores"], atol=1e-4, rtol=1e-4)


# -- profiles -----------------------------------------------------------------------------
def test_detection_profile_loads_and_round_trips(tmp_path: Path) -> None:
    profile = load_profile(DETECT_PROFILE)
    assert profile.model.task == "detect" and profile.detection is not None
    assert profile.detection.architecture == "fcos"
    assert profile.detection.object_size_m == 4.0
    assert profile.model.backbone == "efficientnet_lite0"
    again_path = tmp_path / "again.yaml"
    again_path.write_text(profile.to_yaml(), encoding="utf-8")
    assert load_profile(again_path).fingerprint() == profile.fingerprint()


def _profile_error(tmp_path: Path, **changes: Any) -> str:
    data = yaml.safe_load(DETECT_PROFILE.read_text(encoding="utf-8"))
    for key, value in changes.items():
        if value is None:
            data.pop(key)
        elif isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_profile(path)
    return info.value.message


def test_detection_block_is_checked(tmp_path: Path) -> None:
    assert "has no detection block" in _profile_error(tmp_path, detection=None)
    message = _profile_error(tmp_path, model={"task": "classify"})
    assert "a detection block needs model.task: detect" in message
    message = _profile_error(tmp_path, detection={"object_size": 4})
    assert "detection.object_size: unknown field (allowed: architecture, object_size_m" in message
    assert "detection.architecture" in _profile_error(tmp_path, detection={"architecture": "yolo"})
    assert "detection.object_size_m" in _profile_error(tmp_path, detection={"object_size_m": 0})
    assert "detection.fpn_channels" in _profile_error(tmp_path, detection={"fpn_channels": 100})
