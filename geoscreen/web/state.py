"""What the review server's routes share: the store, the indexes, sessions, settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.templating import Jinja2Templates

from geoscreen.review.records import Candidate
from geoscreen.review.store import Store
from geoscreen.web.auth import AuthSettings, LoginLimits, Session, SessionStore
from geoscreen.web.candidate_index import CandidateIndex
from geoscreen.web.map_tiles import TileSource
from geoscreen.web.model_history import ModelWatch
from geoscreen.web.scenes import SceneCatalog


@dataclass
class ServerState:
    """One per app (``app.state.geoscreen``)."""

    store: Store
    index: CandidateIndex
    tiles: TileSource
    sessions: SessionStore
    limits: LoginLimits
    auth: AuthSettings
    templates: Jinja2Templates
    evidence_root: Path | None = None
    models: ModelWatch = field(default_factory=ModelWatch)  # decisions since each model

    @property
    def scenes(self) -> SceneCatalog:
        """The store's scenes, with their imagery on this server."""
        return SceneCatalog(self.store, self.tiles)

    def evidence_file(self, found: Candidate) -> Path | None:
        """The candidate's chip (PNG) if it is on this server: a relative path is looked
        for under ``evidence_root``, then the store's folder, then here."""
        path = self.store.locate(found.evidence_path, (self.evidence_root,))
        return path if path is not None and path.suffix.lower() == ".png" else None


def server(request: Request) -> ServerState:
    """Dependency: the app's shared state."""
    state: ServerState = request.app.state.geoscreen
    return state


def session(request: Request) -> Session:
    """Dependency: the session the guard found (every non-public route has one)."""
    found = request.scope.get("state", {}).get("session")
    if not isinstance(found, Session):
        raise HTTPException(401, "not logged in")
    return found


State = Annotated[ServerState, Depends(server)]
Who = Annotated[Session, Depends(session)]
