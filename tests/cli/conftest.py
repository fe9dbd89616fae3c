"""Fixtures of the CLI tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from geoscreen.cli.app import main


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """Call ``geoscreen`` in-process: ``run(*args)`` gives (exit code, stdout, stderr)."""

    def call(*args: str | Path) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return call
