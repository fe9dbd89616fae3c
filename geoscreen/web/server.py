"""Running the review app with uvicorn: in the foreground, or in a thread (tests, benchmarks).

No access log: its request lines would record the map viewports analysts look at.
"""

from __future__ import annotations

import gc
import ipaddress
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

from geoscreen.errors import ConfigError

STARTUP_TIMEOUT_S = 30.0


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _config(app: FastAPI, host: str, port: int, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        proxy_headers=False,  # the app's guard follows X-Forwarded-For from trusted proxies only
        server_header=False,
        access_log=False,  # request lines carry viewports: where analysts look stays private
        workers=1,  # sessions live in this process
    )


def serve(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve until interrupted."""
    # Everything loaded so far (libraries, the candidate index) lives as long as the server:
    # keep it out of the garbage collector's full passes, which otherwise stall requests
    # for a few hundred milliseconds at a time.
    gc.collect()
    gc.freeze()
    uvicorn.Server(_config(app, host, port, log_level)).run()


@contextmanager
def background(app: FastAPI, host: str = "127.0.0.1", log_level: str = "warning") -> Iterator[str]:
    """Serve on a free port in a daemon thread; yields the base URL, stops on exit."""
    server = uvicorn.Server(_config(app, host, 0, log_level))
    thread = threading.Thread(target=server.run, name="geoscreen-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise ConfigError(
                "the review server did not start",
                where=f"{host}",
                fix="Check that the address is this machine's and the port is free (--port).",
            )
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
