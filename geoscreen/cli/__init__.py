"""Command-line interface. Each stage adds its commands in its own module."""

from geoscreen.cli import demo, imagery, profiles, review, sites, vision  # noqa: F401  (they register commands)
from geoscreen.cli.app import cli, main

__all__ = ["cli", "main"]
