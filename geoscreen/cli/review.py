"""``geoscreen review``, ``export``, ``audit`` and ``users``: the review store from the shell.

``--db`` takes a SQLite path or a ``postgresql://`` URL; it defaults to
``$GEOSCREEN_DB``, then ``./geoscreen.sqlite``. Only ``review load`` and ``users add``
create a store, and only on the file's authority (``--as-admin-of-this-file``, without
``--user``); the other commands refuse a path or database without one.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from geoscreen.cli.app import cli
from geoscreen.cli.identity import (
    OVERRIDE_HELP,
    check_password,
    confirm_identity,
    identity_options,
    need_actor,
    read_password,
)
from geoscreen.cli.options import db_option, json_option
from geoscreen.errors import ConfigError, InputError
from geoscreen.review.records import ORDERS, ROLES, STATUSES

if TYPE_CHECKING:  # the store pulls in SQLAlchemy and alembic: imported when a command runs
    from geoscreen.review.records import Candidate
    from geoscreen.review.store import CandidateFilter, Store

F = TypeVar("F", bound=Callable[..., Any])


def _echo_json(payload: Any) -> None:
    click.echo(json.dumps(payload, indent=2, ensure_ascii=False))


def parse_when(text: str | None) -> dt.datetime | None:
    """An ISO 8601 date or time (UTC unless it says otherwise)."""
    if text is None:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(f"not a date: {text!r}", fix="Use YYYY-MM-DD or an ISO time.") from exc
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when


def make_filter(
    statuses: tuple[str, ...],
    profile: str | None,
    bbox: str | None,
    since: str | None,
    until: str | None,
) -> CandidateFilter:
    """A :class:`CandidateFilter` from command-line options."""
    from geoscreen.review.spatial import BBox
    from geoscreen.review.store import CandidateFilter

    return CandidateFilter(
        statuses=statuses,
        profile=profile,
        bbox=BBox.parse(bbox) if bbox else None,
        since=parse_when(since),
        until=parse_when(until),
    )


def filter_options(func: F) -> F:
    """``--status``, ``--profile``, ``--bbox``, ``--since``, ``--until``."""
    for option in reversed(
        (
            click.option(
                "--status",
                "statuses",
                multiple=True,
                metavar="STATUS",
                help=f"Only this status (repeatable): {', '.join(STATUSES)}.",
            ),
            click.option("--profile", default=None, metavar="NAME", help="Only this profile."),
            click.option(
                "--bbox",
                default=None,
                metavar="MINLON,MINLAT,MAXLON,MAXLAT",
                help="Only candidates overlapping this box.",
            ),
            click.option("--since", default=None, metavar="DATE", help="Last seen on or after."),
            click.option("--until", default=None, metavar="DATE", help="Last seen on or before."),
        )
    ):
        func = option(func)
    return func


def open_store(db: str, *, create: bool = False) -> Store:
    """Open the store named by ``--db`` (imports the database layer on first use)."""
    from geoscreen.review.store import open_store as open_

    return open_(db, create=create)


# -- review ------------------------------------------------------------------------------
@cli.group()
def review() -> None:
    """Candidates that match a profile, and what people decided about them."""


@review.command("load")
@click.argument("sites", type=click.Path(dir_okay=False, path_type=Path))
@db_option
@click.option("--profile", default=None, metavar="NAME", help="Profile (if the file lacks it).")
@click.option("--run-id", default=None, metavar="ID", help="Run id (if the file lacks it).")
@click.option("--user", default=None, metavar="NAME",
              help="Who loads: an analyst or above, with their password.")  # fmt: skip
@identity_options
@json_option
def load(
    sites: Path, db: str, profile: str | None, run_id: str | None, user: str | None,
    password_stdin: bool, override: bool, as_json: bool,
) -> None:  # fmt: skip
    """Load screening results (sites); loading the same run again changes nothing.

    Needs --user NAME with NAME's password, or --as-admin-of-this-file (acting as
    NAME, or as the OS account without --user). Only the override creates a new store.
    """
    from geoscreen.review.loader import load_sites, prepare_sites
    from geoscreen.review.users import local_actor

    need_actor(user, override, "review load", "analyst", password_stdin)
    prepared = prepare_sites(sites, profile=profile, run_id=run_id)  # before any store
    password = None
    if user is not None and not override:
        password = read_password(user, from_stdin=password_stdin, command="review load",
                                 flag="--password-stdin")  # fmt: skip
    # NAME must be in the store already, so only a load on the file's authority creates one
    with open_store(db, create=user is None) as store:
        if user is not None:
            from geoscreen.review.users import require_user

            with store.read() as conn:
                require_user(conn, user, "analyst", "load runs")
        acting = check_password(store, user or local_actor(), password, override=override)

        def progress(done: int, total: int) -> None:
            click.echo(f"loading: {done}/{total} sites", err=True)

        with acting:
            result = load_sites(store, prepared, actor=user or local_actor(), progress=progress)
    if prepared.threshold is not None:  # an objects table: those below it stay out
        click.echo(
            f"geoscreen: note: {prepared.below_threshold} objects scoring below the threshold "
            f"in force when screened ({prepared.threshold:g}, recorded in the file) not loaded",
            err=True,
        )
    if as_json:
        _echo_json({**result.to_dict(), "objects_below_threshold": prepared.below_threshold})
    elif result.already_loaded:
        click.echo(f"run {result.run_id} is already loaded: nothing changed")
    else:
        click.echo(
            f"run {result.run_id}: {result.sites} sites matching profile {result.profile} "
            f"({result.new} new, {result.seen_again} seen before) "
            f"in {result.seconds:.1f} s"
        )


@review.command("list")
@db_option
@filter_options
@click.option(
    "--order", default="score", show_default=True, metavar="|".join(ORDERS), help="Sort order."
)
@click.option("--limit", default=50, show_default=True, help="At most this many (0: all).")
@json_option
def list_(
    db: str,
    statuses: tuple[str, ...],
    profile: str | None,
    bbox: str | None,
    since: str | None,
    until: str | None,
    order: str,
    limit: int,
    as_json: bool,
) -> None:
    """List candidates, best score first."""
    where = make_filter(statuses, profile, bbox, since, until)
    with open_store(db) as store:
        found = store.candidates(where, order=order, limit=limit or None)
        total = store.count(where)
        retrain = _since_model(store, profile) if profile else None
    if as_json:
        payload = {"total": total, "candidates": [c.to_dict(geometry=False) for c in found]}
        _echo_json({**payload, "since_model": retrain} if retrain else payload)
        return
    click.echo(
        f"{'ID':>7}  {'STATUS':<13} {'SCORE':>6} {'VER':>4}  {'LAST SEEN':<10}  PROFILE / SITE"
    )
    for c in found:
        seen = c.last_seen.date().isoformat() if c.last_seen else "-"
        score = f"{c.score:.3f}" if c.score is not None else "-"
        flag = f"  [{c.below_threshold}]" if c.below_threshold else ""
        click.echo(
            f"{c.id:>7}  {c.status:<13} {score:>6} {c.version:>4}  {seen:<10}  "
            f"{c.profile} / {c.site_id}{flag}"
        )
    if retrain:
        model = (
            f"the model trained from the store at audit entry {retrain['model_audit_seq']}"
            if retrain["model_audit_seq"]
            else "the current model (none trained from this store yet)"
        )
        click.echo(
            f"{retrain['decisions']} decisions on {profile} since {model}; retrain with: "
            f"geoscreen train PROFILE.yaml --from-store {db} --out NEW_MODEL_DIR"
        )
    click.echo(f"{len(found)} of {total} candidates (each only matches a profile; people decide)")


def _since_model(store: Store, profile: str) -> dict[str, Any]:
    """Decisions on ``profile`` after its newest training from the store (all, if none)."""
    from geoscreen.review.trainlabels import decisions_since, last_training

    trained = last_training(store, profile)
    seq = int(trained["seq"]) if trained else 0
    return {
        "decisions": decisions_since(store, profile, seq),
        "model_audit_seq": seq or None,
        "model_sha256": trained["model_sha256"] if trained else None,
    }


@review.command("show")
@click.argument("candidate_id", metavar="ID", type=int)
@db_option
@json_option
def show(candidate_id: int, db: str, as_json: bool) -> None:
    """One candidate with its score history (which model gave which score) and its
    review history."""
    with open_store(db) as store:
        found = store.candidate(candidate_id)
        events = store.history(candidate_id)
        scores = store.score_history(candidate_id)
        warnings = store.scene_warnings(candidate_id)
    if as_json:
        _echo_json(
            {
                **found.to_dict(),
                "scene_warnings": warnings,
                "scores": [s.to_dict() for s in scores],
                "history": [e.to_dict() for e in events],
            }
        )
        return
    click.echo(_describe(found))
    for line in warnings:  # the scan that last found it: scene unlike the training data,
        click.echo(f"warning:    {line}")  # or a model no better than its baselines
    click.echo("scores:" if scores else "scores: none recorded")
    for entry in scores:
        click.echo(f"  {entry.describe()}")
    click.echo("history:" if events else "history: none yet")
    for event in events:
        click.echo(f"  {event.describe()}")


def _describe(c: Candidate) -> str:
    version = f" v{c.profile_version}" if c.profile_version else ""
    changed = (
        f", by {c.status_changed_by} at {c.status_changed_at:%Y-%m-%d %H:%M}"
        if (c.status_changed_at and c.status_changed_by)
        else ""
    )
    score = "-" if c.score is None else f"{c.score:.3f}"
    lines = [
        f"candidate {c.id}: {c.match}{version} (site {c.site_id})",
        f"status:     {c.status} (version {c.version}{changed})",
        f"score:      {score}" + (f", mean {c.score_mean:.3f}" if c.score_mean is not None else ""),
        f"location:   lon {c.lon:.6f}, lat {c.lat:.6f}; box {c.minx:.6f},{c.miny:.6f},"
        f"{c.maxx:.6f},{c.maxy:.6f}",
        f"seen:       first {_day(c.first_seen)}, last {_day(c.last_seen)}; scene "
        f"{c.scene_id or '-'} acquired {_day(c.acquired)}",
        f"model:      {c.model_sha256 or '-'}",
        f"evidence:   {c.evidence_path or '-'}",
    ]
    if c.below_threshold:
        lines.insert(3, f"flag:       {c.below_threshold} (kept; decisions unchanged)")
    if c.area_m2 is not None:
        lines.insert(3, f"area:       {c.area_m2:.0f} m2, {c.tile_count or '-'} tiles")
    return "\n".join(lines)


def _day(value: dt.datetime | None) -> str:
    return value.date().isoformat() if value else "-"


@review.command("set")
@click.argument("candidate_id", metavar="ID", type=int)
@click.argument("status", metavar="STATUS")
@click.option(
    "--reason",
    default=None,
    metavar="TEXT",
    help="Why (needed to confirm, reject, escalate, reopen).",
)
@click.option("--user", required=True, metavar="NAME", help="Who decides.")
@identity_options
@click.option(
    "--expected-version",
    type=int,
    default=None,
    metavar="N",
    help="The version you looked at; a newer one is a conflict.",
)
@db_option
@json_option
def set_(
    candidate_id: int,
    status: str,
    reason: str | None,
    user: str,
    password_stdin: bool,
    override: bool,
    expected_version: int | None,
    db: str,
    as_json: bool,
) -> None:
    """Change a candidate's status (new, in_review, confirmed, rejected, needs_imagery,
    escalated); needs NAME's password or --as-admin-of-this-file.

    A decision on a new candidate first takes it into review (as the review page does);
    both steps are recorded.
    """
    from geoscreen.review.workflow import check_status, set_status

    check_status(status)
    with open_store(db) as store:
        before = store.candidate(candidate_id).status
        acting = confirm_identity(store, user, password_stdin=password_stdin,
                                  override=override, command="review set")  # fmt: skip
        with acting:
            found = set_status(
                store, candidate_id, status, user=user, reason=reason,
                expected_version=expected_version, claim=True,
            )  # fmt: skip
    if as_json:
        _echo_json(found.to_dict(geometry=False))
    else:
        steps = f"{before} -> in_review -> " if before == "new" and status != "in_review" else ""
        click.echo(f"candidate {found.id}: {steps}{found.status} (version {found.version})")


@review.command("note")
@click.argument("candidate_id", metavar="ID", type=int)
@click.argument("text", metavar="TEXT")
@click.option("--user", required=True, metavar="NAME", help="Who writes the note.")
@identity_options
@db_option
def note(
    candidate_id: int, text: str, user: str, password_stdin: bool, override: bool, db: str
) -> None:
    """Add a note to a candidate (needs NAME's password or --as-admin-of-this-file)."""
    from geoscreen.review.workflow import add_note

    with open_store(db) as store:
        acting = confirm_identity(store, user, password_stdin=password_stdin,
                                  override=override, command="review note")  # fmt: skip
        with acting:
            event = add_note(store, candidate_id, text, user=user)
    click.echo(f"candidate {candidate_id}: note {event.id} added")


@review.command("history")
@click.argument("candidate_id", metavar="ID", type=int)
@db_option
@json_option
def history(candidate_id: int, db: str, as_json: bool) -> None:
    """Status changes and notes of a candidate, oldest first."""
    with open_store(db) as store:
        events = store.history(candidate_id)
    if as_json:
        _echo_json([e.to_dict() for e in events])
        return
    for event in events:
        click.echo(event.describe())
    if not events:
        click.echo(f"candidate {candidate_id}: no review events yet")


# -- export ------------------------------------------------------------------------------
@cli.command("export")
@db_option
@click.option(
    "--format",
    "fmt",
    default=None,
    metavar="geojson|gpkg|parquet|csv|kml",
    help="Output format (default: from the --out suffix).",
)
@click.option(
    "--redaction",
    default="internal",
    show_default=True,
    metavar="internal|partner|public",
    help="How much of each location to show.",
)
@click.option(
    "--min-m",
    type=float,
    default=500.0,
    show_default=True,
    help="partner: smallest displacement in metres.",
)
@click.option(
    "--max-m",
    type=float,
    default=2000.0,
    show_default=True,
    help="partner: largest displacement in metres.",
)
@click.option(
    "--grid-m",
    type=float,
    default=10_000.0,
    show_default=True,
    help="public: grid cell size in metres.",
)
@click.option(
    "--min-count",
    type=int,
    default=3,
    show_default=True,
    help="public: cells with fewer candidates show no count.",
)
@click.option(
    "--regions",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="public: count per polygon of this file instead of a grid.",
)
@click.option(
    "--area",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Only candidates inside these polygons (any vector file).",
)
@filter_options
@click.option("--seed", type=int, default=None,
              help="partner: seed of the row order (default: random); each candidate's "
                   "displaced point is fixed by the store's secret.")  # fmt: skip
@click.option("--user", required=True, metavar="NAME", help="Who exports (recorded).")
@identity_options
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Output file (written whole or not at all).",
)
@json_option
def export(
    db: str,
    fmt: str | None,
    redaction: str,
    min_m: float,
    max_m: float,
    grid_m: float,
    min_count: int,
    regions: Path | None,
    area: Path | None,
    statuses: tuple[str, ...],
    profile: str | None,
    bbox: str | None,
    since: str | None,
    until: str | None,
    seed: int | None,
    user: str,
    password_stdin: bool,
    override: bool,
    out: Path,
    as_json: bool,
) -> None:
    """Export candidates; every export is recorded in the audit log with its sha256.

    Needs NAME's password or --as-admin-of-this-file.
    """
    from pydantic import ValidationError

    from geoscreen.fileio import check_output_file
    from geoscreen.imagery.aoi import load_aoi
    from geoscreen.review.export import export_candidates, infer_format
    from geoscreen.review.redaction import RedactionConfig

    infer_format(out, fmt)
    check_output_file(out)
    try:
        config = RedactionConfig(
            level=redaction,
            min_m=min_m,
            max_m=max_m,
            grid_m=grid_m,
            min_count=min_count,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(
            f"{'.'.join(map(str, first['loc'])) or 'redaction'}: "
            f"{str(first['msg']).removeprefix('Value error, ')}",
            fix="Check --redaction, --min-m, --max-m, --grid-m, --min-count.",
        ) from exc
    where = make_filter(statuses, profile, bbox, since, until)
    area_shape = load_aoi(area, "EPSG:4326") if area else None
    region_frame = _read_regions(regions) if regions else None
    with open_store(db) as store:
        acting = confirm_identity(store, user, password_stdin=password_stdin,
                                  override=override, command="export")  # fmt: skip
        with acting:
            result = export_candidates(
                store,
                out,
                user=user,
                redaction=config,
                where=where,
                format=fmt,
                area=area_shape,
                regions=region_frame,
                seed=seed,
            )
    if as_json:
        _echo_json(result.to_dict())
    else:
        click.echo(
            f"{result.path}: {result.features} features ({result.redaction}, "
            f"{result.format}) from {result.candidates} candidates, "
            f"sha256 {result.sha256}"
        )


_REGIONS_FIX = "Give --regions a GeoPackage or GeoJSON of polygons (districts) with a CRS."


def _read_regions(path: Path) -> Any:
    import geopandas as gpd
    from pyogrio.errors import DataLayerError, DataSourceError

    if not path.is_file():
        raise InputError("regions file not found", where=str(path), fix=_REGIONS_FIX)
    try:
        frame = gpd.read_file(path)
    except (DataSourceError, DataLayerError, ValueError) as exc:
        raise InputError("cannot read as a vector file", where=str(path), fix=_REGIONS_FIX) from exc
    polygons = frame.geometry.geom_type.isin(["Polygon", "MultiPolygon"])
    if frame.crs is None or not polygons.any():
        raise InputError("regions need polygons with a CRS", where=str(path), fix=_REGIONS_FIX)
    return frame[polygons]


@review.command("backup")
@click.argument("paths", nargs=-1, metavar="[DB] OUT")
@db_option
@json_option
def backup(paths: tuple[str, ...], db: str, as_json: bool) -> None:
    """Copy a SQLite store to a new file OUT, safely while it is in use (PostgreSQL: pg_dump).

    Unlike copying the file, the backup includes changes still in the store's -wal
    file, and the copy is checked (integrity and audit chain) before it appears.
    """
    from geoscreen.review.backup import PG_DUMP_HINT, backup_store
    from geoscreen.review.db import display_url, resolve_url

    if len(paths) not in (1, 2):
        raise ConfigError(
            f"review backup takes OUT (or DB OUT), got {len(paths)} paths",
            fix="Use 'geoscreen review backup [--db STORE] OUT.sqlite'.",
        )
    given = click.get_current_context().get_parameter_source("db")
    if len(paths) == 2 and given == click.core.ParameterSource.COMMANDLINE:
        raise ConfigError("the store is given twice (--db and DB)", fix="Give only one of them.")
    source = paths[0] if len(paths) == 2 else db
    url = resolve_url(source)
    if url.get_backend_name() != "sqlite":
        raise ConfigError(
            "geoscreen backs up SQLite stores only", where=display_url(url), fix=PG_DUMP_HINT
        )
    with open_store(source) as store:
        result = backup_store(store, paths[-1])
    if as_json:
        _echo_json(result.to_dict())
    else:
        chain = "audit chain ok" if result.audit_ok else "AUDIT CHAIN BROKEN"
        click.echo(
            f"{result.path}: {result.candidates} candidates, {result.audit_entries} audit "
            f"entries ({chain}), {result.bytes} bytes, sha256 {result.sha256}"
        )
        for problem in result.audit_problems:
            click.echo(f"audit: {problem}", err=True)
    if not result.audit_ok:  # the copy is exact; the store it copies fails 'audit verify'
        raise click.exceptions.Exit(1)


# -- audit -------------------------------------------------------------------------------
@cli.group()
def audit() -> None:
    """The append-only, hash-chained audit log."""


@audit.command("verify")
@db_option
@click.option("--anchor", "anchors", multiple=True, type=click.Path(dir_okay=False),
              metavar="FILE", help="An anchor from 'audit anchor': the log must still hold "
                                   "and extend that head (repeatable).")  # fmt: skip
@json_option
def verify(db: str, anchors: tuple[str, ...], as_json: bool) -> None:
    """Recompute the hash chain and check it against the store and anchors.

    Exit 1 if an entry was edited, deleted or forged, the log was erased, cut back or
    rewritten past an anchor, or the store holds changes the log does not account for.
    Warns when the store's -wal file holds entries SQLite cannot read.
    """
    from geoscreen.review.audit import verify as verify_chain
    from geoscreen.review.audit_check import read_anchor
    from geoscreen.review.audit_key import ENV_KEY_FILE, env_key
    from geoscreen.review.walcheck import unread_wal_warning

    anchored = [read_anchor(path) for path in anchors]  # bad files refused before any work
    key = env_key()
    unread = unread_wal_warning(db)  # before opening: closing the store rewrites its WAL
    with open_store(db) as store:
        report = verify_chain(store, anchored, key)
    if unread and not as_json:
        click.echo(f"geoscreen: warning: {unread}", err=True)
    if as_json:
        _echo_json({**report.to_dict(), "warnings": [unread] if unread else []})
    elif report.ok:
        keyed = ""
        if report.keyed_from is not None:
            checked = "checked" if report.macs_checked else f"NOT checked (set ${ENV_KEY_FILE})"
            keyed = f"; MACs from entry {report.keyed_from} {checked}"
        click.echo(
            f"ok: {report.entries} entries, head {report.head_seq} {report.head_hash}{keyed}"
        )
    else:
        for problem in report.problems:
            click.echo(f"audit: {problem}", err=True)
        if report.more_problems:
            click.echo(f"audit: ... and {report.more_problems} more problems", err=True)
        click.echo(
            f"TAMPERED: {len(report.problems) + report.more_problems} problems in "
            f"{report.entries} entries",
            err=True,
        )
    if not report.ok:
        raise click.exceptions.Exit(1)


@audit.command("keygen")
@click.option("--out", required=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="The key file to create (owner-only permissions); keep it outside the "
                   "store's folder and its backups.")  # fmt: skip
def keygen(out: str) -> None:
    """Make a secret key that signs new audit entries (HMAC).

    Set GEOSCREEN_AUDIT_KEY_FILE=FILE for every process that writes the store and for
    'audit verify'. Entries forged by someone with the store but not the key then fail
    verification; someone with both can still sign anything.
    """
    from geoscreen.review.audit_key import ENV_KEY_FILE, make_key

    path = make_key(out)
    click.echo(f"audit key written to {path}; set {ENV_KEY_FILE}={path.resolve()}")


@audit.command("anchor")
@db_option
@click.option("--out", required=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="Where to write the anchor (JSON); keep copies off this machine.")  # fmt: skip
@click.option("--overwrite", is_flag=True, help="Replace an existing file.")
def anchor(db: str, out: str, overwrite: bool) -> None:
    """Write the log's head (sequence number, hash, time) for safekeeping elsewhere.

    Later, 'audit verify --anchor FILE' proves that the log still holds that head and
    only grew after it: cutting the log back or rewriting it shows.
    """
    from geoscreen.review.audit import anchor as head_anchor
    from geoscreen.review.audit_check import write_anchor

    target = Path(out)
    if target.exists() and not overwrite:
        raise ConfigError("file exists", where=out, fix="Give a new --out or add --overwrite.")
    with open_store(db) as store:
        made = head_anchor(store)
    write_anchor(made, target)
    click.echo(f"anchor: entry {made.seq} {made.hash} ({made.at}) written to {out}")


# -- users -------------------------------------------------------------------------------
@cli.group()
def users() -> None:
    """People who review, and their roles."""


def _admin_options(func: F) -> F:
    """``--user ADMIN`` and the override, shared by the commands that change users."""
    func = click.option("--as-admin-of-this-file", "override", is_flag=True, help=OVERRIDE_HELP
                        + " The first user of a new store is added this way.")(func)  # fmt: skip
    return click.option("--user", "admin", default=None, metavar="ADMIN",
                        help="The admin who makes the change (their password is needed).")(
        func
    )  # fmt: skip


def _acting_admin(
    store: Store, admin: str | None, password: str | None, override: bool
) -> tuple[str | None, AbstractContextManager[None]]:
    """The acting admin's name (``None``: the OS account) and the context of the writes."""
    from geoscreen.review.users import local_actor, require_user

    if admin is not None:
        with store.read() as conn:
            require_user(conn, admin, "admin", "change users")
    return admin, check_password(store, admin or local_actor(), password, override=override)


@users.command("add")
@click.argument("name")
@click.option("--role", required=True, metavar="|".join(ROLES), help="What the user may do.")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read NAME's new password (for logging in to the server) from stdin: its first "
    "line, or its second after ADMIN's with --admin-password-stdin.",
)
@_admin_options
@click.option("--admin-password-stdin", is_flag=True,
              help="Read ADMIN's password from the first line of stdin.")  # fmt: skip
