"""Errors of the review store: each one is a user error (one line, exit 2 in the CLI)."""

from __future__ import annotations

from geoscreen.errors import GeoscreenError, InputError


class StoreError(InputError):
    """The database cannot be opened or used: unreachable, not a store, not writable."""


class NotFoundError(GeoscreenError):
    """An unknown candidate, user or run."""


class TransitionError(GeoscreenError):
    """A status change the workflow does not allow (or a missing reason)."""


class AccessError(GeoscreenError):
    """A user without the role (or disabled) tried to do something."""


class ConflictError(GeoscreenError):
    """The candidate changed since the caller read it (stale version): nothing was written."""

    def __init__(self, what: str, *, current_version: int, where: str | None = None) -> None:
        self.current_version = current_version
        super().__init__(what, where=where, fix="Reload the candidate and decide again.")
