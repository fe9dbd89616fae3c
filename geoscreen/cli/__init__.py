"""Command-line interface. Each stage adds its commands in its own module."""

from geoscreen.cli import (  # noqa: F401  (they register commands)
    batch,
    demo,
    evaluate,
    imagery,
    profiles,
    retention,
    review,
    samples,
    sites,
    vision,
    web,
)
from geoscreen.cli.app import cli, main

__all__ = ["cli", "main"]
