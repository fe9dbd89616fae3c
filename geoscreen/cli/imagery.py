"""``geoscreen info`` and ``geoscreen tile``: look at a scene, cut it into a tile grid."""

from __future__ import annotations

import json
import math
import os
from typing import TYPE_CHECKING, Any

import click

from geoscreen.cli.app import cli
from geoscreen.cli.options import json_option
from geoscreen.errors import ConfigError, InputError
from geoscreen.fileio import atomic_write
from geoscreen.imagery.sensors import PRESETS, get_preset

if TYPE_CHECKING:  # rasterio, shapely and geopandas load when a command runs
    from geoscreen.imagery.scene import Scene
    from geoscreen.imagery.tiling import TileGrid

_PRESET_HELP = f"Sensor band preset, overriding detection ({', '.join(sorted(PRESETS))})."
_MASK_TEXT = {
    "nodata": "nodata value",
    "mask": "internal mask or alpha band",
    "all_valid": "none: every pixel counts as valid",
}
_FORMATS = {".parquet": "parquet", ".geoparquet": "parquet", ".gpkg": "gpkg"}


# -- info -------------------------------------------------------------------------------
def scene_summary(scene: Scene) -> dict[str, Any]:
    """Everything ``geoscreen info`` reports about a scene, JSON-ready."""
    import shapely

    footprint = scene.footprint
    nodata: float | str | None = scene.nodata
    if isinstance(nodata, float) and math.isnan(nodata):
        nodata = "nan"
    return {
        "id": scene.id,
        "uri": scene.uri,
        "width": scene.width,
        "height": scene.height,
        "count": scene.count,
        "crs": _crs_text(scene),
        "georeferenced": scene.georeferenced,
        "resolution": list(scene.resolution),
        "resolution_units": _units(scene),
        "resolution_m": list(scene.resolution_m) if scene.resolution_m else None,
        "bands": [
            {"index": i, "name": n, "dtype": d, "common_name": scene.common_name(i)}
            for i, (n, d) in enumerate(zip(scene.band_names, scene.dtypes, strict=True), start=1)
        ],
        "nodata": nodata,
        "mask_kind": scene.mask_kind,
        "sensor": scene.sensor,
        "footprint_wkt": shapely.to_wkt(footprint, rounding_precision=7) if footprint else None,
        "bounds_epsg4326": list(footprint.bounds) if footprint else None,
        "acquired": scene.acquired.isoformat() if scene.acquired else None,
        "tiled": scene.is_tiled,
        "block_shape": list(scene.block_shape),
        "overviews": scene.overview_count,
    }


def _crs_text(scene: Scene) -> str | None:
    if scene.crs is None:
        return None
    epsg = scene.crs.to_epsg()
    if epsg:
        return f"EPSG:{epsg}"
    from pyproj import CRS as ProjCRS

    return f"{ProjCRS.from_wkt(scene.crs.to_wkt()).name} (no EPSG code)"


def _units(scene: Scene) -> str:
    if scene.crs is None:
        return "pixel"
    return str(scene.crs.units_factor[0]) if scene.crs.units_factor else "unknown"