@db_option
def users_add(
    name: str, role: str, password_stdin: bool, admin: str | None, override: bool,
    admin_password_stdin: bool, db: str,
) -> None:  # fmt: skip
    """Add a user; needs --user ADMIN with ADMIN's password, or --as-admin-of-this-file.

    Only the override creates a new store (its first user).
    """
    from geoscreen.review.users import add_user, check_new_user

    need_actor(admin, override, "users add", "admin", admin_password_stdin)
    admin_password = None
    if admin is not None and not override:
        admin_password = read_password(
            admin, from_stdin=admin_password_stdin, command="users add",
            flag="--admin-password-stdin",
        )  # fmt: skip
    password = None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    check_new_user(name, role, password)  # before a store is created
    with open_store(db, create=admin is None) as store:
        actor, acting = _acting_admin(store, admin, admin_password, override)
        with acting:
            user = add_user(store, name, role, password=password, actor=actor)
    click.echo(f"user {user.name} added ({user.role}{', with password' if password else ''})")


@users.command("list")
@db_option
@json_option
def users_list(db: str, as_json: bool) -> None:
    """List users and roles."""
    from geoscreen.review.users import list_users

    with open_store(db) as store:
        found = list_users(store)
    if as_json:
        _echo_json([u.to_dict() for u in found])
        return
    for u in found:
        click.echo(f"{u.name:<24} {u.role:<11} {'active' if u.active else 'disabled'}")


@users.command("disable")
@click.argument("name")
@_admin_options
@click.option("--password-stdin", is_flag=True,
              help="Read ADMIN's password from the first line of stdin.")  # fmt: skip
@db_option
def users_disable(
    name: str, admin: str | None, override: bool, password_stdin: bool, db: str
) -> None:
    """Disable a user (their decisions and history stay); needs --user ADMIN with ADMIN's
    password, or --as-admin-of-this-file."""
    from geoscreen.review.users import set_active

    need_actor(admin, override, "users disable", "admin", password_stdin)
    password = None
    if admin is not None and not override:
        password = read_password(admin, from_stdin=password_stdin, command="users disable",
                                 flag="--password-stdin")  # fmt: skip
    with open_store(db) as store:
        actor, acting = _acting_admin(store, admin, password, override)
        with acting:
            set_active(store, name, False, actor=actor)
    click.echo(f"user {name} disabled")
