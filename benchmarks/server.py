"""Review server: viewport (bbox) API under 20 clients, review round trips, first map render.

Usage::

    python benchmarks/server.py [--quick] [--candidates 200000] [--clients 20]
        [--requests 50] [--actions 200] [--reviewers 4]

1. fills a SQLite store with ``--candidates`` synthetic sites (the review-store
   benchmark's generator and loader) and starts ``geoscreen serve`` on a free loopback
   port in its own process;
2. ``--clients`` logged-in clients (threads, keep-alive connections) each ask
   ``--requests`` random map viewports of a 1280 x 800 screen at zooms 4, 7, 10 and 13
   (clusters when crowded, points when not), after one untimed round per client to
   warm the server up: p50/p95 ms per zoom and overall, server CPU per request;
3. review actions (confirm with a reason and the version read, new -> in_review ->
   confirmed, through the workflow and the audit log): one reviewer, then
   ``--reviewers`` at once: p50/p95 ms per round trip;
4. time to the first map render of the review page in headless Chromium (from the
   start of navigation to the first candidates drawn), median of 3 loads.

Loopback only, bounded request counts; prints numbers, asserts nothing. Issue targets:
bbox p95 <= 100 ms at 20 clients; review round trip p95 <= 50 ms.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.client import HTTPConnection, RemoteDisconnected
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, run_threads
from review_store import REGION, fill

from geoscreen.review.store import open_store
from geoscreen.review.users import add_user
from geoscreen.web.testing import PASSWORD, page_token

SCREEN = (1280, 800)
ZOOMS = (4, 7, 10, 13)
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


def percentiles(values: list[float]) -> dict[str, float]:
    """p50/p95/max of milliseconds."""
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50_ms": statistics.median(ordered),
        "p95_ms": ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)],
        "max_ms": ordered[-1],
    }


def start_server(db: Path, folder: Path) -> tuple[subprocess.Popen[str], str]:
    """``geoscreen serve`` on a free loopback port; waits until it answers."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "geoscreen", "serve", "--db", str(db), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=open(folder / "server.log", "w"),  # noqa: SIM115 (closed with the process)
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit((folder / "server.log").read_text())
        try:
            with urllib.request.urlopen(base + "/login", timeout=2):
                return server, base
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("the server did not start")


class Http:
    """A keep-alive HTTP/1.1 connection with cookies (http.client: a light load generator)."""

    def __init__(self, base: str) -> None:
        parts = urlsplit(base)
        self.connection = HTTPConnection(parts.hostname, parts.port, timeout=60)
        self.cookies: dict[str, str] = {}
        self.csrf = ""

    def request(
        self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None
    ) -> tuple[int, bytes]:
        """Send one request; returns the status and body."""
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        if self.csrf:
            headers["X-CSRF-Token"] = self.csrf
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        url = path + ("?" + urlencode(params) if params else "")
        try:
            self.connection.request(method, url, body=data, headers=headers)
            reply = self.connection.getresponse()
        except (RemoteDisconnected, ConnectionError):  # the server closed an idle connection
            self.connection.close()
            self.connection.request(method, url, body=data, headers=headers)
            reply = self.connection.getresponse()
        content = reply.read()
        for header in reply.headers.get_all("Set-Cookie") or []:
            jar: SimpleCookie = SimpleCookie()
            jar.load(header)
            self.cookies.update({name: morsel.value for name, morsel in jar.items()})
        return reply.status, content

    def close(self) -> None:
        """Close the connection."""
        self.connection.close()


def client(base: str, user: str) -> Http:
    """A logged-in connection holding the session's CSRF token."""
    http = Http(base)
    http.csrf = page_token(http.request("GET", "/login")[1].decode())
    status, content = http.request("POST", "/api/login", {"username": user, "password": PASSWORD})
    if status != 200:
        raise SystemExit(f"login failed: {status} {content!r}")
    http.csrf = page_token(http.request("GET", "/")[1].decode())
    return http


