"""Start-up time of everyday ``geoscreen`` commands, against ``python -c pass``.

Usage::

    python benchmarks/startup.py [--runs 5] [--store-sites 200]

Builds a throwaway SQLite review store (users, one loaded run of sites), then runs each
command ``--runs`` times as a fresh ``python -m geoscreen`` process (after one untimed
warm-up run, so the page cache is warm) and prints the median and fastest wall time,
the median minus the bare interpreter's, the median CPU time (steadier than wall time
on a busy machine), and which heavy libraries the command imported (from one extra
``python -X importtime`` run). Issue target: median <= 1.5 s for every
command listed here. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import resource
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
OVERRIDE = "--as-admin-of-this-file"  # the store is a scratch file: act on its authority
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


def _run(args: Sequence[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one process; a failure is an error.

    CPU time is much less sensitive than wall time to other load on a shared machine.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return elapsed, cpu


def _heavy_imports(args: Sequence[str], env: dict[str, str], cwd: Path) -> str:
    """The heavy top-level packages a command imports (one ``-X importtime`` run)."""
    cmd = [args[0], "-X", "importtime", *args[1:]]
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False)
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
    _run([*geoscreen, "users", "add", "ann", "--role", "analyst", OVERRIDE], env, folder)
    _run([*geoscreen, "review", "load", str(sites), OVERRIDE], env, folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--store-sites", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        # Run from the store's folder: the geoscreen measured is the installed one (or
        # $PYTHONPATH's), never a checkout that happens to be the current directory.
        folder = Path(tmp)
        env = {**os.environ, "GEOSCREEN_DB": str(folder / "review.sqlite")}
        _setup(folder, args.store_sites, env)
        geoscreen = [sys.executable, "-m", "geoscreen"]
        as_ann = ["--user", "ann", OVERRIDE]
        # Each run of a command that writes gets its own candidate / user name.
        commands: list[tuple[str, list[list[str]]]] = [
            ("python -c pass", [[sys.executable, "-c", "pass"]] * (args.runs + 1)),
            ("geoscreen --help", [[*geoscreen, "--help"]] * (args.runs + 1)),
            ("review list", [[*geoscreen, "review", "list", "--limit", "20"]] * (args.runs + 1)),
            ("review show", [[*geoscreen, "review", "show", "1"]] * (args.runs + 1)),
            (
                "review set",
                [
                    [*geoscreen, "review", "set", str(k + 1), "in_review", *as_ann]
                    for k in range(args.runs + 1)
                ],
            ),
            (
                "users add",
                [
                    [*geoscreen, "users", "add", f"user{k}", "--role", "viewer", OVERRIDE]
                    for k in range(args.runs + 1)
                ],
            ),
            ("audit verify", [[*geoscreen, "audit", "verify"]] * (args.runs + 1)),
        ]
        rows = []
        base = 0.0
        for name, runs in commands:
            _run(runs[0], env, folder)  # warm-up, not timed
            measured = [_run(r, env, folder) for r in runs[1:]]
            walls = [wall for wall, _ in measured]
            median = statistics.median(walls)
            cpu = statistics.median(c for _, c in measured)
            if name == "python -c pass":
                base = median
            heavy = "-" if name == "python -c pass" else _heavy_imports(runs[0], env, folder)
            verdict = "" if name == "python -c pass" else ("ok" if median <= TARGET_S else "SLOW")
            rows.append((name, median, min(walls), median - base, cpu, verdict, heavy))
    print(f"{args.runs} runs per command, seconds; target median <= {TARGET_S} s; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")  # fmt: skip
    print_table(
        ("command", "median s", "min s", "- python s", "CPU s", "target", "heavy imports"),
        [
            (n, f"{m:.3f}", f"{lo:.3f}", f"{d:.3f}", f"{c:.3f}", v, h)
            for n, m, lo, d, c, v, h in rows
        ],
    )


if __name__ == "__main__":
    main()
