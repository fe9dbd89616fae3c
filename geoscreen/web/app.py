"""The review server: ``create_app(store_url)`` builds the FastAPI app.

Every route needs a session except the login page and the login call (see
:mod:`geoscreen.web.guard`); decisions and notes go through the review workflow and
its audit log; views of evidence and imagery are audited too. The app holds its
sessions in memory: run it as one process (``geoscreen serve``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from geoscreen.profiles import load_profile
from geoscreen.review.store import Store, open_store
from geoscreen.web import routes_auth, routes_candidates, routes_imagery, routes_pages
from geoscreen.web.api import install_error_handlers
from geoscreen.web.auth import AuthSettings, LoginLimits, SessionStore
from geoscreen.web.candidate_index import CandidateIndex
from geoscreen.web.guard import Guard
from geoscreen.web.map_tiles import SceneIndex, TileSource
from geoscreen.web.state import ServerState

PathLike = str | os.PathLike[str]
ROUTERS = (routes_auth.router, routes_pages.router, routes_candidates.router, routes_imagery.router)


def web_dir() -> Path:
    """The package folder holding ``static/`` and ``templates/``."""
    return Path(str(resources.files("geoscreen") / "web"))


def profile_thresholds(paths: Sequence[PathLike]) -> dict[str, float]:
    """Score thresholds by profile name, from profile YAML files."""
    return {p.name: p.threshold for p in (load_profile(x, check_files=False) for x in paths)}


def create_app(
    store_url: PathLike | Store,
    *,
    scenes: Sequence[PathLike] | SceneIndex = (),
    profiles: Sequence[PathLike] = (),
    thresholds: Mapping[str, float] | None = None,
    evidence_root: PathLike | None = None,
    auth: AuthSettings | None = None,
) -> FastAPI:
    """The review app for a store (a path, URL or open :class:`Store`).

    ``scenes``: scene files or folders for imagery tiles, before the scene files the
    store knows (for files that moved). The queue orders by uncertainty around each
    profile's decision threshold: the one its latest run recorded in the store, else
    the one in ``profiles`` (profile files), else 0.5; ``thresholds`` overrides them all.
    ``evidence_root``: where relative evidence paths are looked for first (then
    the store's folder, then here).
    """
    store = store_url if isinstance(store_url, Store) else open_store(store_url)
    owns_store = not isinstance(store_url, Store)
    limits = {**profile_thresholds(profiles), **store.run_thresholds(), **(thresholds or {})}
    settings = auth or AuthSettings()
    scene_index = (
        scenes if isinstance(scenes, SceneIndex) else SceneIndex.from_paths(scenes, store=store)
    )
    state = ServerState(
        store=store,
        index=CandidateIndex(store, limits),
        tiles=TileSource(scene_index),
        sessions=SessionStore(settings),
        limits=LoginLimits(settings),
        auth=settings,
        templates=Jinja2Templates(directory=web_dir() / "templates"),
        evidence_root=Path(evidence_root).resolve() if evidence_root is not None else None,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        if owns_store:
            store.close()

    app = FastAPI(
        title="geoscreen review",
        summary="Review candidates that match a screening profile; people decide.",
        version="1",
        docs_url=None,  # the interactive docs load scripts from a CDN
        redoc_url=None,
        openapi_url=None,  # served behind the login at /api/openapi.json
        lifespan=lifespan,
    )
    app.state.geoscreen = state
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=web_dir() / "static"), name="static")
    app.add_middleware(Guard, state=state)
    return app


def serve(
    store_url: PathLike, *, host: str = "127.0.0.1", port: int = 8000, **options: Any
) -> None:
    """Build the app (``options`` as for :func:`create_app`) and serve it until interrupted."""
    from geoscreen.web.server import serve as run

    run(create_app(store_url, **options), host=host, port=port)
