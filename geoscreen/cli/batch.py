"""``geoscreen scan`` and ``geoscreen watch``: screen what is new, into the review store."""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

import click

from geoscreen.cli.app import cli
from geoscreen.cli.options import (
    bands_option,
    batch_size_option,
    check_tta,
    db_option,
    precision_option,
    tta_option,
)
from geoscreen.errors import ConfigError

log = logging.getLogger(__name__)

EXIT_SOME_FAILED = 1


def _work_dir(db: str, work: str | None) -> Path:
    if work:
        return Path(work)
    if "://" in db:
        raise ConfigError(
            "--work is needed with a database URL",
            fix="Give --work DIR for sites files, evidence chips and coverage.",
        )
    return Path(db).with_suffix("").with_name(Path(db).stem + "-runs")


def scan_options(fn: click.decorators.FC) -> click.decorators.FC:
    """Options shared by scan and watch."""
    for option in reversed(
        [
            click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False)),
            db_option,
            click.option(
                "--work", default=None, help="Folder for sites files, evidence, coverage."
            ),
            click.option(
                "--workers",
                default=0,
                type=click.IntRange(0),
                help="Start a local Dask cluster of N single-thread workers.",
            ),
            click.option(
                "--cluster", default=None, help="Use an existing Dask scheduler tcp://HOST:PORT."
            ),
            click.option(
                "--chunk-tiles",
                default=2048,
                show_default=True,
                type=click.IntRange(1),
                help="Tiles per task: large scenes spread across workers.",
            ),
            batch_size_option,
            click.option("--asset", default=None, help="STAC asset key holding the image."),
            click.option("--json-log", is_flag=True, help="One JSON line per scene on stdout."),
            click.option("--user", default=None, help="Who runs the scan (audit log)."),
            precision_option,
            bands_option,
            tta_option,
        ]
    ):
        fn = option(fn)
    return fn


def _run(
    profile: str,
    sources: tuple[str, ...],
    model_dir: str,
    db: str,
    work: str | None,
    workers: int,
    cluster: str | None,
    chunk_tiles: int,
    batch_size: int,
    asset: str | None,
    json_log: bool,
    user: str | None,
    precision: str = "auto",
    bands: tuple[str, ...] = (),
    tta: bool = False,
    quiet: bool = False,
    model_warnings_said: bool = False,
) -> int:
    from tqdm import tqdm

    from geoscreen.batch.executors import make_executor
    from geoscreen.batch.runner import run_scan
    from geoscreen.batch.scan import ScanSettings, SceneOutcome, check_model
    from geoscreen.batch.sources import discover
    from geoscreen.fileio import check_output_dir
    from geoscreen.imagery.scene import open_scene
    from geoscreen.profiles import load_profile, select_bands
    from geoscreen.review.store import open_store
    from geoscreen.review.users import local_actor

    prof = load_profile(profile)  # fail fast on a bad profile
    check_tta(tta, prof.model.task, profile)
    folder = _work_dir(db, work)
    check_output_dir(folder, "--work")
    settings = ScanSettings(
        profile_path=str(Path(profile).resolve()),
        model_dir=str(Path(model_dir).resolve()),
        work_dir=str(folder.resolve()),
        batch_size=batch_size,
        chunk_tiles=chunk_tiles,
        threads=1 if (workers or cluster) else None,
        precision=precision,
        tta=tta,
    )
    # Everything that can refuse the scan does so before the store or work folder exist:
    # the sources (and --bands, against the first), the model (corrupt weights, another
    # profile's or task's, made for other bands), the executor
    # (a cluster address), the store (a file or URL); the work folder comes last.
    refs = discover(sources, asset=asset)
    if bands and refs:  # names and numbers resolved against the first scene
        first = open_scene(refs[0].uri, sensor=prof.imagery.sensor)
        chosen = select_bands(prof, bands, [first]).preprocess.bands or []
        settings = replace(settings, bands=tuple(chosen))
    model_warnings = check_model(settings)  # with the bands it will be fed
    executor = make_executor(workers, cluster)
    try:
        store = open_store(db, create=True)
    except BaseException:
        executor.close()
        raise
    folder.mkdir(parents=True, exist_ok=True)
    for line in [] if model_warnings_said else model_warnings:  # the store keeps it per run
        click.echo(f"geoscreen: warning: {line}", err=True)
    bar = tqdm(total=len(refs), desc="scenes", unit="scene", disable=json_log or quiet)

    def listener(outcome: SceneOutcome) -> None:
        bar.update(1)
        for line in outcome.warnings:  # on stderr, also with --json-log (which keeps them)
            bar.write(f"geoscreen: warning: {line}", file=sys.stderr)
        if json_log:  # the notes are in the scene's record
            click.echo(json.dumps({"event": "scene", **vars(outcome)}))
            return
        if outcome.status == "failed":
            bar.write(f"geoscreen: scene failed: {outcome.error}")
        for line in outcome.notes:
            bar.write(f"{outcome.uri}: {line}")

    try:
        summary = run_scan(
            refs, settings, store, executor, actor=user or local_actor(), listener=listener
        )
    finally:
        bar.close()
        executor.close()
        store.close()
    totals = summary.as_dict()
    if json_log:
        click.echo(json.dumps({"event": "summary", **totals}))
    elif not quiet or totals["screened"] or totals["failed"]:
        click.echo(
            f"{totals['scenes']} scene(s): {totals['screened']} screened, {totals['skipped']} "
            f"skipped (already screened), {totals['failed']} failed; {totals['tiles']} tiles; "
            f"{totals['new_sites']} new and {totals['reseen_sites']} re-seen candidate sites "
            f"matching profile; {totals['seconds']:.1f} s"
        )
        if totals["below_threshold"]:
            click.echo(
                f"{totals['below_threshold']} earlier candidate(s) not found again: flagged "
                "below threshold with this model (kept, with their decisions)"
            )
    return EXIT_SOME_FAILED if summary.failed else 0


@cli.command()
@click.argument("profile", type=click.Path(dir_okay=False))
@click.argument("sources", nargs=-1, required=True)
@scan_options
def scan(profile: str, sources: tuple[str, ...], **options: object) -> int:
    """Screen every new scene of SOURCES (folders, globs, list files, STAC) into the store.

    Scenes already screened with this profile version and model are skipped; a
    killed scan resumes where it stopped. Exit code 1 when some scenes failed.
    """
    return _run(profile, sources, **options)  # type: ignore[arg-type]


@cli.command()
@click.argument("folder", type=click.Path(file_okay=False, exists=True))
@click.option("--profile", "profile", required=True, type=click.Path(dir_okay=False))
@click.option(
    "--interval",
    default=30.0,
    show_default=True,
    type=click.FloatRange(0.1),
    help="Seconds between polls.",
)
@click.option("--polls", default=0, type=click.IntRange(0), help="Stop after N polls (0: never).")
@scan_options
def watch(folder: str, profile: str, interval: float, polls: int, **options: object) -> int:
    """Poll FOLDER and scan new files as they arrive; Ctrl-C stops without losing work."""
    count, failed = 0, False
    try:
        while True:
            code = _run(profile, (folder,), quiet=True, model_warnings_said=count > 0,
                        **options)  # type: ignore[arg-type]  # fmt: skip
            failed = failed or code != 0
            count += 1
            if polls and count >= polls:
                break
            time.sleep(interval)
    except KeyboardInterrupt:
        click.echo("geoscreen: watch stopped; finished scenes are in the store", err=True)
    return EXIT_SOME_FAILED if failed else 0