def format_summary(info: dict[str, Any]) -> list[str]:
    """The text lines of ``geoscreen info`` for a :func:`scene_summary`."""
    xres, yres = info["resolution"]
    res = f"{xres:.6g} x {yres:.6g} {info['resolution_units']}"
    if info["resolution_m"] and info["resolution_units"] not in ("metre", "meter"):
        res += " (about {:.4g} x {:.4g} m)".format(*info["resolution_m"])
    bands = ", ".join(
        f"{b['index']} {b['name']}"
        + (f" [{b['common_name']}]" if b["common_name"] not in (None, b["name"]) else "")
        + f" ({b['dtype']})"
        for b in info["bands"]
    )
    if info["bounds_epsg4326"]:
        w, s, e, n = info["bounds_epsg4326"]
        footprint = f"lon {w:.6f} .. {e:.6f}, lat {s:.6f} .. {n:.6f} (EPSG:4326)"
    else:
        footprint = "none (pixel space)"
    preset = info["sensor"]
    block_h, block_w = info["block_shape"]
    layout = (
        f"tiled, {block_w} x {block_h} blocks"
        if info["tiled"]
        else f"striped ({block_h} row(s) per strip)"
    )
    rows = [
        ("scene", f"{info['id']}  {info['uri']}"),
        ("size", f"{info['width']} x {info['height']} px, {info['count']} band(s)"),
        ("crs", info["crs"] or "none (pixel space: x = column, y = row)"),
        ("resolution", res),
        ("bands", bands),
        ("nodata", _number(info["nodata"])),
        ("validity", _MASK_TEXT.get(info["mask_kind"], info["mask_kind"])),
        ("sensor", f"{preset} ({get_preset(preset).description})" if preset else "not detected"),
        ("footprint", footprint),
        ("acquired", info["acquired"] or "unknown (no date tag in the file)"),
        ("layout", f"{layout}, {info['overviews']} overview(s)"),
        ("georeferenced", "yes" if info["georeferenced"] else "no"),
    ]
    return [f"{key:<14}{value}" for key, value in rows]


def _number(value: float | str | None) -> str:
    if value is None:
        return "none"
    return f"{value:g}" if isinstance(value, float | int) else str(value)


def _warn_pixel_space(scene: Scene) -> None:
    if not scene.georeferenced:
        click.echo(
            f"geoscreen: warning: {scene.uri} has no CRS: working in pixel space "
            "(x = column, y = row); --aoi, --crs and --resolution need a georeferenced file.",
            err=True,
        )


@cli.command()
@click.argument("scene", metavar="SCENE")
@json_option
@click.option("--sensor", metavar="PRESET", default=None, help=_PRESET_HELP)
def info(scene: str, as_json: bool, sensor: str | None) -> None:
    """Describe a raster: grid, CRS, bands, validity, sensor, footprint, layout."""
    from geoscreen.imagery.scene import open_scene

    opened = open_scene(scene, sensor=sensor)
    summary = scene_summary(opened)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo("\n".join(format_summary(summary)))
    _warn_pixel_space(opened)


# -- tile -------------------------------------------------------------------------------
def output_format(out: str) -> str:
    """'parquet' or 'gpkg' from the extension of ``out``; checks its folder exists."""
    ext = os.path.splitext(out)[1].lower()
    if ext not in _FORMATS:
        raise ConfigError(
            f"cannot tell the output format from {out!r}",
            fix="End --out with .parquet (GeoParquet) or .gpkg (GeoPackage).",
        )
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise InputError("output folder does not exist", where=parent,
                         fix="Create it first or choose another --out.")  # fmt: skip
    if os.path.isdir(out):
        raise InputError("output path is a folder", where=out, fix="Give a file name for --out.")
    return _FORMATS[ext]


def build_grid(
    scene: Scene,
    *,
    tile_size: int = 256,
    overlap: int = 0,
    aoi: str | None = None,
    bands: list[str] | None = None,
    crs: str | None = None,
    resolution: float | None = None,
    keep_empty: bool = False,
    progress: bool = False,
) -> TileGrid:
    """The tile grid ``geoscreen tile`` writes: reprojected, AOI-filtered, empty tiles dropped.

    ``resolution`` without ``crs`` keeps the scene's CRS. ``bands`` are checked against
    the scene; a tile is kept when those bands hold at least one valid pixel.
    """
    from geoscreen.imagery.aoi import load_aoi
    from geoscreen.imagery.tiling import TileGrid

    if crs is not None or resolution is not None:
        # A scene without a CRS makes reproject() explain that it needs one.
        scene = scene.reproject(crs or scene.crs or "", resolution)
    indexes = scene.band_indexes(bands)
    grid = TileGrid(scene, tile_size, overlap)
    if aoi is not None:
        grid = grid.within(load_aoi(aoi, scene.crs))
    if not keep_empty:
        grid = grid.drop_empty(progress=progress, indexes=indexes)
    return grid


