"""Content ids of scene files remembered between scans, so unchanged files are not re-read.

A scene's id comes from its pixels (:func:`geoscreen.imagery.scene.open_scene` reads a
grid of sampled blocks), so a renamed file is still the same scene. Decoding those
blocks is most of what checking an already screened scene costs. This cache keeps each
local file's id under its real path, size and modification time (nanoseconds), the
quick check ``make`` and ``rsync`` rely on: a file rewritten in place gets a new size or
time and is read again. Virtual GDAL paths (``/vsi...``, URLs) are never cached.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from types import TracebackType

from geoscreen.imagery.scene import CONTENT_ID_SCHEME

CACHE_FILE = "scene_ids.sqlite"


class SceneIdCache:
    """A small SQLite file mapping (path, size, mtime) to a scene's content id."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, timeout=30.0)
        with self._conn:
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS scene_ids (path TEXT PRIMARY KEY, size INTEGER, "
                "mtime_ns INTEGER, scheme TEXT, scene_id TEXT)"
            )

    @staticmethod
    def _stat(uri: str) -> tuple[str, int, int] | None:
        if uri.startswith("/vsi") or "://" in uri:
            return None
        try:
            real = os.path.realpath(uri)
            st = os.stat(real)
        except OSError:
            return None
        return real, st.st_size, st.st_mtime_ns

    def get(self, uri: str) -> str | None:
        """The id recorded for ``uri`` if the file is unchanged since, else ``None``."""
        key = self._stat(uri)
        if key is None:
            return None
        row = self._conn.execute(
            "SELECT size, mtime_ns, scheme, scene_id FROM scene_ids WHERE path = ?", (key[0],)
        ).fetchone()
        if row is None or (row[0], row[1], row[2]) != (key[1], key[2], CONTENT_ID_SCHEME):
            return None
        return str(row[3])

    def put(self, uri: str, scene_id: str) -> None:
        """Remember ``scene_id`` for the file as it is now."""
        key = self._stat(uri)
        if key is None:
            return
        with self._conn:
            self._conn.execute(
                "INSERT OR REPLACE INTO scene_ids VALUES (?, ?, ?, ?, ?)",
                (*key, CONTENT_ID_SCHEME, scene_id),
            )

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> SceneIdCache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
