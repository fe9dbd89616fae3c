"""Review store: loading, map-viewport bbox queries and concurrent writers, SQLite and PostGIS.

Usage::

    python benchmarks/review_store.py [--quick] [--candidates 200000] [--load-sites 50000]
        [--writers 20] [--duration 60] [--pg URL | --no-pg]

For each database (SQLite in a temporary folder; PostgreSQL + PostGIS from ``--pg`` or
``$GEOSCREEN_TEST_PG_URL``, in a throwaway schema):

1. loads one run of ``--load-sites`` sites (timed), then more runs up to ``--candidates``;
2. runs random map-viewport bbox queries (about a zoom-10 screen, 0.6 x 0.35 degrees, and
   a zoom-8 one, 2.4 x 1.4 degrees; at most 5,000 rows, best score first): p50/p95 ms;
3. runs ``--writers`` threads for ``--duration`` s, each changing random candidates of a
   small hot set (so they collide) through the workflow with the version it read:
   accepted changes, reported conflicts, other errors (must be 0), lost updates (must be 0).

Prints numbers; asserts nothing. Issue targets: bbox p95 <= 50 ms on both databases,
0 errors besides conflicts, loading 50,000 sites < 30 s on SQLite.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, run_threads

from geoscreen.review.errors import ConflictError, TransitionError
from geoscreen.review.loader import load_sites
from geoscreen.review.spatial import BBox
from geoscreen.review.store import Store, open_store
from geoscreen.review.testing import make_sites, pg_base_url, pg_schema
from geoscreen.review.users import add_user
from geoscreen.review.workflow import set_status

REGION = (60.0, 5.0, 100.0, 35.0)  # about the size of South Asia
VIEWPORTS = {"zoom10": (0.6, 0.35), "zoom8": (2.4, 1.4)}


def fill(store: Store, folder: Path, total: int, first_run: int) -> float:
    """Load ``first_run`` sites as one timed run, then the rest; seconds of the first run."""
    path = make_sites(folder / "run-0.parquet", first_run, run_id="run-0", bounds=REGION, seed=0)
    started = time.perf_counter()
    load_sites(store, path, actor="bench")
    seconds = time.perf_counter() - started
    done, k = first_run, 1
    while done < total:
        n = min(first_run, total - done)
        path = make_sites(folder / f"run-{k}.parquet", n, run_id=f"run-{k}", bounds=REGION,
                          first_site=done, seed=k)  # fmt: skip
        load_sites(store, path, actor="bench")
        done, k = done + n, k + 1
    return seconds


def bbox_latencies(store: Store, queries: int, size: tuple[float, float]) -> dict[str, float]:
    """p50/p95 milliseconds and mean rows of random viewport queries."""
    rng = random.Random(1)
    times, rows = [], []
    store.in_bbox(BBox(70, 20, 71, 21))  # warm the pool and caches
    for _ in range(queries):
        x = rng.uniform(REGION[0], REGION[2] - size[0])
        y = rng.uniform(REGION[1], REGION[3] - size[1])
        started = time.perf_counter()
        found = store.in_bbox(BBox(x, y, x + size[0], y + size[1]), limit=5000)
        times.append((time.perf_counter() - started) * 1000)
        rows.append(len(found))
    times.sort()
    return {
        "p50_ms": statistics.median(times),
        "p95_ms": times[int(0.95 * (len(times) - 1))],
        "mean_rows": statistics.fmean(rows),
    }


def writers(store: Store, threads: int, seconds: float, hot: int) -> dict[str, Any]:
    """Concurrent reviewers flipping new <-> in_review on a hot set of candidates."""
    for i in range(threads):
        add_user(store, f"analyst{i}", "analyst", actor="bench")
    counts = {"ok": 0, "conflicts": 0, "errors": 0}
    errors: list[str] = []
    accepted: dict[int, int] = {}
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds
    ids = [c.id for c in store.candidates(order="id", limit=hot)]

    def work(i: int) -> None:
        rng = random.Random(i)
        while time.perf_counter() < deadline:
            cid = rng.choice(ids)
            outcome = "ok"
            try:
                seen = store.candidate(cid)
                target = "in_review" if seen.status == "new" else "new"
                set_status(store, cid, target, user=f"analyst{i}", expected_version=seen.version)
            except (ConflictError, TransitionError):
                outcome = "conflicts"
            except Exception as exc:  # counted and shown: must stay at zero
                outcome = "errors"
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
            with lock:
                counts[outcome] += 1
                if outcome == "ok":
                    accepted[cid] = accepted.get(cid, 0) + 1

    elapsed = run_threads(work, threads)
    lost = sum(1 for cid, n in accepted.items() if store.candidate(cid).version != 1 + n)
    return {**counts, "lost_updates": lost, "changes_per_s": counts["ok"] / elapsed,
            "first_errors": errors[:3]}  # fmt: skip


def bench(name: str, url: str, folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement on one database."""
    print(f"[{name}] loading {args.candidates:,} candidates ...", file=sys.stderr)
    with open_store(url, create=True) as store:
        load_s = fill(store, folder, args.candidates, args.load_sites)
        result: dict[str, Any] = {"database": name, "candidates": store.count(),
                                  "load_s": load_s, "load_sites": args.load_sites}  # fmt: skip
        for label, size in VIEWPORTS.items():
            print(f"[{name}] bbox queries ({label}) ...", file=sys.stderr)
            result[label] = bbox_latencies(store, args.queries, size)
        print(f"[{name}] {args.writers} writers for {args.duration:g} s ...", file=sys.stderr)
        result["writers"] = writers(store, args.writers, args.duration, args.hot)
    return result


