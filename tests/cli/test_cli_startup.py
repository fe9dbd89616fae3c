"""Everyday commands start without the heavy libraries (start-up time is in benchmarks/)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Libraries that only the commands doing imagery, models, maps or serving may load.
HEAVY = (
    "torch",
    "torchvision",
    "geopandas",
    "pandas",
    "folium",
    "rasterio",
    "dask",
    "fastapi",
    "matplotlib",
)

_PROBE = """
import json, sys
from geoscreen.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(m for m in sys.modules if "." not in m)}))
"""


def _loaded(args: list[str], tmp_path: Path) -> tuple[int, set[str]]:
    """Run ``geoscreen ARGS`` in a fresh interpreter: (exit code, top-level modules loaded)."""
    env = {**os.environ, "GEOSCREEN_DB": str(tmp_path / "review.sqlite")}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    last = json.loads(done.stdout.strip().splitlines()[-1])
    return int(last["code"]), set(last["modules"])


def test_import_and_help_load_no_heavy_library(tmp_path: Path) -> None:
    code, modules = _loaded(["--help"], tmp_path)
    assert code == 0
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))
    assert "geoscreen" in modules and "click" in modules


@pytest.mark.parametrize(
    "args", [["review", "--help"], ["screen", "--help"], ["scan", "--help"], ["users", "--help"]]
)
def test_command_help_loads_no_heavy_library(args: list[str], tmp_path: Path) -> None:
    code, modules = _loaded(args, tmp_path)
    assert code == 0
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))


def test_store_commands_load_only_the_database_layer(tmp_path: Path) -> None:
    code, modules = _loaded(
        ["users", "add", "ann", "--role", "analyst", "--as-admin-of-this-file"], tmp_path
    )
    assert code == 0 and (tmp_path / "review.sqlite").is_file()
    assert "sqlalchemy" in modules  # it did open the store
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))
    for args in (["review", "list"], ["audit", "verify"], ["users", "list"]):
        code, modules = _loaded(args, tmp_path)
        assert code == 0, args
        assert not modules & set(HEAVY), (args, sorted(modules & set(HEAVY)))
