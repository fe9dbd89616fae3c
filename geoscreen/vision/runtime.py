"""CPU/GPU runtime settings that matter for throughput.

On CPU the model is the bottleneck; glibc's malloc returning large buffers to the
OS after every batch (mmap churn) costs 1.4-1.8x, channels_last 1.2-1.9x.

Precision: ``fp32``, ``bf16`` (autocast: convolutions and matmuls in bfloat16,
accumulating in fp32), ``int8`` (ResNet trunks of tile classifiers on a CPU,
:mod:`geoscreen.vision.quantize`) or ``auto``: bf16 for classifiers that check it (tiles scoring
within :data:`BF16_CHECK_MARGIN` of the threshold in force are scored again in fp32),
on a GPU and on a CPU with bf16 hardware; fp32 otherwise (:func:`pick_precision` says
why). bf16 on a CPU is fast only with bf16 matrix hardware (AMX or AVX512-BF16);
without it bf16 runs emulated, slower than fp32.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import logging
from collections.abc import Iterator
from functools import cache
from typing import Literal

import torch

from geoscreen.errors import ConfigError

log = logging.getLogger(__name__)

Precision = Literal["fp32", "bf16", "int8", "auto"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16", "int8", "auto")
BF16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
# Scores this close to the threshold in force are computed again in fp32 when screening
# in bf16, so that every tile falls on the side of the threshold fp32 puts it. Twice the
# largest bf16 score change measured on the real NEON cases (0.054;
# benchmarks/precision.py classify).
BF16_CHECK_MARGIN = 0.1

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_tuned = False


def tune_malloc(trim_threshold: int = 1 << 30) -> bool:
    """Keep freed tensor buffers in the heap (no mmap for big blocks, rare trims).

    glibc only; returns False where it does not apply. Equivalent to
    ``GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=...``.
    """
    global _tuned
    if _tuned:
        return True
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        ok = (
            libc.mallopt(_M_MMAP_MAX, 0) == 1
            and libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold) == 1
        )
    except (OSError, AttributeError):
        return False
    _tuned = ok
    return ok


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while a block (or, as ``@gc_paused()``, a
    function) makes many small objects.

    Making tens of thousands of geometries (one per detected object) sets off collections
    that walk every live object, a loaded model's included: 0.2 s of 0.4 s for 20,000 boxes
    in a process holding a detector (``benchmarks/detect.py``). The objects made have no
    reference cycles, so nothing piles up; the collector runs again when the block ends.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda was asked for but no CUDA GPU is available",
            fix="Use --device cpu or auto.",
        )
    if name != "cpu" and not name.startswith("cuda"):
        raise ConfigError(f"unknown device {name!r}", fix="Use auto, cpu or cuda.")
    return torch.device(name)


def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The first CPU's feature flags from ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


@cache
def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AMX tiles or AVX512-BF16).

    Asks torch's own CPU check first (it also sees non-Linux systems), then the
    kernel's flags; either saying yes is enough.
    """
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    for name in checks:
        check = getattr(torch.cpu, name, None)
        if check is not None:
            with contextlib.suppress(RuntimeError):
                if check():
                    return True
    return bool(cpu_flags() & BF16_CPU_FLAGS)


def pick_precision(
    name: str,
    device: torch.device,
    *,
    fast_bf16: bool | None = None,
    checked: bool = False,
) -> Literal["fp32", "bf16"]:
    """What ``--precision NAME`` means on ``device``: ``fp32`` or ``bf16``.

    ``auto`` is bf16 only where the caller ``checked`` it: it scores again in fp32 the
    tiles whose bf16 score lies within :data:`BF16_CHECK_MARGIN` of the threshold in
    force, so the tiles above the threshold are those fp32 puts there. Unchecked, bf16
    screened 1.2-1.6x faster at the same AP but moved 4-10 of the tiles above the
    threshold (``benchmarks/precision.py`` on the NEON cases): the site set an analyst
    got would depend on the machine. So ``auto`` is checked bf16 on a GPU and on a CPU
    with bf16 hardware (:func:`cpu_has_fast_bf16`, or ``fast_bf16``), and fp32
    elsewhere and for detection (its boxes are not checked).
    ``bf16`` asked for runs bf16 (checked where the caller checks); on a CPU without
    the hardware with a warning that it is slower.
    """
    if name not in PRECISIONS:
        raise ConfigError(f"unknown precision {name!r}", fix="Use fp32, bf16, int8 or auto.")
    if name == "int8":  # tile classifiers decide it (geoscreen.vision.infer), with the model
        raise ConfigError(
            "--precision int8 is for tile classifiers with a ResNet backbone; "
            "detectors run in fp32 or bf16",
            fix="Use --precision auto, fp32 or bf16.",
        )
    if name == "fp32" or (name == "auto" and not checked):
        return "fp32"
    fast = device.type == "cuda" or (cpu_has_fast_bf16() if fast_bf16 is None else fast_bf16)
    if name == "auto":
        return "bf16" if fast else "fp32"
    if not fast:
        _warn_slow_bf16()
    return "bf16"


@cache
def _warn_slow_bf16() -> None:
    """Once per process: a command asks what bf16 means before running in it."""
    log.warning(
        "bf16 was asked for but this CPU has no AMX or AVX512-BF16: it runs emulated, "
        "slower than fp32 (use --precision fp32)"
    )


def autocast(
    precision: str, device: torch.device, *, checked: bool = False
) -> contextlib.AbstractContextManager[None]:
    """The autocast context for running a model at ``precision`` (``fp32``, ``bf16``,
    ``auto``; see :func:`pick_precision`) on ``device``; a no-op for fp32.

    Enter it once around the whole inference loop, not per batch: autocast caches its
    bf16 copies of the weights only until the outermost context exits.
    """
    picked = pick_precision(precision, device, checked=checked)
    return bf16_autocast(device) if picked == "bf16" else contextlib.nullcontext()


def bf16_autocast(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """bf16 autocast on ``device``."""
    return torch.autocast(device.type, dtype=torch.bfloat16)


def fp32_within(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """fp32 inside an autocast context (for the tiles :data:`BF16_CHECK_MARGIN` names)."""
    return torch.autocast(device.type, enabled=False)
