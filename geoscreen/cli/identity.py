"""Who is acting on the command line: the named user proves it, or the override is audited.

``review set``, ``review note`` and ``export`` act for ``--user NAME``. Typing a name
proves nothing, so the command needs NAME's password (``--password-stdin``, or a prompt
in a terminal). Whoever can write the store file can change it anyway, so
``--as-admin-of-this-file`` skips the password, and every audit entry the command
writes carries ``"local_override": "local:<OS account>"`` (in the same transaction):
the decision is on record as made on the file's authority, not as proven by NAME.
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


def identity_options(func: F) -> F:
    """The ``--password-stdin`` and ``--as-admin-of-this-file`` options."""
    func = click.option(
        "--as-admin-of-this-file", "override", is_flag=True,
        help="Act without NAME's password, on the authority of whoever can write the "
             "store file; recorded in the audit log as such.",
    )(func)  # fmt: skip
    return click.option(
        "--password-stdin", is_flag=True, help="Read NAME's password from the first line of stdin."
    )(func)


def confirm_identity(
    store: Store, user: str, *, password_stdin: bool, override: bool, command: str = ""
) -> AbstractContextManager[None]:
    """Check ``user``'s password, or mark the command's audit entries as a local override.

    Use the result as a context around the command's writes; refused without either.
    """
    from geoscreen.review import audit
    from geoscreen.review.users import authenticate, local_actor

    if override:
        return audit.local_override(local_actor())
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = click.prompt(f"password of {user}", hide_input=True, err=True)
    else:
        raise ConfigError(
            f"{command} acts for {user}, who must give a password",
            fix=f"Pipe it with --password-stdin, run in a terminal to be asked, or use {OVERRIDE} "
            "(recorded in the audit log as a local override).",
        )
    if not password or authenticate(store, user, password) is None:
        raise ConfigError(
            "wrong user name or password (or the user has none, or is disabled)",
            where=user,
            fix=f"Check the password (users get one with 'users add NAME --password-stdin'), "
            f"or use {OVERRIDE}.",
        )
    return nullcontext()
