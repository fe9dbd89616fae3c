"""``geoscreen serve`` (the review server) and ``geoscreen map`` (a static map file)."""

from __future__ import annotations

from pathlib import Path

import click
from sqlalchemy import select

from geoscreen.cli.app import cli
from geoscreen.cli.review import db_option
from geoscreen.review.records import STATUSES, ReviewEvent
from geoscreen.review.schema import review_events, users
from geoscreen.review.store import CandidateFilter, Store, open_store
from geoscreen.web.mapping import CLUSTER_THRESHOLD, build_map

MAP_WARN_AT = CLUSTER_THRESHOLD


@cli.command()
@db_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback exposes the server.")  # fmt: skip
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--scenes", multiple=True, type=click.Path(exists=True), metavar="PATH",
              help="Scene file or folder for imagery tiles (repeatable); needed only for "
                   "scenes the store does not know or that moved.")  # fmt: skip
@click.option("--profile", "profiles", multiple=True,
              type=click.Path(exists=True, dir_okay=False), metavar="YAML",
              help="Profile file: its threshold orders the queue by uncertainty.")  # fmt: skip
@click.option("--evidence-root", type=click.Path(exists=True, file_okay=False), metavar="DIR",
              help="Folder that relative evidence paths start from (default: the store's "
                   "folder, then here).")  # fmt: skip
@click.option("--secure-cookies/--no-secure-cookies", default=None,
              help="Mark cookies Secure (default: when the request came over https).")  # fmt: skip
@click.option("--trusted-proxy", "trusted_proxies", multiple=True, metavar="ADDRESS",
              help="Address or network of a reverse proxy whose X-Forwarded-For header is "
                   "believed (repeatable); without it the header is ignored.")  # fmt: skip
def serve(
    db: str,
    host: str,
    port: int,
    scenes: tuple[str, ...],
    profiles: tuple[str, ...],
    evidence_root: str | None,
    secure_cookies: bool | None,
    trusted_proxies: tuple[str, ...],
) -> None:
    """Serve the review page and API (log in with users from the store)."""
    from geoscreen.review.audit_key import env_key
    from geoscreen.web.app import create_app
    from geoscreen.web.auth import AuthSettings
    from geoscreen.web.limits import parse_networks
    from geoscreen.web.server import is_loopback
    from geoscreen.web.server import serve as run

    parse_networks(trusted_proxies)  # refuse bad settings before opening anything
    env_key()
    store = open_store(db)
    if not _has_login(store):
        click.echo(
            "geoscreen: warning: no user can log in (none has a password); add one with "
            "'geoscreen users add NAME --role analyst --password-stdin'",
            err=True,
        )
    if not is_loopback(host):
        click.echo(
            f"geoscreen: warning: listening on {host}: other machines can reach the server; "
            "put it behind https and use --secure-cookies",
            err=True,
        )
    app = create_app(
        store,
        scenes=scenes,
        profiles=profiles,
        evidence_root=evidence_root,
        auth=AuthSettings(secure_cookies=secure_cookies, trusted_proxies=trusted_proxies),
    )
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"review server for {store.display}: http://{shown}:{port}/ (Ctrl-C stops)")
    try:
        run(app, host=host, port=port)
    finally:
        store.close()


@cli.command(name="map")
@db_option
@click.option("--out", required=True, type=click.Path(dir_okay=False), metavar="HTML",
              help="The map file to write (self-contained HTML).")  # fmt: skip
@click.option("--status", "statuses", multiple=True, type=click.Choice(STATUSES),
              help="Only these statuses (repeatable).")  # fmt: skip
@click.option("--profile", default=None, help="Only this profile.")
@click.option("--basemap", default=None, metavar="osm|esri-imagery|URL",
              help="A remote basemap (off by default: then nothing remote is loaded).")  # fmt: skip
@click.option("--evidence-root", type=click.Path(exists=True, file_okay=False), metavar="DIR",
              help="Folder that relative evidence paths start from.")  # fmt: skip
def map_(
    db: str,
    out: str,
    statuses: tuple[str, ...],
    profile: str | None,
    basemap: str | None,
    evidence_root: str | None,
) -> None:
    """Write a static map of candidates by review status (offline unless --basemap)."""
    with open_store(db) as store:
        frame = store.frame(CandidateFilter(statuses=statuses, profile=profile))
        if len(frame):
            lines = history_lines(store, set(frame["id"]))
            frame["history"] = [lines.get(int(i), []) for i in frame["id"]]
            roots = (Path(evidence_root),) if evidence_root else ()
            chips = [store.locate(p, roots) for p in frame["evidence_path"]]  # stored portably
            frame["evidence_path"] = [
                str(c) if c else p for c, p in zip(chips, frame["evidence_path"], strict=True)
            ]
    if len(frame) > MAP_WARN_AT:
        click.echo(
            f"geoscreen: warning: {len(frame)} candidates: the map file is large and draws "
            "them as clustered points; 'geoscreen serve' browses any number smoothly",
            err=True,
        )
    built = build_map(frame, basemap=basemap, cluster_threshold=MAP_WARN_AT,
                      evidence_base=evidence_root)  # fmt: skip
    path = built.save(out)
    remote = " (with a remote basemap)" if basemap else ""
    click.echo(f"map of {len(frame)} candidates written to {path}{remote}")


def history_lines(store: Store, ids: set[int]) -> dict[int, list[str]]:
    """Review events as one line each, by candidate (one query)."""
    lines: dict[int, list[str]] = {}
    with store.read() as conn:
        rows = conn.execute(select(review_events).order_by(review_events.c.id))
        for row in rows:
            if row.candidate_id in ids:
                line = ReviewEvent.from_row(row).describe()
                lines.setdefault(row.candidate_id, []).append(line)
    return lines


def _has_login(store: Store) -> bool:
    with store.read() as conn:
        query = select(users.c.id).where(users.c.password_hash.is_not(None), users.c.active)
        return conn.execute(query.limit(1)).first() is not None
