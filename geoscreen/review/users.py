"""People using the store: roles, argon2 password hashes, enabling and disabling.

Roles, each including the ones before it: ``viewer`` (read), ``analyst`` (review,
notes, internal exports), ``supervisor`` (escalate, reopen, partner and public
exports), ``admin`` (everything). A user without a password can act through the CLI
(whoever holds the database file or URL can anyway) but cannot log in to the server.
Every change of a user is written to the audit log, with the SHA-256 of a new password
hash (:mod:`geoscreen.review.audit_digest`), so a hash replaced in place is found.
"""

from __future__ import annotations

import datetime as dt
import getpass
import re
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, insert, select, update

from geoscreen.errors import ConfigError
from geoscreen.review import audit
from geoscreen.review.audit_digest import password_digest
from geoscreen.review.errors import AccessError, NotFoundError
from geoscreen.review.records import ROLES, User
from geoscreen.review.schema import users
from geoscreen.review.store import Store

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MIN_PASSWORD_LENGTH = 10
_hasher = PasswordHasher()


def local_actor() -> str:
    """Who acts when a command names no user: the operating-system account."""
    try:
        return f"local:{getpass.getuser()}"
    except (KeyError, OSError):
        return "local:unknown"


def check_role(role: str) -> str:
    """``role`` if it is known, else a :class:`ConfigError`."""
    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r}", fix=f"Use one of {', '.join(ROLES)}.")
    return role


def check_new_user(name: str, role: str, password: str | None = None) -> None:
    """Refuse a bad name, role or password before anything is created."""
    check_role(role)
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"bad user name {name!r}",
            fix="Use 1-64 letters, digits, '_', '.', '@' or '-', starting with a letter or digit.",
        )
    if password is not None and len(password) < MIN_PASSWORD_LENGTH:
        raise ConfigError(
            "password too short",
            fix=f"Use at least {MIN_PASSWORD_LENGTH} characters (a few words make a good one).",
        )


def add_user(
    store: Store, name: str, role: str, *, password: str | None = None, actor: str | None = None
) -> User:
    """Create a user; the password (if any) is stored only as an argon2 hash."""
    check_new_user(name, role, password)
    hashed = None if password is None else _hash(password)
    now = dt.datetime.now(dt.UTC)
    with store.write() as conn:
        if conn.execute(select(users.c.id).where(users.c.name == name)).first() is not None:
            raise ConfigError(
                f"user {name!r} exists already",
                where=store.display,
                fix="Choose another name ('geoscreen users list' shows the taken ones).",
            )
        new_id = conn.execute(
            insert(users).values(
                name=name, role=role, password_hash=hashed, active=True, created_at=now
            )
        ).inserted_primary_key
        assert new_id is not None
        after: dict[str, object] = {
            "name": name, "role": role, "password": hashed is not None, "active": True
        }  # fmt: skip
        if hashed is not None:
            after["password_sha256"] = password_digest(hashed)
        audit.append(
            conn,
            actor=actor or local_actor(),
            action="user_add",
            entity="user",
            entity_id=name,
            after=after,
        )
        return User(id=int(new_id[0]), name=name, role=role, active=True, created_at=now)


def list_users(store: Store) -> list[User]:
    """Every user, by name."""
    with store.read() as conn:
        return [User.from_row(r) for r in conn.execute(select(users).order_by(users.c.name))]


def get_user(conn: Connection, name: str) -> User:
    """A user by name (:class:`NotFoundError` if unknown)."""
    row = conn.execute(select(users).where(users.c.name == name)).first()
    if row is None:
        raise NotFoundError(
            f"no user named {name!r}",
            fix="Add one with 'geoscreen users add NAME --role ROLE --user ADMIN' "
            "(or --as-admin-of-this-file instead of --user ADMIN).",
        )
    return User.from_row(row)


def require_user(conn: Connection, name: str, role: str, action: str) -> User:
    """The active user ``name`` holding at least ``role``, else :class:`AccessError`."""
    user = get_user(conn, name)
    if not user.active:
        raise AccessError(
            f"user {name!r} is disabled and cannot {action}",
            fix="Act as an active user, or ask an admin to enable this one again.",
        )
    if not user.has_role(role):
        raise AccessError(
            f"user {name!r} has the role {user.role}; to {action} needs {role} or above",
            fix=f"Act as a user with the role {role} or above.",
        )
    return user


def set_active(store: Store, name: str, active: bool, *, actor: str | None = None) -> User:
    """Disable (or enable again) a user; their history stays."""
    with store.write() as conn:
        user = get_user(conn, name)
        if user.active != active:
            conn.execute(update(users).where(users.c.id == user.id).values(active=active))
            audit.append(
                conn,
                actor=actor or local_actor(),
                action="user_enable" if active else "user_disable",
                entity="user",
                entity_id=name,
                before={"active": user.active},
                after={"active": active},
            )
        return get_user(conn, name)


def set_password(store: Store, name: str, password: str, *, actor: str | None = None) -> None:
    """Replace a user's password."""
    hashed = _hash(password)
    with store.write() as conn:
        user = get_user(conn, name)
        conn.execute(update(users).where(users.c.id == user.id).values(password_hash=hashed))
        audit.append(
            conn,
            actor=actor or local_actor(),
            action="user_password",
            entity="user",
            entity_id=name,
            after={"password": True, "password_sha256": password_digest(hashed)},
        )


def authenticate(store: Store, name: str, password: str) -> User | None:
    """The active user if the password matches, else ``None`` (same answer for unknown names)."""
    with store.read() as conn:
        row = conn.execute(select(users).where(users.c.name == name)).first()
    stored = row.password_hash if row is not None else None
    try:
        # Verify against a dummy hash for unknown users so timing does not tell names apart.
        _hasher.verify(stored or _dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        return None
    if row is None or stored is None or not row.active:
        return None
    if _hasher.check_needs_rehash(stored):  # same password, new parameters: audited too
        rehashed = _hash(password)
        with store.write() as conn:
            conn.execute(update(users).where(users.c.id == row.id).values(password_hash=rehashed))
            audit.append(
                conn,
                actor=name,
                action="user_password",
                entity="user",
                entity_id=name,
                after={"password": True, "password_sha256": password_digest(rehashed),
                       "rehash": True},
            )  # fmt: skip
    return User.from_row(row)


def _hash(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ConfigError(
            "password too short",
            fix=f"Use at least {MIN_PASSWORD_LENGTH} characters (a few words make a good one).",
        )
    return _hasher.hash(password)


@cache
def _dummy_hash() -> str:
    return _hasher.hash("geoscreen-no-such-user")
