"""``geoscreen demo``: the whole workflow on the bundled real samples, offline.

:func:`run_demo` describes and tiles the samples (step 1);
:func:`geoscreen.demo.run_full_demo` runs the rest of the loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click

from geoscreen.cli.app import cli
from geoscreen.cli.imagery import build_grid, tile_summary, write_grid
from geoscreen.errors import InputError

DEMO_TILE_SIZE = 128


@dataclass(frozen=True)
class DemoScene:
    """What the demo found in one sample scene."""

    name: str
    scene_id: str
    tiles_total: int
    tiles_valid: int
    tiles_path: Path


def run_demo(
    out_dir: str | Path,
    *,
    tile_size: int = DEMO_TILE_SIZE,
    progress: bool = False,
    echo: Callable[[str], None] = click.echo,
) -> list[DemoScene]:
    """Open and tile the bundled samples, write their tile grids to ``out_dir``, report."""
    from geoscreen.imagery.scene import open_scene
    from geoscreen.samples import sample_path

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError("demo output path is a file", where=str(out), fix="Give a folder.")
    out.mkdir(parents=True, exist_ok=True)
    echo("geoscreen demo: bundled real samples (NEON aerial RGB, Rocky Mountain NP), offline.")
    echo("[1/6] describing and tiling the samples")
    found = []
    plans = (
        ("neon_osbs", None, "NEON OSBS_029: 0.1 m aerial RGB, UTM 17N"),
        ("rmnp_rgb", sample_path("rmnp_boundary"), "Rocky Mountain NP RGB, EPSG:4326, park AOI"),
    )
    for name, aoi, title in plans:
        scene = open_scene(sample_path(name))
        grid = build_grid(
            scene, tile_size=tile_size, aoi=str(aoi) if aoi else None, progress=progress
        )
        path = out / f"{name}_tiles.parquet"
        write_grid(grid, str(path))
        res = scene.resolution_m or scene.resolution
        echo(f"\n{title}")
        echo(
            f"  {scene.width} x {scene.height} px, {scene.count} bands "
            f"({', '.join(scene.band_names)}), about {res[0]:.3g} m pixels, sensor {scene.sensor}"
        )
        echo(f"  {tile_summary(grid, str(path))}")
        found.append(DemoScene(name, scene.id, grid.n_rows * grid.n_cols, len(grid), path))
    echo(f"\nTile grids written to {out}/ (GeoParquet; open them in QGIS or geopandas).")
    return found


@cli.command()
@click.option("--out", "out_dir", default="./demo-output", show_default=True, metavar="DIR",
              help="Folder for the demo's outputs.")  # fmt: skip
@click.option("--no-serve", is_flag=True, help="Stop after the map; do not start the server.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
def demo(out_dir: str, no_serve: bool, port: int) -> None:
    """Run the whole loop on the bundled real samples (no network needed)."""
    from geoscreen.demo import run_full_demo

    run_demo(out_dir, progress=True)
    result = run_full_demo(out_dir, click.echo)
    if no_serve:
        click.echo(f"\nDone. Open {result.map_html} in a browser, or review with:\n"
                   f"  geoscreen serve --db {result.db}")  # fmt: skip
        return
    serve_review(result.db, port)


def serve_review(db: Path, port: int) -> None:
    """Start the review server on 127.0.0.1 (Ctrl-C stops it); the store knows where the
    demo's imagery and evidence are (next to it in the demo's folder)."""
    from geoscreen.demo import profile_path
    from geoscreen.web.app import serve

    click.echo(
        f"\nReview server: http://127.0.0.1:{port}/  (log in as the demo user; Ctrl-C stops)"
    )
    serve(str(db), host="127.0.0.1", port=port, profiles=[profile_path()])
