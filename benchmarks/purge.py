"""Retention purge: how fast ``geoscreen review purge`` records and deletes evidence chips.

Usage::

    python benchmarks/purge.py [--candidates 20000] [--chip-bytes 20000]

In a temporary folder: a SQLite store with one run of ``--candidates`` sites, each with
a chip file of ``--chip-bytes``; the run is aged past a 30-day limit, then the purge
plans (timed) and purges (timed: hashes, audit entries in transactions of
:data:`geoscreen.review.retention.CHUNK` candidates, deletions). Prints candidates per
second and the ratio of the purge's time to the load's; asserts nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import update

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table

from geoscreen.review.loader import load_sites
from geoscreen.review.retention import plan, purge
from geoscreen.review.schema import runs
from geoscreen.review.store import open_store
from geoscreen.review.testing import make_sites

PROFILE = "brick_kilns_s2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=20_000)
    parser.add_argument("--chip-bytes", type=int, default=20_000)
    args = parser.parse_args()
    n = args.candidates
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.chdir(folder)
        (folder / "evidence").mkdir()
        payload = os.urandom(args.chip_bytes)
        for i in range(n):
            (folder / "evidence" / f"site-{i:07d}.png").write_bytes(payload)
        store = open_store(folder / "store.sqlite", create=True)
        start = time.perf_counter()
        load_sites(store, make_sites(folder / "sites.parquet", n), actor="bench")
        load_s = time.perf_counter() - start
        aged = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
        with store.write() as conn:
            conn.execute(update(runs).values(completed_at=aged))
        start = time.perf_counter()
        planned = plan(store, {PROFILE: 30})
        plan_s = time.perf_counter() - start
        start = time.perf_counter()
        done = purge(store, {PROFILE: 30}, actor="bench")
        purge_s = time.perf_counter() - start
        store.close()
        left = len(list((folder / "evidence").iterdir()))
    print_table(
        ["step", "candidates", "seconds", "candidates/s"],
        [
            ["load", n, f"{load_s:.2f}", f"{n / load_s:,.0f}"],
            ["plan", planned.candidates, f"{plan_s:.2f}", f"{planned.candidates / plan_s:,.0f}"],
            ["purge", done.candidates, f"{purge_s:.2f}", f"{done.candidates / purge_s:,.0f}"],
        ],
    )
    print(f"purge / load time: {purge_s / load_s:.1f}x; chips left: {left}; "
          f"{done.bytes / 1e6:.0f} MB deleted")  # fmt: skip


if __name__ == "__main__":
    main()
