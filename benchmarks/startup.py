"""Start-up time of everyday ``geoscreen`` commands, against ``python -c pass``.

Usage::

    python benchmarks/startup.py [--runs 5] [--store-sites 200]

Builds a throwaway SQLite review store (users, one loaded run of sites), then runs each
command ``--runs`` times as a fresh ``python -m geoscreen`` process (after one untimed
warm-up run, so the page cache is warm) and prints the median and fastest wall time,
the median minus the bare interpreter's, and which heavy libraries the command imported
(from one extra ``python -X importtime`` run). Issue target: median <= 1.5 s for every
command listed here. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table

TARGET_S = 1.5
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
    "sqlalchemy",
    "pydantic",
)


def _run(args: Sequence[str], env: dict[str, str]) -> float:
    """Wall seconds of one process; a failing command is an error, not a number."""
    start = time.perf_counter()
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return elapsed


def _heavy_imports(args: Sequence[str], env: dict[str, str]) -> str:
    """The heavy top-level packages a command imports (one ``-X importtime`` run)."""
    cmd = [args[0], "-X", "importtime", *args[1:]]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    names = {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    }
    return ",".join(h for h in HEAVY if h in names) or "-"


def _setup(folder: Path, n_sites: int, env: dict[str, str]) -> None:
    from geoscreen.review.testing import make_sites

    sites = make_sites(folder / "sites.parquet", n_sites)
    geoscreen = [sys.executable, "-m", "geoscreen"]
    _run([*geoscreen, "users", "add", "ann", "--role", "analyst"], env)
    _run([*geoscreen, "review", "load", str(sites)], env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--store-sites", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "GEOSCREEN_DB": str(Path(tmp) / "review.sqlite")}
        _setup(Path(tmp), args.store_sites, env)
        geoscreen = [sys.executable, "-m", "geoscreen"]
        # Each run of a command that writes gets its own candidate / user name.
        commands: list[tuple[str, list[list[str]]]] = [
            ("python -c pass", [[sys.executable, "-c", "pass"]] * (args.runs + 1)),
            ("geoscreen --help", [[*geoscreen, "--help"]] * (args.runs + 1)),
            ("review list", [[*geoscreen, "review", "list", "--limit", "20"]] * (args.runs + 1)),
            ("review show", [[*geoscreen, "review", "show", "1"]] * (args.runs + 1)),
            (
                "review set",
                [
                    [*geoscreen, "review", "set", str(k + 1), "in_review", "--user", "ann"]
                    for k in range(args.runs + 1)
                ],
            ),
            (
                "users add",
                [
                    [*geoscreen, "users", "add", f"user{k}", "--role", "viewer"]
                    for k in range(args.runs + 1)
                ],
            ),
            ("audit verify", [[*geoscreen, "audit", "verify"]] * (args.runs + 1)),
        ]
        rows = []
        base = 0.0
        for name, runs in commands:
            _run(runs[0], env)  # warm-up, not timed
            times = [_run(r, env) for r in runs[1:]]
            median = statistics.median(times)
            if name == "python -c pass":
                base = median
            heavy = "-" if name == "python -c pass" else _heavy_imports(runs[0], env)
            verdict = "" if name == "python -c pass" else ("ok" if median <= TARGET_S else "SLOW")
            rows.append((name, median, min(times), median - base, verdict, heavy))
    print(f"{args.runs} runs per command (median, fastest), seconds; target <= {TARGET_S} s\n")
    print_table(
        ("command", "median s", "min s", "- python s", "target", "heavy imports"),
        [(n, f"{m:.3f}", f"{lo:.3f}", f"{d:.3f}", v, h) for n, m, lo, d, v, h in rows],
    )


if __name__ == "__main__":
    main()
