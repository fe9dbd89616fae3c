"""``geoscreen demo`` from an installed wheel: everything the demo reads ships in the package.

A wheel is built from a copy of the package (so the build leaves nothing in the
checkout), installed with ``--no-deps`` into a fresh venv, and ``geoscreen demo
--no-serve`` runs from an empty folder. Offline: the new venv sees this environment's
dependencies through a ``.pth`` line (added after the install, so pip never sees the
checkout's own geoscreen) instead of downloading them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str | Path], cwd: Path | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"{args}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.slow
def test_demo_runs_from_an_installed_wheel(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(
        ROOT / "geoscreen", src / "geoscreen", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
          "--no-index", "-w", dist, src])  # fmt: skip
    (wheel,) = dist.glob("geoscreen-*.whl")

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps",
          "--no-index", wheel])  # fmt: skip
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site.strip()) / "geoscreen_test_deps.pth").write_text("\n".join(sorted(deps)) + "\n")

    empty = tmp_path / "empty"
    empty.mkdir()
    where = _run([python, "-c", "import geoscreen; print(geoscreen.__file__)"], cwd=empty)
    assert Path(where.strip()).is_relative_to(venv), where  # the wheel, not the checkout
    out = _run([venv / "bin" / "geoscreen", "demo", "--no-serve"], cwd=empty)
    assert "4 screened" in out and "one-time password: " in out
    results = empty / "demo-output"
    assert (results / "map.html").is_file() and (results / "geoscreen.sqlite").is_file()
    assert (results / "model" / "MODEL_CARD.md").is_file()
