"""``geoscreen review purge``: delete evidence chips past their profile's retention period.

See :mod:`geoscreen.review.retention` for what goes, what stays and how it is audited.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import click

from geoscreen.cli.identity import OVERRIDE, confirm_identity, identity_options
from geoscreen.cli.options import db_option, json_option
from geoscreen.cli.review import _echo_json, open_store, review
from geoscreen.errors import ConfigError


def _limits(files: tuple[Path, ...]) -> dict[str, int | None]:
    """Each profile's ``review.retain_evidence_days``, by profile name."""
    from geoscreen.profiles import load_profile

    limits: dict[str, int | None] = {}
    for path in files:
        found = load_profile(path, check_files=False)
        days = found.review.retain_evidence_days
        if found.name in limits and limits[found.name] != days:
            raise ConfigError(
                f"two profiles named {found.name!r} with different retention periods "
                f"({limits[found.name]} and {days} days)",
                where=str(path),
                fix="Give each profile once (--profile FILE).",
            )
        limits[found.name] = days
    return limits


@review.command("purge")
@click.option(
    "--profile",
    "profiles",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="A profile whose review.retain_evidence_days applies to its candidates (repeatable).",
)
@click.option(
    "--evidence-root",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    metavar="DIR",
    help="Where relative evidence paths are looked for first (as for 'geoscreen serve').",
)
@click.option("--dry-run", is_flag=True, help="List what would go; change nothing.")
@click.option(
    "--user",
    default=None,
    metavar="NAME",
    help="Who purges: a supervisor, with their password or --as-admin-of-this-file "
    "(default: the OS account).",
)
@identity_options
@db_option
@json_option
def purge(
    profiles: tuple[Path, ...],
    evidence_root: Path | None,
    dry_run: bool,
    user: str | None,
    password_stdin: bool,
    override: bool,
    db: str,
    as_json: bool,
) -> None:
    """Delete evidence chips of rejected candidates and of candidates whose chips are older
    than their profile's review.retain_evidence_days; hashes and audit entries stay."""
    from geoscreen.review.retention import purge as purge_
    from geoscreen.review.users import local_actor

    limits = _limits(profiles)
    if user is None and (password_stdin or override):
        raise ConfigError(
            f"--password-stdin and {OVERRIDE} go with --user NAME",
            fix="Name the supervisor who purges, or leave both out to act as the OS account.",
        )
    with open_store(db) as store:
        acting: AbstractContextManager[None] = nullcontext()
        if user is not None:
            from geoscreen.review.users import require_user

            with store.read() as conn:
                require_user(conn, user, "supervisor", "purge evidence")
            acting = confirm_identity(store, user, password_stdin=password_stdin,
                                      override=override, command="review purge")  # fmt: skip
        from tqdm import tqdm

        with acting, tqdm(desc="purging", unit="candidate", delay=2, leave=False) as bar:

            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            result = purge_(
                store, limits, actor=user or local_actor(), dry_run=dry_run,
                roots=(evidence_root.resolve(),) if evidence_root else (), progress=progress,
            )  # fmt: skip
    if as_json:
        _echo_json(result.to_dict())
        return
    if dry_run:
        for item in result.items:
            click.echo(f"{item.candidate_id:>7}  {item.reason:<22} {item.file}")
    verb = "would delete" if dry_run else "deleted"
    click.echo(
        f"{verb} {result.files} evidence chips ({result.bytes / 1e6:.1f} MB) of "
        f"{result.candidates} candidates ({result.rejected_candidates} rejected, "
        f"{result.expired_candidates} past their retention period)"
        + (f"; kept {result.kept_shared} still in use" if result.kept_shared else "")
        + (f"; left {result.not_chips} files that are not PNG chips" if result.not_chips else "")
        + ("" if dry_run else f"; audit entry {result.audit_seq}")
    )
