"""Writing output files safely: whole or not at all."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

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


def _probe(folder: Path, option: str) -> None:
    """Create and remove a temporary folder in ``folder``: the only sure test of writing."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".geoscreen-probe-", dir=folder))
    except OSError as exc:
        raise InputError(
            f"cannot write here ({exc.strerror or type(exc).__name__})",
            where=str(folder),
            fix=f"Choose a {option} in a folder you can write to.",
        ) from None


def check_output_dir(path: str | os.PathLike[str], option: str = "--out") -> Path:
    """Refuse, before any work, an output folder that is a file or cannot be written.

    Nothing is created: a missing folder is checked by writing to its nearest existing
    parent, and made later by the command itself.
    """
    target = Path(os.path.abspath(path))
    if target.exists() and not target.is_dir():
        raise InputError("is a file, not a folder", where=str(path),
                         fix=f"Give a new or existing folder as {option}.")  # fmt: skip
    existing = target
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{existing} is a file, so no folder can be made inside it",
                         where=str(path), fix=f"Choose another {option}.")  # fmt: skip
    _probe(existing, option)
    return Path(path)


def check_output_file(path: str | os.PathLike[str], option: str = "--out") -> Path:
    """Refuse, before any work, an output file that is a folder or cannot be written."""
    target = Path(os.path.abspath(path))
    if target.is_dir():
        raise InputError("is a folder", where=str(path), fix=f"Give a file name as {option}.")
    if not target.parent.is_dir():
        raise InputError("output folder does not exist", where=str(target.parent),
                         fix=f"Create it first or choose another {option}.")  # fmt: skip
    _probe(target.parent, option)
    return Path(path)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
