"""``geoscreen samples``: the bundled real samples, copied where a person can use them.

The README's walkthrough runs on these files (``tests/cli/test_readme_runs.py`` runs
it), so it works as written from a fresh clone or an installed wheel, offline. ``copy``
writes each sample under its own file name, the OSBS_029 scene cut into four scenes
(``incoming/``, the drop folder the demo scans), the shipped profiles (``profiles/``),
and the sources and licences of the data. A file already there with other content is
refused before anything is written; one with the same content is left as it is.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import click

from geoscreen.cli.app import cli
from geoscreen.cli.options import json_option
from geoscreen.errors import ConfigError, InputError

PARTS = "neon_osbs_parts"
PARTS_FOLDER = "incoming"
PROFILES_FOLDER = "profiles"
SHAPEFILE_SIDECARS = (".shx", ".dbf", ".prj")

DESCRIPTIONS = {
    "neon_osbs": "NEON aerial RGB, 0.1 m, EPSG:32617, 400 x 400 px",
    "neon_osbs_labels": "61 tree-crown boxes on OSBS_029, pixel coordinates (CSV)",
    "neon_yell": "NEON aerial RGB crop, no georeference, 1249 x 1035 px",
    "neon_yell_labels": "279 tree-crown boxes on the YELL crop (Pascal VOC)",
    "neon_yell2": "a second NEON YELL crop (open meadow), no georeference, 2299 x 2472 px",
    "neon_yell2_labels": "574 tree-crown boxes on the second YELL crop (Pascal VOC)",
    "neon_soap": "NEON aerial RGB, SOAP_061 (Sierra Nevada), no georeference, 400 x 400 px",
    "neon_soap_labels": "37 tree-crown boxes on SOAP_061, classes Dead and Alive (Pascal VOC)",
    "rmnp_rgb": "Rocky Mountain NP RGB, EPSG:4326, with nodata",
    "rmnp_boundary": "the park boundary (Shapefile)",
    "s2_t33uuu": "Sentinel-2A L1C, 13 bands on a 20 m grid, EPSG:32633, 768 x 384 px",
    "s2_t33uuu_points": "866 labelled pixel centres, water and forest (GeoJSON)",
    "s2_t33uuu_polygons": "the 29 reference polygons of those points (GeoJSON)",
    PARTS: "NEON OSBS_029 cut into four georeferenced 200 px scenes: a drop folder",
}


@dataclass(frozen=True)
class Planned:
    """One file ``copy`` writes: where it comes from, where it goes (relative to OUT)."""

    source: Path
    target: str


def _names() -> list[str]:
    from geoscreen.samples import sample_names

    return [*sample_names(), PARTS]


def _sample_files(name: str) -> list[Planned]:
    from geoscreen.samples import sample_path

    path = sample_path(name)
    files = [Planned(path, path.name)]
    if path.suffix == ".shp":
        files += [
            Planned(path.with_suffix(s), path.with_suffix(s).name) for s in SHAPEFILE_SIDECARS
        ]
    return files


def _support_files(names: list[str]) -> list[Planned]:
    """The shipped profiles, and the sources and licences of the chosen samples."""
    from geoscreen.demo import profile_path
    from geoscreen.samples import sample_path

    configs = profile_path().parent
    files = [Planned(p, f"{PROFILES_FOLDER}/{p.name}") for p in sorted(configs.glob("*.yaml"))]
    data = sample_path("neon_osbs").parent.parent
    files.append(Planned(data / "README.md", "SOURCES.md"))
    folders = {"neon" if n == PARTS else sample_path(n).parent.name for n in names}
    files += [Planned(data / f / "LICENSE", f"LICENSE.{f}") for f in sorted(folders)]
    return files


def _cut_parts(scratch: Path) -> list[Planned]:
    """OSBS_029's four corners, written to ``scratch`` (named as the demo names them)."""
    from geoscreen.samples import cut_quadrants, sample_path

    parts = cut_quadrants(sample_path("neon_osbs"), scratch)
    return [Planned(p, f"{PARTS_FOLDER}/osbs_029_part{i + 1}.tif") for i, p in enumerate(parts)]


def _same(a: Path, b: Path) -> bool:
    from geoscreen.fileio import sha256_file

    return a.stat().st_size == b.stat().st_size and sha256_file(a) == sha256_file(b)


def _plan(out: Path, files: list[Planned]) -> tuple[list[Planned], list[Planned]]:
    """(to write, already there); a different file in the way is refused."""
    write, there = [], []
    for item in files:
        target = out / item.target
        if not target.exists():
            write.append(item)
        elif target.is_file() and _same(item.source, target):
            there.append(item)
        else:
            raise InputError(
                "already exists and is not the bundled file",
                where=str(target),
                fix="Give a new or empty folder, or move that file away.",
            )
    return write, there


def _copy(out: Path, files: list[Planned]) -> None:
    from geoscreen.fileio import atomic_write

    for item in files:
        target = out / item.target
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, partial(shutil.copyfile, item.source))


@cli.group()
def samples() -> None:
    """The bundled real samples (imagery, labels) to try geoscreen on, offline."""


@samples.command("list")
@json_option
def list_samples(as_json: bool) -> None:
    """List the bundled samples: name, file and what it is."""
    rows = []
    for name in _names():
        files = [PARTS_FOLDER + "/"] if name == PARTS else [f.target for f in _sample_files(name)]
        rows.append({"name": name, "files": files, "description": DESCRIPTIONS.get(name, "")})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(f"{row['name']:<20} {row['files'][0]:<46} {row['description']}")


@samples.command("copy")
@click.argument("out", type=click.Path(path_type=Path))
@click.argument("names", nargs=-1, metavar="[NAME]...")
@json_option
def copy_samples(out: Path, names: tuple[str, ...], as_json: bool) -> None:
    """Copy samples (default: all, about 21 MB) into the folder OUT, with the shipped
    profiles (OUT/profiles/) and the data's sources and licences.

    neon_osbs_parts writes OUT/incoming/osbs_029_part1.tif ... part4.tif.
    """
    from geoscreen.fileio import check_output_dir

    known = _names()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(
            f"unknown sample {unknown[0]!r}",
            fix=f"Use one of: {', '.join(known)} ('geoscreen samples list').",
        )
    check_output_dir(out, option="OUT")
    chosen = list(dict.fromkeys(names)) or known
    files = [f for n in chosen if n != PARTS for f in _sample_files(n)]
    with tempfile.TemporaryDirectory(prefix="geoscreen-samples-") as scratch:
        if PARTS in chosen:
            files += _cut_parts(Path(scratch))
        files += _support_files(chosen)
        write, there = _plan(out, files)
        _copy(out, write)
    if as_json:
        click.echo(json.dumps({"out": str(out), "samples": chosen,
                               "written": [f.target for f in write],
                               "unchanged": [f.target for f in there]}, indent=2))  # fmt: skip
        return
    click.echo(f"{len(write)} files written to {out}/ ({len(there)} already there): "
               f"{len(chosen)} samples, profiles in {out / PROFILES_FOLDER}/, "
               f"sources and licences in {out / 'SOURCES.md'} and LICENSE.*")  # fmt: skip