def viewport(rng: random.Random, zoom: int) -> str:
    """A random 1280 x 800 px screen at ``zoom`` inside the data's region."""
    degrees = 360 / (256 * 2**zoom)
    width, height = SCREEN[0] * degrees, SCREEN[1] * degrees * 0.9
    x = rng.uniform(REGION[0] - width / 4, REGION[2] - width * 3 / 4)
    y = rng.uniform(REGION[1] - height / 4, REGION[3] - height * 3 / 4)
    box = (max(x, -180), max(y, -90), min(x + width, 180), min(y + height, 90))
    return ",".join(f"{v:.6f}" for v in box)


def bbox_load(base: str, clients: int, requests: int, pid: int) -> dict[str, Any]:
    """``clients`` logged-in clients (threads) each asking ``requests`` viewports at once."""
    sessions = [client(base, "bench") for _ in range(clients)]
    warm = random.Random(-1)
    for http in sessions:  # reopen connections that idled out during the (slow) logins
        for zoom in ZOOMS:  # and warm the server up (steady state is measured)
            http.request(
                "GET", "/api/candidates", params={"bbox": viewport(warm, zoom), "zoom": zoom}
            )
    cpu_before = cpu_s(pid)
    results: dict[int, list[float]] = {z: [] for z in ZOOMS}
    kinds: dict[str, int] = {}
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def work(k: int) -> None:
        rng = random.Random(k)
        start.wait()
        for i in range(requests):
            zoom = ZOOMS[(i + k) % len(ZOOMS)]
            params = {"bbox": viewport(rng, zoom), "zoom": zoom}
            began = time.perf_counter()
            status, content = sessions[k].request("GET", "/api/candidates", params=params)
            elapsed = (time.perf_counter() - began) * 1000
            if status != 200:
                raise SystemExit(f"bbox request failed: {status} {content!r}")
            kind = "clusters" if content.startswith(b'{"kind":"clusters"') else "points"
            with lock:
                results[zoom].append(elapsed)
                kinds[kind] = kinds.get(kind, 0) + 1

    wall = run_threads(work, clients)
    cpu = cpu_s(pid) - cpu_before
    for http in sessions:
        http.close()
    every = [t for times in results.values() for t in times]
    return {
        "server_cpu_ms_per_request": cpu * 1000 / len(every),
        "all": percentiles(every),
        "by_zoom": {z: percentiles(t) for z, t in results.items()},
        "kinds": kinds,
        "requests_per_s": len(every) / wall,
    }


def review_actions(base: str, reviewers: int, actions: int) -> dict[str, float]:
    """Each reviewer confirms ``actions`` candidates from the top of the queue (its own share)."""
    sessions = [client(base, f"analyst{k}") for k in range(reviewers)]
    ids: list[int] = []
    while len(ids) < reviewers * actions:
        params = {"limit": 500, "offset": len(ids)}
        page = json.loads(sessions[0].request("GET", "/api/queue", params=params)[1])["items"]
        if not page:
            break
        ids += [item["id"] for item in page]
    times: list[float] = []
    failures: list[int] = []
    lock = threading.Lock()

    def work(k: int) -> None:
        http = sessions[k]
        for cid in ids[k::reviewers][:actions]:
            shown = json.loads(http.request("GET", f"/api/candidates/{cid}")[1])
            body = {"status": "confirmed", "reason": "benchmark",
                    "expected_version": shown["candidate"]["version"]}  # fmt: skip
            began = time.perf_counter()
            status, _ = http.request("POST", f"/api/candidates/{cid}/status", body)
            elapsed = (time.perf_counter() - began) * 1000
            with lock:
                if status == 200:
                    times.append(elapsed)
                else:
                    failures.append(status)

    run_threads(work, reviewers)
    for http in sessions:
        http.close()
    return {**percentiles(times), "failed": len(failures)}