def write_grid(grid: TileGrid, out: str) -> None:
    """Write ``grid`` as GeoParquet or GeoPackage (by extension), whole or not at all."""
    fmt = output_format(out)
    try:
        if fmt == "parquet":
            grid.to_parquet(out)
        else:
            frame = grid.to_geodataframe()
            atomic_write(out, lambda tmp: frame.to_file(tmp, driver="GPKG", layer="tiles"))
    except OSError as exc:
        raise InputError(
            f"cannot write the output ({exc.strerror or exc})",
            where=out,
            fix="Check the folder is writable and has free space.",
        ) from exc


def _split(value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise ConfigError("--bands is empty", fix="Give band names such as red,green,blue.")
    return names


@cli.command()
@click.argument("scene", metavar="SCENE")
@click.option(
    "--out",
    "out",
    required=True,
    metavar="FILE",
    help="Output tile grid: .parquet (GeoParquet) or .gpkg (GeoPackage).",
)
@click.option("--tile-size", default=256, show_default=True, help="Tile size in pixels.")
@click.option("--overlap", default=0, show_default=True, help="Overlap between tiles in pixels.")
@click.option(
    "--aoi",
    metavar="FILE",
    default=None,
    help="Keep only tiles touching the polygons of this vector file (any CRS).",
)
@click.option(
    "--bands",
    metavar="A,B,C",
    default=None,
    help="Bands to use (names, common names or band1, band2...); default all.",
)
@click.option("--sensor", metavar="PRESET", default=None, help=_PRESET_HELP)
@click.option("--crs", metavar="EPSG", default=None, help="Reproject (lazily) to this CRS.")
@click.option(
    "--resolution",
    type=float,
    default=None,
    help="Target pixel size in CRS units (alone: same CRS, new resolution).",
)
@click.option("--keep-empty", is_flag=True, help="Keep tiles holding no valid pixel.")
@json_option
def tile(
    scene: str, out: str, tile_size: int, overlap: int, aoi: str | None, bands: str | None,
    sensor: str | None, crs: str | None, resolution: float | None, keep_empty: bool,
    as_json: bool,
) -> None:  # fmt: skip
    """Cut SCENE into a grid of tiles and write it as GeoParquet or GeoPackage."""
    from geoscreen.imagery.scene import open_scene

    output_format(out)  # fail before any work
    opened = open_scene(scene, sensor=sensor)
    names = _split(bands)
    grid = build_grid(
        opened, tile_size=tile_size, overlap=overlap, aoi=aoi, bands=names, crs=crs,
        resolution=resolution, keep_empty=keep_empty, progress=True,
    )  # fmt: skip
    _warn_pixel_space(opened)
    write_grid(grid, out)
    if not len(grid):
        click.echo("geoscreen: warning: no tile holds valid pixels; the file is empty.", err=True)
    if as_json:
        click.echo(json.dumps(tile_record(grid, out, names), indent=2))
        return
    click.echo(tile_summary(grid, out, names))


def tile_record(grid: TileGrid, out: str, bands: list[str] | None = None) -> dict[str, Any]:
    """What :func:`tile_summary` says, for machines (``tile --json``)."""
    scene = grid.scene
    return {
        "out": out,
        "tiles": len(grid),
        "grid_tiles": grid.n_rows * grid.n_cols,
        "rows": grid.n_rows,
        "cols": grid.n_cols,
        "tile_size": grid.tile_size,
        "overlap": grid.overlap,
        "scene": scene.uri,
        "scene_id": scene.id,
        "crs": _crs_text(scene),
        "resolution": [float(r) for r in scene.resolution],
        "units": _units(scene),
        "bands": bands,
    }


def tile_summary(grid: TileGrid, out: str, bands: list[str] | None = None) -> str:
    """One line: how many tiles were kept of the full grid, and where they went."""
    scene, total = grid.scene, grid.n_rows * grid.n_cols
    where = _crs_text(scene) or "pixel space"
    res = f"{scene.resolution[0]:.6g} {_units(scene)}"
    used = f", bands {','.join(bands)}" if bands else ""
    return (
        f"{len(grid)} of {total} tiles ({grid.n_rows} x {grid.n_cols} grid, {grid.tile_size} px, "
        f"overlap {grid.overlap}) of scene {scene.id} [{where}, {res}{used}] -> {out}"
    )
