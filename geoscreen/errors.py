"""User-facing errors: what went wrong, where, and how to fix it.

The CLI turns a :class:`GeoscreenError` into one line on stderr and exit code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class GeoscreenError(Exception):
    """An error caused by the user's input or environment, not by geoscreen."""

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None) -> None:
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        text = f"{self.where}: {self.what}" if self.where else self.what
        if self.fix:
            text = text.rstrip(".")
            text = f"{text}{' ' if text.endswith(('?', '!')) else '. '}{self.fix}"
        return text


class InputError(GeoscreenError):
    """Bad input data: a file that is missing, unreadable or of the wrong kind."""


class ConfigError(GeoscreenError):
    """A profile, option or setting that cannot be used."""
