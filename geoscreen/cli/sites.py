"""``geoscreen sites extract``: score maps to candidate sites."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from geoscreen.cli.app import cli
from geoscreen.cli.options import json_option
from geoscreen.errors import ConfigError, InputError

if TYPE_CHECKING:  # rasterio and geopandas load when a command runs
    import geopandas as gpd
    import numpy as np

    from geoscreen.imagery.scene import Scene
    from geoscreen.profiles import Profile

CHIP_BATCH = 256  # evidence chips written per call (the scene is opened once per batch)
# The run summaries a folder of score maps may carry: a screen's, a similarity search's.
SUMMARIES = ("screen.json", "similar.json")


@cli.group()
def sites() -> None:
    """Candidate sites: flagged tiles merged into places for review."""


@sites.command("extract")
@click.argument("scores")
@click.option(
    "--profile",
    "profile_path",
    default=None,
    help="The profile screened with [default: the one screen.json records].",
)
@click.option("--out", "out", required=True, help="Sites of this run (.parquet or .gpkg).")
@click.option(
    "--history",
    default=None,
    help="Site table of earlier runs: sites seen again keep their id; updated in place "
    "(created if missing), with its coverage history beside it.",
)
@click.option("--image", default=None, help="The screened scene, when SCORES is one scene folder.")
@click.option(
    "--threshold",
    type=float,
    default=None,
    help="Default: the one the run recorded (a similarity search's), else the profile's.",
)
@click.option(
    "--pixel-size",
    type=float,
    default=None,
    help="Nominal pixel size in metres of images without georeference.",
)
@click.option("--acquired", default=None, help="Acquisition date (if the scene lacks it).")
@click.option("--match-iou", type=float, default=0.2, show_default=True)
@click.option("--match-distance", type=float, default=None, help="Match by centroid distance (m).")
@click.option("--evidence/--no-evidence", default=True, show_default=True)
@click.option("--max-chip", type=int, default=512, show_default=True, help="Chip side limit (px).")
@json_option
def extract(
    scores: str,
    profile_path: str | None,
    out: str,
    history: str | None,
    image: str | None,
    threshold: float | None,
    pixel_size: float | None,
    acquired: str | None,
    match_iou: float,
    match_distance: float | None,
    evidence: bool,
    max_chip: int,
    as_json: bool,
) -> None:
    """Turn the score maps in SCORES (a 'geoscreen screen' output folder) into sites."""
    from geoscreen.fileio import check_output_file
    from geoscreen.profiles import load_profile
    from geoscreen.sites.coverage import coverage_of, coverage_path, read_coverage, write_coverage
    from geoscreen.sites.evidence import write_evidence
    from geoscreen.sites.extract import load_scoremap
    from geoscreen.sites.make import scene_sites
    from geoscreen.sites.match import MatchRule, update_sites
    from geoscreen.sites.site import read_sites, write_sites

    if not Path(scores).is_dir():
        raise InputError(
            "no such folder" if not Path(scores).exists() else "not a folder",
            where=scores,
            fix="Give the --out folder of 'geoscreen screen' or 'geoscreen similar', or one "
            "scene's folder with --image.",
        )
    recorded = _threshold(Path(scores), threshold)
    if threshold is None and recorded is not None:
        click.echo(f"threshold in force: {recorded:g}, recorded by the run (--threshold for "
                   "another)", err=as_json)  # fmt: skip
    threshold = recorded
    prof = load_profile(profile_path) if profile_path else _recorded_profile(Path(scores), image)
    when = _date(acquired)
    rule = (
        MatchRule("distance", max_distance=match_distance)
        if match_distance is not None
        else MatchRule("iou", min_iou=match_iou)
    )
    out_path = Path(out)
    if out_path.suffix.lower() not in (".parquet", ".geoparquet", ".gpkg"):
        raise InputError("the output must be .parquet or .gpkg", where=out,
                         fix="Name it e.g. sites.parquet.")  # fmt: skip
    check_output_file(out_path)
    hist_path = Path(history) if history else None
    table = read_sites(hist_path) if hist_path and hist_path.exists() else None
    cov_file = coverage_path(hist_path) if hist_path else None
    coverage = read_coverage(cov_file) if cov_file and cov_file.exists() else None
    evidence_dir = out_path.with_name(f"{out_path.stem}_evidence")
    this_run: list[str] = []
    per_scene: list[dict[str, Any]] = []
    folders = _score_folders(Path(scores), image, prof.imagery.sensor)
    if not folders:
        raise InputError("the screening output lists no scenes", where=scores,
                         fix="Screen at least one scene first.")  # fmt: skip
    for folder, scene, run_id in folders:
        scoremap = load_scoremap(folder, scene, prof)
        run = str(run_id or scoremap.meta.get("run_id") or uuid.uuid4().hex[:12])
        found = scene_sites(
            scoremap, prof, scene, threshold=threshold, pixel_size_m=pixel_size, run_id=run,
            acquired=when,
        )  # fmt: skip
        update = update_sites(table, found, rule, coverage)
        table = update.sites
        if evidence:
            chosen = table["site_id"].isin(update.reseen + update.added) & (table["run_id"] == run)
            if chosen.any():
                chips = _write_chips(table[chosen], scene, evidence_dir, max_chip, write_evidence)
                table.loc[chosen, "evidence_path"] = chips
        this_run += update.reseen + update.added
        row = coverage_of(scoremap, run_id=run, profile=prof.name, acquired=when or scene.acquired)
        coverage = _append(coverage, row)
        per_scene.append({
            "scene": scene.uri, "scene_id": scene.id, "run_id": run, "sites": len(found),
            "new": len(update.added), "seen_before": len(update.reseen),
        })  # fmt: skip
        click.echo(
            f"{scene.uri}: {len(found)} sites ({len(update.added)} new, "
            f"{len(update.reseen)} seen before)",
            err=as_json,
        )
    assert table is not None
    mine = table[table["site_id"].isin(this_run)]
    write_sites(mine, out_path)
    click.echo(f"{len(mine)} sites -> {out_path}", err=as_json)
    if hist_path is not None:
        write_sites(table, hist_path)
        if coverage is not None and cov_file is not None:
            write_coverage(coverage, cov_file)
        click.echo(f"history: {len(table)} sites -> {hist_path}", err=as_json)
    if as_json:
        n_chips = int(mine["evidence_path"].notna().sum()) if "evidence_path" in mine else 0
        click.echo(json.dumps({
            "out": str(out_path), "profile": prof.name, "profile_version": prof.version,
            "sites": len(mine), "new": sum(s["new"] for s in per_scene),
            "seen_before": sum(s["seen_before"] for s in per_scene), "scenes": per_scene,
            "evidence_dir": str(evidence_dir) if evidence and n_chips else None,
            "evidence_chips": n_chips, "history": None if hist_path is None else str(hist_path),
            "history_sites": None if hist_path is None else len(table),
        }, indent=2))  # fmt: skip


def _write_chips(
    chosen: gpd.GeoDataFrame,
    scene: Scene,
    folder: Path,
    max_chip: int,
    write: Callable[..., gpd.GeoDataFrame],
) -> np.ndarray:
    """Evidence paths of ``chosen`` (chips written in batches; a bar on stderr after 2 s)."""
    import numpy as np
    from tqdm import tqdm

    paths = []
    with tqdm(total=len(chosen), desc="evidence chips", unit="chip", delay=2, leave=False) as bar:
        for start in range(0, len(chosen), CHIP_BATCH):
            part = write(chosen.iloc[start : start + CHIP_BATCH], scene, folder, max_px=max_chip)
            paths.append(part["evidence_path"].to_numpy())
            bar.update(len(part))
    return np.concatenate(paths)


def _append(coverage: gpd.GeoDataFrame | None, row: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    import geopandas as gpd
    import pandas as pd

    if coverage is None or len(coverage) == 0:
        return row
    if (coverage.crs is None) != (row.crs is None):
        raise ConfigError(
            "cannot keep images without georeference in the same history as georeferenced ones",
            fix="Use a separate --history file for each.",
        )
    return gpd.GeoDataFrame(pd.concat([coverage, row], ignore_index=True), crs=row.crs)


def _recorded_profile(scores: Path, image: str | None) -> Profile:
    """The profile ``screen.json`` records (in the folder, or the one above a scene folder)."""
    from pydantic import ValidationError

    from geoscreen.profiles import Profile, format_validation_error

    for summary in _summaries(scores):
        if summary.is_file():
            data = json.loads(summary.read_text(encoding="utf-8"))
            spec = data.get("profile_spec")
            if not isinstance(spec, dict):
                break
            try:
                profile = Profile.model_validate(spec)
            except ValidationError as exc:
                raise ConfigError(format_validation_error(exc), where=str(summary),
                                  fix="Give --profile.") from None  # fmt: skip
            return profile.with_source(data.get("profile_path"))
    raise InputError(
        "which profile was this screened with? no screen.json or similar.json records it",
        where=str(scores if image is None else image),
        fix="Give --profile with the profile the scene was screened with.",
    )


def _summaries(scores: Path) -> list[Path]:
    """Where a run's summary may be: a screen's or a similarity search's, in the folder
    or in the one above a scene folder."""
    return [f / name for f in (scores, scores.parent) for name in SUMMARIES]


def _score_folders(
    scores: Path, image: str | None, sensor: str | None
) -> list[tuple[Path, Scene, str | None]]:
    """(score folder, scene, run id) for a screen output folder or a single scene folder."""
    from geoscreen.imagery.scene import open_scene

    summary = next(
        (scores / n for n in SUMMARIES if (scores / n).is_file()), scores / "screen.json"
    )
    if (scores / "sites.parquet").is_file() and not (scores / "tiles.parquet").is_file():
        _detected(scores, [scores / "sites.parquet"])
    if image is not None:
        return [(scores, open_scene(image, sensor=sensor), None)]
    if summary.is_file():
        data = json.loads(summary.read_text(encoding="utf-8"))
        if data.get("task") == "detect":
            found = [Path(i["files"]["sites"]) for i in data.get("scenes", []) if "files" in i]
            _detected(scores, found)
        return [
            (Path(item["files"]["tiles"]).parent, open_scene(item["scene"], sensor=sensor),
             data.get("run_id"))
            for item in data.get("scenes", [])
        ]  # fmt: skip
    raise InputError(
        "not a screening output folder (no screen.json)",
        where=str(scores),
        fix="Give the --out folder of 'geoscreen screen' or 'geoscreen similar', or one "
        "scene's folder with --image.",
    )


def _threshold(scores: Path, threshold: float | None) -> float | None:
    """The threshold sites are made with: ``threshold`` when given, else the one the run
    recorded when the profile's does not apply (a similarity search's, a similarity
    model's), else None (the profile's). A similarity search that recorded none is
    refused: its scores are no probabilities, and its summary says where they lie."""
    summary = next((f for f in _summaries(scores) if f.is_file()), None)
    if summary is None or threshold is not None:
        return threshold
    data = json.loads(summary.read_text(encoding="utf-8"))
    recorded = data.get("threshold")
    if isinstance(recorded, int | float) and data.get("threshold_source", "profile") != "profile":
        return float(recorded)
    if summary.name != "similar.json":
        return None
    hint = ""
    if "score_top_1pct" in data and "score_max" in data:
        hint = (f" Its top 1% of tiles score {data['score_top_1pct']:.3f} or more (highest "
                f"{data['score_max']:.3f}).")  # fmt: skip
    raise InputError(
        "a similarity search scores a tile's highest cosine similarity to the examples "
        "(-1..1), not a probability: the profile's threshold does not apply",
        where=str(scores),
        fix="Give --threshold: the similarity from which tiles are worth a review." + hint,
    )


def _detected(scores: Path, files: list[Path]) -> None:
    """Refuse a detection profile's output: it holds sites already, not score maps."""
    first = str(files[0]) if files else f"{scores}/*/sites.parquet"
    more = f" (and {len(files) - 1} more)" if len(files) > 1 else ""
    raise InputError(
        "a detection screen writes its sites itself (one per object at the threshold in "
        "force): there are no score maps to turn into sites",
        where=str(scores),
        fix=f"Use {first}{more} as it is, e.g. with 'geoscreen review load'; evaluate "
        "objects.parquet beside it (every object, for AP) with 'geoscreen evaluate --predicted'.",
    )


def _date(text: str | None) -> datetime | None:
    from geoscreen.imagery.scene import parse_datetime

    if text is None:
        return None
    parsed = parse_datetime(text)
    if parsed is None:
        raise ConfigError(f"not a date: {text!r}", fix="Use ISO 8601, e.g. 2024-05-01.")
    return parsed
