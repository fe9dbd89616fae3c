"""Options that several commands share, defined once so they read and default alike.

Each is a decorator (``@db_option``). Nothing here imports torch, SQLAlchemy or the
imagery stack: ``geoscreen --help`` stays fast. Who-is-acting options (``--user``,
password prompts) live in :mod:`geoscreen.cli.identity`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from geoscreen.errors import ConfigError
from geoscreen.review.records import DEFAULT_DB, ENV_DB

F = TypeVar("F", bound=Callable[..., Any])

# geoscreen.vision.runtime.PRECISIONS, spelled out so that --help does not import torch.
PRECISION_CHOICES = ("fp32", "bf16", "int8", "auto")


def db_option(func: F) -> F:
    """``--db``: the review store (``$GEOSCREEN_DB``, then ``./geoscreen.sqlite``)."""
    return click.option(
        "--db",
        envvar=ENV_DB,
        default=DEFAULT_DB,
        show_default=True,
        metavar="PATH|URL",
        help=f"Review store: SQLite file or postgresql:// URL (default ${ENV_DB}).",
    )(func)


def json_option(func: F) -> F:
    """``--json``: machine-readable output instead of text."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")(func)


def precision_option(func: F) -> F:
    """``--precision``: model arithmetic (screen, scan, watch)."""
    return click.option(
        "--precision",
        type=click.Choice(PRECISION_CHOICES),
        default="auto",
        show_default=True,
        help="Model arithmetic. auto: for classifiers bf16 on a GPU or a CPU with "
        "AMX/AVX512-BF16, tiles scoring near the threshold scored again in fp32 (the same "
        "tiles above it as fp32); fp32 elsewhere and for detectors. bf16: that on any "
        "machine (without AMX/AVX512-BF16 emulated and slower), and for detectors too "
        "(unchecked). int8: classifiers with a ResNet backbone on a CPU, the trunk "
        "quantized and calibrated on the scene, checked like bf16 (fastest with VNNI).",
    )(func)


def tta_option(func: F) -> F:
    """``--tta``: detection over the 8 flips/rotations of each tile (screen, scan, watch)."""
    return click.option(
        "--tta/--no-tta",
        default=False,
        help="Detection profiles: also detect on the 8 flips/rotations of each tile and fuse "
        "the boxes (8x slower; the model card's threshold for it applies). Refused for "
        "classify profiles.",
    )(func)


def check_tta(tta: bool, task: str, profile: str) -> None:
    """Refuse ``--tta`` for a profile that is not a detection profile (it would do nothing)."""
    if tta and task != "detect":
        raise ConfigError(
            f"--tta is for detection profiles; this is a {task} profile",
            where=profile,
            fix="Leave --tta out: it runs a detector over each tile's 8 flips/rotations.",
        )


def device_option(func: F) -> F:
    """``--device``: where models run."""
    return click.option(
        "--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."
    )(func)


def batch_size_option(func: F) -> F:
    """``--batch-size``: tiles per model call."""
    return click.option(
        "--batch-size",
        default=32,
        show_default=True,
        type=click.IntRange(1),
        help="Tiles per model call.",
    )(func)


def _parse_bands(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> tuple[str, ...]:
    if value is None:
        return ()
    from geoscreen.profiles import parse_bands

    return parse_bands(value)


def bands_option(func: F) -> F:
    """``--bands``: which of the scene's bands the profile gets, in order (train, screen,
    similar, scan); checked against each scene by :func:`geoscreen.profiles.select_bands`."""
    return click.option(
        "--bands",
        default=None,
        metavar="B4,B3,B2|4,3,2",
        callback=_parse_bands,
        help="The scene bands the profile uses, in order, by name (or the sensor's common "
        "name) or number; replaces the profile's imagery.bands.",
    )(func)
