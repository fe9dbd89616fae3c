"""Writing output files safely: whole or not at all."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

from geoscreen.errors import InputError


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], object]) -> None:
    """Call ``write(tmp_path)`` and move the result to ``path`` only if it succeeded.

    The temporary file sits beside the target (same file system, so the final
    rename is atomic) and is removed on any failure, Ctrl-C included.
    """
    target = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(parent):
        raise InputError(
            "output folder does not exist",
            where=parent,
            fix="Create it first or choose another --out.",
        )
    base, ext = os.path.splitext(os.path.basename(target))
    tmp = os.path.join(parent, f".{base}.partial-{os.getpid()}{ext}")
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
