"""``--precision``: what auto picks on which hardware, and bf16 scores next to fp32 ones."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from geoscreen.cli.options import PRECISION_CHOICES
from geoscreen.errors import ConfigError
from geoscreen.imagery.scene import Scene, open_scene
from geoscreen.profiles import Profile, load_profile
from geoscreen.vision import runtime
from geoscreen.vision.backbones import build_backbone, input_stats
from geoscreen.vision.classifier import TileClassifier
from geoscreen.vision.infer import ScreenOptions, screen_scene
from geoscreen.vision.inputs import backbone_spec
from geoscreen.vision.runtime import (
    BF16_CHECK_MARGIN,
    BF16_CPU_FLAGS,
    PRECISIONS,
    autocast,
    cpu_flags,
    cpu_has_fast_bf16,
    pick_precision,
)
from geoscreen.vision.testing import assert_checked_like_fp32

PROFILE = Path(__file__).resolve().parents[2] / "geoscreen" / "configs" / "tree_crowns_neon.yaml"
CPU = torch.device("cpu")
CUDA = torch.device("cuda")  # only named: nothing runs on it


def pretrained_tile_model(profile: Profile, scene: Scene) -> TileClassifier:
    """The profile's pretrained backbone under an untrained head: real features, and
    scores spread around 0.5."""
    spec = backbone_spec(profile, scene)
    mean, std = input_stats(spec)
    return TileClassifier(build_backbone(spec), mean, std).eval()


def test_cli_offers_exactly_the_runtime_precisions() -> None:
    assert PRECISION_CHOICES == PRECISIONS


@pytest.mark.parametrize(
    ("name", "device", "fast", "checked", "expected"),
    [
        ("auto", CPU, False, True, "fp32"),  # bf16 emulated: slower
        ("auto", CPU, True, True, "bf16"),  # bf16 hardware, scores near the threshold checked
        ("auto", CPU, True, False, "fp32"),  # nothing checks it (detection)
        ("auto", CUDA, False, True, "bf16"),
        ("auto", CUDA, False, False, "fp32"),
        ("fp32", CPU, True, True, "fp32"),
        ("fp32", CUDA, True, True, "fp32"),
        ("bf16", CPU, True, False, "bf16"),
        ("bf16", CUDA, False, False, "bf16"),
    ],
)
def test_pick_precision(
    name: str, device: torch.device, fast: bool, checked: bool, expected: str
) -> None:
    assert pick_precision(name, device, fast_bf16=fast, checked=checked) == expected


def test_bf16_without_hardware_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    runtime._warn_slow_bf16.cache_clear()
    with caplog.at_level(logging.WARNING, logger="geoscreen.vision.runtime"):
        assert pick_precision("bf16", CPU, fast_bf16=False) == "bf16"
    assert "slower than fp32" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="geoscreen.vision.runtime"):
        assert pick_precision("bf16", CPU, fast_bf16=False) == "bf16"  # said already
    assert caplog.text == ""
    with caplog.at_level(logging.WARNING, logger="geoscreen.vision.runtime"):
        pick_precision("bf16", CPU, fast_bf16=True)
    assert caplog.text == ""


def test_unknown_precision_is_a_user_error() -> None:
    with pytest.raises(ConfigError, match="unknown precision 'fp16'") as err:
        pick_precision("fp16", CPU)
    assert "fp32, bf16, int8 or auto" in str(err.value.fix)


def test_auto_follows_this_cpus_bf16_hardware() -> None:
    """Checked, ``auto`` is bf16 exactly where this CPU computes bf16 in hardware;
    unchecked it is fp32 on any CPU."""
    flags = cpu_flags()
    if flags & BF16_CPU_FLAGS:
        assert cpu_has_fast_bf16()
    fast = cpu_has_fast_bf16()
    assert pick_precision("auto", CPU, checked=True) == ("bf16" if fast else "fp32")
    for hardware in (None, True, False):
        assert pick_precision("auto", CPU, fast_bf16=hardware) == "fp32"
    with autocast("auto", CPU):
        assert not torch.is_autocast_enabled("cpu")
    with autocast("auto", CPU, checked=True):
        assert torch.is_autocast_enabled("cpu") == fast


def test_cpu_flags_reads_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nmodel name\t: x\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile\n\n"
        "processor\t: 1\nflags\t\t: fpu\n",
        encoding="utf-8",
    )
    assert cpu_flags(str(info)) == {"fpu", "avx2", "avx512f", "amx_bf16", "amx_tile"}
    assert cpu_flags(str(tmp_path / "missing")) == frozenset()


def test_autocast_runs_convolutions_in_the_picked_precision() -> None:
    conv = torch.nn.Conv2d(3, 4, 3).eval()
    x = torch.rand(1, 3, 8, 8)
    with torch.inference_mode():
        with autocast("bf16", CPU):
            assert conv(x).dtype == torch.bfloat16
        with autocast("fp32", CPU):
            assert conv(x).dtype == torch.float32


def test_bf16_scores_and_embeddings_match_fp32_on_real_imagery(osbs_path: Path) -> None:
    """The pretrained backbone on NEON OSBS_029: bf16 ranks tiles as fp32 does."""
    profile = load_profile(PROFILE)
    scene = open_scene(osbs_path, sensor=profile.imagery.sensor)
    model = pretrained_tile_model(profile, scene)
    runs = {
        p: screen_scene(
            model,
            profile,
            scene,
            ScreenOptions(device="cpu", num_workers=0, embeddings=True, precision=p),
        )
        for p in ("fp32", "bf16")
    }
    fp32, bf16 = runs["fp32"], runs["bf16"]
    assert len(fp32.grid) == len(bf16.grid) > 20
    np.testing.assert_array_equal(fp32.valid_fraction, bf16.valid_fraction)
    assert np.abs(fp32.scores - bf16.scores).max() < 0.05
    assert fp32.embeddings is not None and bf16.embeddings is not None
    a = fp32.embeddings.astype(np.float64)
    b = bf16.embeddings.astype(np.float64)
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cosine.min() > 0.98
    # The tiles' order by score barely moves (Spearman rank correlation).
    ra, rb = np.argsort(np.argsort(fp32.scores)), np.argsort(np.argsort(bf16.scores))
    assert np.corrcoef(ra, rb)[0, 1] > 0.95


def test_checked_bf16_puts_every_tile_on_the_side_fp32_puts_it(osbs_path: Path) -> None:
    """NEON OSBS_029, the threshold at the median fp32 score (the most tiles near it):
    tiles scoring within the margin in bf16 get fp32's score, the others keep bf16's,
    and the tiles at or above the threshold are fp32's."""
    profile = load_profile(PROFILE)
    scene = open_scene(osbs_path, sensor=profile.imagery.sensor)
    model = pretrained_tile_model(profile, scene)

    def screen(precision: str, threshold: float, margin: float) -> np.ndarray:
        opts = ScreenOptions(device="cpu", num_workers=0, precision=precision,
                             threshold=threshold, check_margin=margin, batch_size=16)  # fmt: skip
        return screen_scene(model, profile, scene, opts).scores.astype(np.float64)

    fp32 = screen("fp32", 0.5, BF16_CHECK_MARGIN)
    threshold = float(np.median(fp32))
    plain = screen("bf16", threshold, 0.0)  # no check: bf16 throughout
    checked = screen("bf16", threshold, BF16_CHECK_MARGIN)
    assert_checked_like_fp32(fp32, plain, checked, threshold, BF16_CHECK_MARGIN)
    assert np.abs(plain - fp32).max() < BF16_CHECK_MARGIN / 2  # the margin's premise
