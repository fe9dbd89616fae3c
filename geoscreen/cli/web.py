"""``geoscreen serve`` (the review server) and ``geoscreen map`` (a static map file)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import click

from geoscreen.cli.app import cli
from geoscreen.cli.options import db_option
from geoscreen.review.records import STATUSES

if TYPE_CHECKING:  # SQLAlchemy, folium and FastAPI load when a command runs
    import pandas as pd

    from geoscreen.review.store import Store
    from geoscreen.web.mapping import Quicklook

MAP_WARN_AT: int | None = None
"""Candidates above which ``map`` warns and clusters; None: the map's own threshold."""
QUICKLOOK_PX = 768  # longest side of a scene overlay: small file, enough to recognise places
MAX_QUICKLOOKS = 24  # scenes drawn in one file (those with most candidates); ~0.5 MB each


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
    from geoscreen.review.store import open_store
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
            "'geoscreen users add NAME --role analyst --password-stdin --as-admin-of-this-file'",
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
@click.option("--scenes", multiple=True, type=click.Path(exists=True), metavar="PATH",
              help="Scene file or folder to draw under the candidates (repeatable); needed "
                   "only for scenes the store does not know or that moved.")  # fmt: skip
@click.option("--imagery/--no-imagery", default=True, show_default=True,
              help="Draw the candidates' scenes as small overlays under them.")  # fmt: skip
def map_(
    db: str,
    out: str,
    statuses: tuple[str, ...],
    profile: str | None,
    basemap: str | None,
    evidence_root: str | None,
    scenes: tuple[str, ...],
    imagery: bool,
) -> None:
    """Write a static map of candidates over their imagery (offline unless --basemap)."""
    from geoscreen.offline_map import basemap_source
    from geoscreen.review.store import CandidateFilter, open_store
    from geoscreen.web.mapping import CLUSTER_THRESHOLD, build_map

    if basemap:
        basemap_source(basemap)  # refused before anything is read
    warn_at = CLUSTER_THRESHOLD if MAP_WARN_AT is None else MAP_WARN_AT
    looks: list[Quicklook] = []
    with open_store(db) as store:
        frame = store.frame(CandidateFilter(statuses=statuses, profile=profile))
        if imagery:
            looks = scene_looks(store, frame, scenes)
        if len(frame):
            lines = history_lines(store, set(frame["id"]))
            frame["history"] = [lines.get(int(i), []) for i in frame["id"]]
            roots = (Path(evidence_root),) if evidence_root else ()
            chips = [store.locate(p, roots) for p in frame["evidence_path"]]  # stored portably
            frame["evidence_path"] = [
                str(c) if c else p for c, p in zip(chips, frame["evidence_path"], strict=True)
            ]
    if len(frame) > warn_at:
        click.echo(
            f"geoscreen: warning: {len(frame)} candidates: the map file is large and draws "
            "them as clustered points; 'geoscreen serve' browses any number smoothly",
            err=True,
        )
    built = build_map(frame, quicklooks=looks, basemap=basemap, cluster_threshold=warn_at,
                      evidence_base=evidence_root)  # fmt: skip
    path = built.save(out)
    remote = " (with a remote basemap)" if basemap else ""
    shown = f" over {len(looks)} scene(s)" if looks else ""
    click.echo(f"map of {len(frame)} candidates{shown} written to {path}{remote}")


def scene_looks(store: Store, frame: pd.DataFrame, given: tuple[str, ...]) -> list[Quicklook]:
    """Quicklooks of the scenes the candidates were found in (given files first, then the
    store's), at most :data:`MAX_QUICKLOOKS`, those with most candidates first; scenes not
    found here are named in a warning, not an error."""
    from geoscreen.errors import GeoscreenError
    from geoscreen.imagery.scene import open_scene
    from geoscreen.web.map_tiles import SceneIndex
    from geoscreen.web.mapping import quicklook

    index = SceneIndex.from_paths(given, store=store)
    counts = Counter(str(s) for s in frame.get("scene_id", []) if s and str(s) != "nan")
    wanted = sorted(counts, key=lambda s: (-counts[s], s))
    if len(wanted) > MAX_QUICKLOOKS:
        click.echo(
            f"geoscreen: warning: drawing the imagery of {MAX_QUICKLOOKS} of {len(wanted)} "
            "scenes (those with most candidates) to keep the file small; 'geoscreen serve' "
            "shows imagery everywhere",
            err=True,
        )
        wanted = wanted[:MAX_QUICKLOOKS]
    looks: list[Quicklook] = []
    missing: list[str] = []
    for scene_id in wanted:
        uri = index.uri(scene_id)
        if uri is None:
            missing.append(scene_id)
            continue
        try:
            looks.append(quicklook(open_scene(uri), max_size=QUICKLOOK_PX))
        except GeoscreenError as exc:
            click.echo(f"geoscreen: warning: no imagery from {uri}: {exc.message}", err=True)
    if missing:
        click.echo(
            f"geoscreen: warning: imagery of {len(missing)} scene(s) not found here "
            f"(e.g. {missing[0][:40]}); pass their files with --scenes",
            err=True,
        )
    return looks


def history_lines(store: Store, ids: set[int]) -> dict[int, list[str]]:
    """Review events as one line each, by candidate (one query)."""
    from sqlalchemy import select

    from geoscreen.review.records import ReviewEvent
    from geoscreen.review.schema import review_events

    lines: dict[int, list[str]] = {}
    with store.read() as conn:
        rows = conn.execute(select(review_events).order_by(review_events.c.id))
        for row in rows:
            if row.candidate_id in ids:
                line = ReviewEvent.from_row(row).describe()
                lines.setdefault(row.candidate_id, []).append(line)
    return lines


def _has_login(store: Store) -> bool:
    from sqlalchemy import select

    from geoscreen.review.schema import users

    with store.read() as conn:
        query = select(users.c.id).where(users.c.password_hash.is_not(None), users.c.active)
        return conn.execute(query.limit(1)).first() is not None
