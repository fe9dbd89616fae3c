"""A secret key, kept outside the store, that signs every new audit entry (HMAC-SHA256).

The hash chain proves order and integrity, but anyone who can write the store can
append an entry with a correct hash. With a key, each entry also carries
``mac = HMAC(key, entry hash)``; since the hash covers the entry and everything before
it, a forged, edited or re-chained entry fails ``audit verify`` without the key.

The key lives in a file named by ``$GEOSCREEN_AUDIT_KEY_FILE`` (made by ``geoscreen
audit keygen``, readable by its owner only) in the environment of every process that
writes the store (server, CLI, scans) and of ``audit verify``. It protects against
someone with the database but not the key (a database administrator, a copied
backup, a stolen laptop disk without the key folder). It cannot protect against
someone who has both the key and the database: they can sign anything.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from functools import lru_cache
from pathlib import Path

from geoscreen.errors import ConfigError

ENV_KEY_FILE = "GEOSCREEN_AUDIT_KEY_FILE"
KEY_BYTES = 32
_FIX_MAKE = "Make one with 'geoscreen audit keygen --out FILE'."


def make_key(path: str | Path) -> Path:
    """Write a new random key (hex) readable and writable by the owner only."""
    target = Path(path)
    if target.exists():
        raise ConfigError(
            "file exists", where=str(target),
            fix="Give a new --out; never replace a key in use (its entries could no longer "
            "be checked).",
        )  # fmt: skip
    if not target.parent.is_dir():
        raise ConfigError("folder does not exist", where=str(target.parent),
                          fix="Create it first or choose another --out.")  # fmt: skip
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(secrets.token_hex(KEY_BYTES) + "\n")
    return target


def load_key(path: str | Path) -> bytes:
    """Read a key file, refusing one that others may read."""
    source = Path(path)
    try:
        mode = source.stat().st_mode
        text = source.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not a key file"
        raise ConfigError(f"cannot read the audit key ({reason})", where=str(source),
                          fix=f"Check ${ENV_KEY_FILE}. {_FIX_MAKE}") from None  # fmt: skip
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError("the audit key file can be read by others", where=str(source),
                          fix=f"Run 'chmod 600 {source}'.")  # fmt: skip
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise ConfigError("not an audit key file", where=str(source), fix=_FIX_MAKE)
    return key


def env_key() -> bytes | None:
    """The key named by ``$GEOSCREEN_AUDIT_KEY_FILE``, or ``None`` when it is not set."""
    path = os.environ.get(ENV_KEY_FILE)
    if not path:
        return None
    try:
        changed = os.stat(path).st_mtime_ns
    except OSError:
        changed = -1  # load_key says what is wrong
    return _cached_key(path, changed)


@lru_cache(maxsize=4)
def _cached_key(path: str, changed: int) -> bytes:
    return load_key(path)


def entry_mac(key: bytes, entry_hash: str) -> str:
    """The MAC of an entry: HMAC-SHA256 of its chain hash."""
    return hmac.new(key, entry_hash.encode("ascii"), hashlib.sha256).hexdigest()


def mac_matches(key: bytes, entry_hash: str, mac: str) -> bool:
    """Constant-time check of an entry's MAC."""
    return hmac.compare_digest(entry_mac(key, entry_hash), mac)
