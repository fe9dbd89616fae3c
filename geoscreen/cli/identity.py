"""Who is acting on the command line: the named user proves it, or the override is audited.

``review set``, ``review note``, ``review load``, ``export`` and the ``users`` commands
act for ``--user NAME``. Typing a name proves nothing, so the command needs NAME's
password (``--password-stdin``, or a prompt in a terminal). Whoever can write the store
file can change it anyway, so ``--as-admin-of-this-file`` skips the password, and every
audit entry the command writes carries ``"local_override": "local:<OS account>"`` (in
the same transaction): the change is on record as made on the file's authority, not as
proven by NAME.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, TypeVar

import click

from geoscreen.errors import ConfigError

if TYPE_CHECKING:
    from geoscreen.review.store import Store

F = TypeVar("F", bound=Callable[..., Any])
OVERRIDE = "--as-admin-of-this-file"
OVERRIDE_HELP = (
    "Act without NAME's password, on the authority of whoever can write the store file; "
    "recorded in the audit log as such."
)


def identity_options(func: F) -> F:
    """The ``--password-stdin`` and ``--as-admin-of-this-file`` options."""
    func = click.option("--as-admin-of-this-file", "override", is_flag=True, help=OVERRIDE_HELP)(
        func
    )
    return click.option(
        "--password-stdin", is_flag=True, help="Read NAME's password from the first line of stdin."
    )(func)


def read_password(user: str, *, from_stdin: bool, command: str, flag: str) -> str:
    """``user``'s password from stdin's next line or a terminal prompt; refused otherwise."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if sys.stdin.isatty():
        return str(click.prompt(f"password of {user}", hide_input=True, err=True))
    raise ConfigError(
        f"{command} acts for {user}, who must give a password",
        fix=f"Pipe it with {flag}, run in a terminal to be asked, or use {OVERRIDE} "
        "(recorded in the audit log as a local override).",
    )


def check_password(store: Store, user: str, password: str | None, *, override: bool
                   ) -> AbstractContextManager[None]:  # fmt: skip
    """Check ``user``'s password (read by :func:`read_password`), or mark the override.

    Use the result as a context around the command's writes.
    """
    from geoscreen.review import audit
    from geoscreen.review.users import authenticate, local_actor

    if override:
        return audit.local_override(local_actor())
    if not password or authenticate(store, user, password) is None:
        raise ConfigError(
            "wrong user name or password (or the user has none, or is disabled)",
            where=user,
            fix=f"Check the password (users get one with 'users add NAME --password-stdin'), "
            f"or use {OVERRIDE}.",
        )
    return nullcontext()


def confirm_identity(
    store: Store, user: str, *, password_stdin: bool, override: bool, command: str = ""
) -> AbstractContextManager[None]:
    """Check ``user``'s password, or mark the command's audit entries as a local override.

    Use the result as a context around the command's writes; refused without either.
    """
    password = None
    if not override:
        password = read_password(user, from_stdin=password_stdin, command=command,
                                 flag="--password-stdin")  # fmt: skip
    return check_password(store, user, password, override=override)


def need_actor(
    user: str | None, override: bool, command: str, role: str, password_stdin: bool = False
) -> None:
    """Refuse a command that names nobody and does not use the override, before any work."""
    if user is None and password_stdin:
        raise ConfigError(
            f"{command}: --password-stdin is the password of --user NAME, and no user is named",
            fix=f"Give --user NAME, or use {OVERRIDE} without --password-stdin.",
        )
    if user is None and not override:
        raise ConfigError(
            f"{command} must say who acts",
            fix=f"Give --user NAME ({_article(role)} {role}{'' if role == 'admin' else ' or above'}"
            f", with their password), or {OVERRIDE} to act as the OS account (recorded in the "
            "audit log as a local override).",
        )


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"
