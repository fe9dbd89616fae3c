"""int8 screening on a CPU: the backbone trunk quantized after training, for ResNets.

A ResNet trunk in int8 (per-channel weights, activations scaled from the scene being
screened) ran resnet18 3.4-3.8x faster than fp32 and 1.9-2.0x faster than bf16 on a CPU
with VNNI integer dot products (AVX512-VNNI; model only), 2.6-2.7x and 1.5x end to end
(``benchmarks/area_rate.py``, 256 px tiles).
It is measured worth it for ResNets only: EfficientNet-Lite0's depthwise convolutions
ran slower in int8 than in fp32 here, and its features moved far more.

How (PyTorch's FX graph-mode post-training quantization on the ``x86`` engine): the
trunk is traced into one graph (:func:`~geoscreen.vision.stages.tap_stages`,
which also returns the stage maps the deep-feature learners pool), observers are run over
a spread sample of the scene's own tiles (:data:`CALIBRATION_TILES`), then the graph is
converted. Weights per output channel, activations per tensor from their observed
minimum and maximum (:func:`qconfig_mapping`). Everything around the trunk (input
normalisation, enlarging small tiles, pooling, the head, calibration) stays in fp32.
Screening checks int8 as it checks bf16: tiles scoring within :data:`INT8_CHECK_MARGIN`
of the threshold in force are scored again by the fp32 model
(:func:`geoscreen.vision.infer.fp32_near`).
"""

from __future__ import annotations

import copy
import warnings
from functools import cache
from typing import TYPE_CHECKING

import torch
from torch import nn

from geoscreen.errors import ConfigError
from geoscreen.vision.backbones import Backbone
from geoscreen.vision.classifier import TileClassifier, TileModel
from geoscreen.vision.runtime import cpu_flags
from geoscreen.vision.scorer import FeatureScorer
from geoscreen.vision.stages import StageTaps, tap_stages

if TYPE_CHECKING:
    from torch.ao.quantization import QConfigMapping

INT8_BACKBONES = frozenset({"resnet18", "resnet34", "resnet50"})
INT8_CPU_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
# Tiles the activation ranges are estimated from, spread over the scene: 1.5 s with
# the copy and conversion for resnet18 at 256 px (32 tiles: 2.4 s), scores as close to
# fp32's as with 32 on the NEON tiles (a scratch comparison: mean change 0.017-0.024).
CALIBRATION_TILES = 16
# Scores this close to the threshold in force are computed again in fp32 when screening
# in int8: 2.5x the largest int8 score change on the real NEON cases (0.060; 0.083 with
# the engine's default observers; benchmarks/precision.py classify --low int8 --backbone
# resnet18).
INT8_CHECK_MARGIN = 0.15
ENGINE = "x86"


def trunk_of(model: nn.Module) -> Backbone | None:
    """The CNN backbone a tile model runs, if any."""
    if isinstance(model, TileClassifier):
        return model.backbone
    if isinstance(model, FeatureScorer) and model.deep is not None:
        return model.deep.backbone
    return None


@cache
def cpu_has_fast_int8() -> bool:
    """Whether this CPU has VNNI integer dot products (int8 is slower without them)."""
    return bool(cpu_flags() & INT8_CPU_FLAGS)


def int8_refusal(model: nn.Module, device: torch.device) -> str | None:
    """Why ``model`` cannot screen in int8 on ``device`` (None: it can)."""
    if device.type != "cpu":
        return "int8 runs on a CPU only (on a GPU use bf16)"
    if ENGINE not in torch.backends.quantized.supported_engines:
        return f"this PyTorch build has no {ENGINE!r} quantized engine"
    trunk = trunk_of(model)
    if trunk is None:
        return "this model runs no backbone (int8 would not speed it up)"
    if trunk.name not in INT8_BACKBONES:
        return (
            f"int8 is measured worth it for {', '.join(sorted(INT8_BACKBONES))} only, "
            f"not {trunk.name} (slower and less exact there)"
        )
    return None


def check_int8(model: nn.Module, device: torch.device) -> None:
    """Raise a clear ConfigError when ``model`` cannot screen in int8 on ``device``."""
    why = int8_refusal(model, device)
    if why is not None:
        raise ConfigError(f"--precision int8: {why}", fix="Use --precision auto, fp32 or bf16.")


def int8_model(model: TileModel, calibration: torch.Tensor) -> TileModel:
    """A copy of ``model`` (eval mode, on the CPU) whose trunk runs in int8, its
    activation ranges estimated from ``calibration`` (preprocessed tiles ``(N, C, H,
    W)`` as screening feeds the model); ``model`` is left as it is."""
    check_int8(model, torch.device("cpu"))
    quantized = copy.deepcopy(model).eval()
    trunk = trunk_of(quantized)
    assert trunk is not None
    paths: tuple[str, ...] = ()
    if isinstance(quantized, FeatureScorer) and quantized.deep is not None:
        paths = quantized.deep.stage_paths if quantized.deep.stages else ()
    example = _trunk_input(quantized, trunk, calibration[:1])
    graph = tap_stages(trunk.body, paths)
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    # The engine the converted graph's kernels run on (already the default on x86
    # builds); nothing else in geoscreen runs quantized kernels.
    torch.backends.quantized.engine = ENGINE
    with warnings.catch_warnings():
        # torch.ao.quantization announces its move to torchao; the FX path is what
        # quantizes a trunk without a compiler here.
        warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning, UserWarning))
        prepared = prepare_fx(graph, qconfig_mapping(), (example,))
        trunk.body = StageTaps(prepared, paths)
        with torch.no_grad():
            for start in range(0, len(calibration), 16):
                quantized.score_and_embed(calibration[start : start + 16])
        trunk.body = StageTaps(convert_fx(prepared), paths)
    return quantized


def qconfig_mapping() -> QConfigMapping:
    """The ``x86`` defaults with activations scaled to their observed range.

    On the real NEON tiles (resnet18 deep features; a scratch comparison the README
    reports) the defaults' histogram observers moved scores about twice as much as plain
    min/max ranges (mean 0.03-0.04 against 0.02) and took longer to calibrate. With VNNI
    the full 8 bits are used; without it 7 (what the engine's ``reduce_range`` did), as
    the older x86 kernels overflow otherwise.
    """
    from torch.ao.quantization import QConfig, get_default_qconfig_mapping
    from torch.ao.quantization.observer import MinMaxObserver

    mapping = get_default_qconfig_mapping(ENGINE)
    default = mapping.global_qconfig
    assert default is not None
    top = 255 if cpu_has_fast_int8() else 127
    activation = MinMaxObserver.with_args(dtype=torch.quint8, quant_min=0, quant_max=top)
    ours = QConfig(activation=activation, weight=default.weight)
    mapping.set_global(ours)
    for kind, qconfig in list(mapping.object_type_qconfigs.items()):
        # Not the fixed-range ones (sigmoid, tanh...): they keep their own.
        if qconfig is not None and qconfig.activation is default.activation:
            mapping.set_object_type(kind, ours)
    return mapping


def _trunk_input(model: TileModel, trunk: Backbone, tiles: torch.Tensor) -> torch.Tensor:
    """What the trunk receives for ``tiles`` (after normalisation and enlarging)."""
    seen: list[torch.Tensor] = []
    handle = trunk.body.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    try:
        with torch.no_grad():
            model.score_and_embed(tiles)
    finally:
        handle.remove()
    return seen[0]
