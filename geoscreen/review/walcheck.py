"""Does the ``-wal`` file next to a SQLite store hold changes a reader did not use?

In WAL mode, committed changes live in ``<store>-wal`` until a checkpoint copies them
into the store file. SQLite reads a WAL frame only if its salts match the WAL header
and its checksum chain holds, and only up to the last *commit* frame; anything else
is skipped without a word. So a WAL copied apart from its store, cut short, or half
overwritten can hide committed audit entries while ``audit verify`` reports a
consistent (shorter) chain. This module reads the WAL as SQLite would
(https://www.sqlite.org/fileformat.html#the_write_ahead_log) and says what was left
unused. Frames of older WAL generations (other salts) are normal after a checkpoint
and ignored here too; a frame of the current generation past the last commit is not
(a torn copy, or a write in progress while this ran).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

WAL_HEADER = 32
FRAME_HEADER = 24
MAGIC = {0x377F0682: "<", 0x377F0683: ">"}  # checksum byte order
MAX_CHECKED_BYTES = 32 << 20  # beyond this only salts are compared (checksums: ~0.1 s per MB)


@dataclass(frozen=True)
class WalState:
    """What a WAL file holds and how much of it a reader uses."""

    path: str
    size: int
    frames: int  # whole frames in the file
    used: int  # frames up to the last valid commit of the current generation
    unused: int  # current-generation frames after that, or failing their checksum
    partial_bytes: int  # bytes of a frame cut short at the end
    readable: bool  # the header is a valid WAL header

    @property
    def hides_data(self) -> bool:
        """Whether part of the file is current data that readers skip."""
        return (not self.readable and self.size > 0) or self.unused > 0 or self.partial_bytes > 0

    def describe(self) -> str:
        """One line for a warning."""
        if not self.readable:
            return (
                f"{self.path} ({self.size} bytes) is not a WAL file SQLite can use: "
                "what it holds was not read"
            )
        cut = f", and {self.partial_bytes} bytes of a frame cut short" if self.partial_bytes else ""
        return (
            f"{self.path}: {self.unused} of {self.frames} frames were not read "
            f"(after the last complete commit or failing their checksum){cut}"
        )


def wal_path(store_file: str | os.PathLike[str]) -> Path:
    """Where SQLite keeps the store's write-ahead log."""
    return Path(f"{os.fspath(store_file)}-wal")


def inspect_wal(store_file: str | os.PathLike[str]) -> WalState | None:
    """The state of the store's WAL file, or ``None`` when there is none (or it is empty)."""
    path = wal_path(store_file)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    if size == 0:
        return None
    with open(path, "rb") as f:
        header = f.read(WAL_HEADER)
        parsed = _header(header)
        if parsed is None:
            return WalState(str(path), size, 0, 0, 0, 0, readable=False)
        order, page_size, salts, checksum = parsed
        frame_size = FRAME_HEADER + page_size
        frames, partial = divmod(size - WAL_HEADER, frame_size)
        check = size <= MAX_CHECKED_BYTES
        used = current = 0
        broken = False
        for index in range(1, frames + 1):
            frame = f.read(frame_size)
            page_no, commit_size, salt1, salt2, sum1, sum2 = struct.unpack(">6I", frame[:24])
            if (salt1, salt2) != salts:
                continue  # an older generation: SQLite stops here, and so it should
            current = index
            if broken:
                continue
            if check:
                checksum = _checksum(frame[:8] + frame[FRAME_HEADER:], order, checksum)
                if checksum != (sum1, sum2) or page_no == 0:
                    broken = True
                    continue
            if commit_size:
                used = index
    unused = max(current - used, 0)
    return WalState(str(path), size, frames, used, unused, partial, readable=True)


def _header(data: bytes) -> tuple[str, int, tuple[int, int], tuple[int, int]] | None:
    """(checksum byte order, page size, salts, header checksum), or None if not a WAL."""
    if len(data) < WAL_HEADER:
        return None
    magic, _version, page_size, _seq, salt1, salt2, sum1, sum2 = struct.unpack(">8I", data)
    order = MAGIC.get(magic)
    valid_size = page_size >= 512 and page_size & (page_size - 1) == 0 and page_size <= 65536
    if order is None or not valid_size or _checksum(data[:24], order, (0, 0)) != (sum1, sum2):
        return None
    return order, page_size, (salt1, salt2), (sum1, sum2)


def _checksum(data: bytes, order: str, seed: tuple[int, int]) -> tuple[int, int]:
    """SQLite's WAL checksum (two running 32-bit sums over pairs of words)."""
    s0, s1 = seed
    words = struct.unpack(f"{order}{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def unread_wal_warning(db: str) -> str | None:
    """A warning when the store named by ``--db`` is a SQLite file whose WAL hides data."""
    from geoscreen.review.db import resolve_url

    url = resolve_url(db)
    if url.get_backend_name() != "sqlite" or not url.database:
        return None
    state = inspect_wal(str(url.database))
    if state is None or not state.hides_data:
        return None
    return (
        f"{state.describe()}; the audit chain checked below covers only what SQLite reads. "
        "If this store is a copy, copy it again with 'geoscreen review backup'."
    )