def main() -> None:
    """Parse options, run on SQLite and (if available) PostgreSQL, print a table and JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Small sizes, short runs.")
    parser.add_argument("--candidates", type=int, default=None)
    parser.add_argument("--load-sites", type=int, default=None)
    parser.add_argument("--writers", type=int, default=20)
    parser.add_argument("--duration", type=float, default=None, help="Writer seconds.")
    parser.add_argument("--hot", type=int, default=200, help="Candidates the writers share.")
    parser.add_argument("--queries", type=int, default=None)
    parser.add_argument(
        "--pg", default=pg_base_url(), help="PostgreSQL URL (default: $GEOSCREEN_TEST_PG_URL)."
    )
    parser.add_argument("--no-pg", action="store_true")
    args = parser.parse_args()
    args.candidates = args.candidates or (20_000 if args.quick else 200_000)
    args.load_sites = args.load_sites or (10_000 if args.quick else 50_000)
    args.duration = args.duration if args.duration is not None else (5.0 if args.quick else 60.0)
    args.queries = args.queries or (100 if args.quick else 300)
    results = []
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gs-bench-")))
        results.append(bench("sqlite", str(folder / "bench.sqlite"), folder, args))
        if args.pg and not args.no_pg:
            url = stack.enter_context(pg_schema(args.pg, prefix="gs_bench"))
            results.append(bench("postgis", url, folder, args))
        else:
            print("PostGIS skipped: give --pg URL or set GEOSCREEN_TEST_PG_URL", file=sys.stderr)
    rows = []
    for r in results:
        w = r["writers"]
        rows.append([
            r["database"], r["candidates"], f"{r['load_sites']:,} in {r['load_s']:.1f} s",
            r["zoom10"]["p50_ms"], r["zoom10"]["p95_ms"], r["zoom10"]["mean_rows"],
            r["zoom8"]["p50_ms"], r["zoom8"]["p95_ms"], r["zoom8"]["mean_rows"],
            w["ok"], w["conflicts"], w["errors"], w["lost_updates"], w["changes_per_s"],
        ])  # fmt: skip
    print_table(
        ["db", "candidates", "load run", "z10 p50 ms", "z10 p95 ms", "z10 rows", "z8 p50 ms",
         "z8 p95 ms", "z8 rows", "changes", "conflicts", "errors", "lost", "changes/s"],
        rows,
    )  # fmt: skip
    print(f"targets: bbox p95 <= 50 ms; errors 0; lost 0; load {args.load_sites:,} < 30 s (SQLite)")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