def first_render(base: str, loads: int = 3) -> dict[str, float] | None:
    """Milliseconds from navigation start to the first candidates drawn (headless Chromium)."""
    if not os.path.exists(CHROMIUM):
        print("first render skipped: no /usr/bin/chromium", file=sys.stderr)
        return None
    from playwright.sync_api import sync_playwright

    marks, walls = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": SCREEN[0], "height": SCREEN[1]})
        page.goto(base + "/login")
        page.fill("#username", "bench")
        page.fill("#password", PASSWORD)
        page.click("#login-button")
        page.wait_for_selector("body[data-map=rendered]")
        for _ in range(loads):
            began = time.perf_counter()
            page.goto(base + "/")
            page.wait_for_selector("body[data-map=rendered]")
            walls.append((time.perf_counter() - began) * 1000)
            marks.append(page.evaluate(
                "performance.getEntriesByName('geoscreen-first-render')[0].startTime"
            ))  # fmt: skip
        browser.close()
    return {"mark_ms": statistics.median(marks), "wall_ms": statistics.median(walls)}


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    """Resident memory of a process (MiB)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    """Fill a store, serve it, measure, print a table and JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Small sizes, few requests.")
    parser.add_argument("--candidates", type=int, default=None)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=None, help="Viewports per client.")
    parser.add_argument("--actions", type=int, default=None, help="Decisions per reviewer.")
    parser.add_argument("--reviewers", type=int, default=4)
    args = parser.parse_args()
    candidates = args.candidates or (20_000 if args.quick else 200_000)
    requests = args.requests or (15 if args.quick else 50)
    actions = args.actions or (40 if args.quick else 200)
    with tempfile.TemporaryDirectory(prefix="gs-bench-server-") as tmp:
        folder = Path(tmp)
        db = folder / "review.sqlite"
        print(f"loading {candidates:,} candidates ...", file=sys.stderr)
        with open_store(db, create=True) as store:
            fill(store, folder, candidates, min(50_000, candidates))
            for name in ["bench", *(f"analyst{k}" for k in range(args.reviewers))]:
                add_user(store, name, "analyst", password=PASSWORD, actor="bench")
        load_before = f"{os.getloadavg()[0]:.1f}"
        started = time.perf_counter()
        server, base = start_server(db, folder)
        ready_s = time.perf_counter() - started
        try:
            print(f"server at {base}; {args.clients} clients ...", file=sys.stderr)
            bbox = bbox_load(base, args.clients, requests, server.pid)
            print("review actions ...", file=sys.stderr)
            single = review_actions(base, 1, actions)
            parallel = review_actions(base, args.reviewers, actions)
            print("first map render ...", file=sys.stderr)
            render = first_render(base)
            memory = rss_mib(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=30)
    rows = [[f"bbox, zoom {z}", r["n"], r["p50_ms"], r["p95_ms"], r["max_ms"]]
            for z, r in bbox["by_zoom"].items()]  # fmt: skip
    rows.append([f"bbox, all ({args.clients} clients)", bbox["all"]["n"], bbox["all"]["p50_ms"],
                 bbox["all"]["p95_ms"], bbox["all"]["max_ms"]])  # fmt: skip
    rows.append(["review action, 1 reviewer", single["n"], single["p50_ms"], single["p95_ms"],
                 single["max_ms"]])  # fmt: skip
    rows.append([f"review action, {args.reviewers} reviewers", parallel["n"], parallel["p50_ms"],
                 parallel["p95_ms"], parallel["max_ms"]])  # fmt: skip
    print(f"load average before/after: {load_before} / {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs (other work on the machine inflates the latencies)")  # fmt: skip
    print(f"{candidates:,} candidates in SQLite; server ready in {ready_s:.1f} s, "
          f"RSS {memory:.0f} MiB; {bbox['requests_per_s']:.0f} bbox requests/s, "
          f"{bbox['server_cpu_ms_per_request']:.1f} ms server CPU each; "
          f"answers: {bbox['kinds']}")  # fmt: skip
    print_table(["measure", "n", "p50 ms", "p95 ms", "max ms"], rows)
    if render:
        print(f"first map render (headless Chromium, median of 3): {render['mark_ms']:.0f} ms "
              f"from navigation start ({render['wall_ms']:.0f} ms wall)")  # fmt: skip
    print("targets: bbox p95 <= 100 ms at 20 clients; review round trip p95 <= 50 ms")
    print(json.dumps({"candidates": candidates, "ready_s": ready_s, "bbox": bbox,
                      "review_1": single, "review_n": parallel, "render": render,
                      "rss_mib": memory}))  # fmt: skip


if __name__ == "__main__":
    main()
