"""``geoscreen info``, ``tile`` and ``demo`` through the real entry point, bad input included."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from geoscreen.cli.app import EXIT_INTERRUPTED, EXIT_USER_ERROR
from geoscreen.cli.demo import run_demo
from geoscreen.imagery.aoi import load_aoi
from geoscreen.imagery.scene import open_scene
from geoscreen.imagery.tiling import TileGrid
from geoscreen.samples import make_sentinel2_like, sample_path

Run = Callable[..., tuple[int, str, str]]  # the ``run`` fixture (conftest.py)


def _console_script() -> list[str]:
    script = Path(sys.executable).parent / "geoscreen"
    return [str(script)] if script.exists() else [sys.executable, "-m", "geoscreen"]


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("geoscreen: error:")]


# -- info ---------------------------------------------------------------------------------
def test_info_text_on_real_scene(run: Run, osbs_path: Path) -> None:
    code, out, err = run("info", osbs_path)
    assert code == 0 and err == ""
    lines = dict(line.split(None, 1) for line in out.splitlines())
    assert lines["crs"] == "EPSG:32617"
    assert lines["size"].startswith("400 x 400 px, 3 band")
    assert lines["resolution"] == "0.1 x 0.1 metre"
    assert lines["bands"] == "1 red (uint8), 2 green (uint8), 3 blue (uint8)"
    assert lines["nodata"] == "255" and lines["validity"] == "nodata value"
    assert lines["sensor"].startswith("rgb ")
    assert lines["footprint"].startswith("lon -81.99") and "lat 29.69" in lines["footprint"]
    assert lines["layout"].startswith("striped") and lines["georeferenced"] == "yes"
    assert lines["scene"].startswith(open_scene(osbs_path).id)


def test_info_json_geographic_scene(run: Run, rmnp_path: Path) -> None:
    code, out, _ = run("info", "--json", rmnp_path)
    assert code == 0
    info = json.loads(out)
    assert info["crs"] == "EPSG:4326" and info["resolution_units"] == "degree"
    assert 100 < info["resolution_m"][0] < 150
    assert info["footprint_wkt"].startswith("POLYGON")
    assert [b["name"] for b in info["bands"]] == ["red", "green", "blue"]
    assert info["georeferenced"] is True and info["acquired"] is None


def test_info_sentinel2_preset_and_time(run: Run, sentinel2_path: Path) -> None:
    code, out, _ = run("info", sentinel2_path, "--json")
    info = json.loads(out)
    assert code == 0 and info["sensor"] == "sentinel2_l2a"
    assert info["acquired"] == "2024-01-15T05:31:21+00:00"
    assert info["bands"][3] == {"index": 4, "name": "B04", "dtype": "uint16", "common_name": "red"}
    assert info["tiled"] is True and info["block_shape"] == [32, 32]
    code, out, _ = run("info", sentinel2_path)
    assert "4 B04 [red] (uint16)" in out and "acquired      2024-01-15T05:31:21+00:00" in out


def test_info_pixel_space_warns(run: Run, yell_path: Path) -> None:
    code, out, err = run("info", yell_path)
    assert code == 0
    assert "georeferenced no" in out and "none (pixel space" in out
    assert "warning" in err and "pixel space" in err


def test_info_sensor_override(run: Run, make_scene: Callable[..., Path]) -> None:
    path = make_scene(32, 32, count=4)
    code, out, _ = run("info", path, "--sensor", "naip_rgbn", "--json")
    assert code == 0 and json.loads(out)["sensor"] == "naip_rgbn"
    assert [b["name"] for b in json.loads(out)["bands"]] == ["red", "green", "blue", "nir"]


# -- tile ---------------------------------------------------------------------------------
def test_tile_real_scene_to_geoparquet(run: Run, osbs_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "tiles.parquet"
    code, stdout, err = run("tile", osbs_path, "--tile-size", "128", "--out", out)
    assert code == 0
    assert "checking tiles for data" in err  # the progress bar
    assert stdout.count("\n") == 1 and "16 of 16 tiles (4 x 4 grid, 128 px" in stdout
    frame = gpd.read_parquet(out)
    assert len(frame) == 16 and frame.crs == CRS.from_epsg(32617)
    assert frame["scene_id"].unique().tolist() == [open_scene(osbs_path).id]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiles.parquet"]


def test_tile_to_geopackage_with_aoi(
    run: Run, rmnp_path: Path, rmnp_boundary_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "park.gpkg"
    code, stdout, _ = run("tile", rmnp_path, "--tile-size", "64", "--aoi", rmnp_boundary_path,
                          "--out", out)  # fmt: skip
    assert code == 0
    frame = gpd.read_file(out, layer="tiles")
    scene = open_scene(rmnp_path)
    expected = TileGrid(scene, 64).within(load_aoi(rmnp_boundary_path, scene.crs)).drop_empty()
    assert frame["tile_id"].tolist() == [t.id for t in expected]
    assert f"{len(expected)} of 48 tiles" in stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["park.gpkg"]


def test_tile_reprojected(run: Run, rmnp_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "utm.parquet"
    code, stdout, _ = run("tile", rmnp_path, "--crs", "EPSG:32613", "--resolution", "250",
                          "--tile-size", "32", "--out", out)  # fmt: skip
    assert code == 0 and "EPSG:32613, 250 metre" in stdout
    frame = gpd.read_parquet(out)
    assert frame.crs == CRS.from_epsg(32613)
    left = frame.total_bounds[0]
    assert left % 250 == 0  # target-aligned pixels
    assert (frame["width"] <= 32).all() and len(frame) > 0


def test_tile_resolution_alone_keeps_crs(run: Run, osbs_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "coarse.parquet"
    code, stdout, _ = run("tile", osbs_path, "--resolution", "0.4", "--tile-size", "32",
                          "--out", out)  # fmt: skip
    assert code == 0 and "EPSG:32617, 0.4 metre" in stdout
    frame = gpd.read_parquet(out)
    assert frame.crs == CRS.from_epsg(32617)
    assert "(4 x 4 grid" in stdout  # 101 px at 0.4 m in 32 px tiles


def test_tile_bands_and_keep_empty(run: Run, rgb_path: Path, tmp_path: Path) -> None:
    kept, everything = tmp_path / "kept.parquet", tmp_path / "all.parquet"
    code, stdout, _ = run("tile", rgb_path, "--tile-size", "32", "--bands", "red, band3",
                          "--out", kept)  # fmt: skip
    assert code == 0 and "bands red,band3" in stdout
    assert run("tile", rgb_path, "--tile-size", "32", "--keep-empty", "--out", everything)[0] == 0
    n_kept, n_all = len(gpd.read_parquet(kept)), len(gpd.read_parquet(everything))
    # The 40-pixel nodata margin fills the top tile row and the left tile column.
    assert n_all == 4 * 5 and n_kept == 3 * 4


def test_tile_pixel_space_png(run: Run, yell_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "yell.parquet"
    code, stdout, err = run("tile", yell_path, "--tile-size", "256", "--overlap", "32",
                            "--out", out)  # fmt: skip
    assert code == 0 and "pixel space" in stdout and "pixel space" in err
    frame = gpd.read_parquet(out)
    assert frame.crs is None and len(frame) == 30


def test_tile_all_empty_writes_an_empty_file(
    run: Run, make_scene: Callable[..., Path], tmp_path: Path
) -> None:
    path = make_scene(40, 40, nodata=0, nodata_margin=40)
    out = tmp_path / "none.parquet"
    code, stdout, err = run("tile", path, "--tile-size", "16", "--out", out)
    assert code == 0 and stdout.startswith("0 of 9 tiles") and "no tile holds valid" in err
    assert len(gpd.read_parquet(out)) == 0


# -- bad input ------------------------------------------------------------------------------
def _truncated(tmp: Path, make_scene: Callable[..., Path]) -> Path:
    data = make_scene(512, 512, blocksize=64).read_bytes()
    path = tmp / "truncated.tif"
    path.write_bytes(data[: len(data) // 2])
    return path


def _garbage_after_header(tmp: Path, make_scene: Callable[..., Path]) -> Path:
    data = make_scene(256, 256, blocksize=64).read_bytes()
    path = tmp / "corrupt.tif"
    noise = np.random.default_rng(0).integers(0, 256, len(data) - 8, dtype=np.uint8)
    path.write_bytes(data[:8] + noise.tobytes())
    return path


def _corrupt_inner_block(tmp: Path, make_scene: Callable[..., Path]) -> Path:
    path = make_scene(512, 512, blocksize=64, nodata=0, name="inner.tif")
    with rasterio.open(path) as ds:
        offset = int(ds.get_tag_item("BLOCK_OFFSET_1_1", "TIFF", bidx=1))
        size = int(ds.get_tag_item("BLOCK_SIZE_1_1", "TIFF", bidx=1))
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\x00\xff" * (size // 2))
    return path


def _text(tmp: Path, _: Callable[..., Path]) -> Path:
    path = tmp / "notes.tif"
    path.write_text("field notes, not an image\n")
    return path


def _vrt(xml: str) -> Callable[[Path, Callable[..., Path]], Path]:
    def make(tmp: Path, _: Callable[..., Path]) -> Path:
        path = tmp / "bad.vrt"
        path.write_text(xml)
        return path

    return make


def _complex(tmp: Path, _: Callable[..., Path]) -> Path:
    path = tmp / "slc.tif"
    with rasterio.open(path, "w", driver="GTiff", width=16, height=16, count=1,
                       dtype="complex64", crs="EPSG:32633",
                       transform=Affine(10, 0, 500_000, 0, -10, 4_500_000)) as ds:  # fmt: skip
        ds.write(np.ones((1, 16, 16), dtype=np.complex64))
    return path


def _sample(name: str) -> Callable[[Path, Callable[..., Path]], Path]:
    return lambda tmp, _: sample_path(name)


_BOUNDARY = "{rmnp_boundary}"
BAD_TILE_INPUTS = {
    "missing file": (lambda tmp, _: tmp / "missing.tif", [], "file not found"),
    "text file": (_text, [], "cannot open as a raster"),
    "truncated tiff": (_truncated, [], "truncated or corrupt"),
    "garbage after header": (_garbage_after_header, [], "cannot open as a raster"),
    "corrupt block read at tile time": (_corrupt_inner_block, [], "pixel data cannot be read"),
    "zero-band vrt": (
        _vrt('<VRTDataset rasterXSize="8" rasterYSize="8"></VRTDataset>'),
        [],
        "cannot open as a raster",
    ),
    "zero-size vrt": (
        _vrt(
            '<VRTDataset rasterXSize="0" rasterYSize="0"><VRTRasterBand '
            'dataType="Byte" band="1"/></VRTDataset>'
        ),
        [],
        "cannot open",
    ),
    "complex64": (_complex, [], "unsupported pixel type complex64"),
    "png with --crs": (_sample("neon_yell"), ["--crs", "EPSG:32612"], "has no CRS"),
    "png with --resolution": (_sample("neon_yell"), ["--resolution", "2"], "has no CRS"),
    "png with --aoi": (_sample("neon_yell"), ["--aoi", _BOUNDARY], "scene has no CRS"),
    "aoi misses scene": (_sample("neon_osbs"), ["--aoi", _BOUNDARY], "does not overlap"),
    "aoi file missing": (_sample("neon_osbs"), ["--aoi", "nope.geojson"], "AOI file not found"),
    "band the scene lacks": (_sample("neon_osbs"), ["--bands", "red,nir"], "band 'nir'"),
    "band the sensor lacks": (
        lambda tmp, _: make_sentinel2_like(tmp / "s2.tif", 32, 32),
        ["--bands", "red,thermal"],
        "band 'thermal' is not in this scene",
    ),
    "sensor mismatch": (_sample("neon_osbs"), ["--sensor", "landsat89_l2"], "expects 7 bands"),
    "unknown sensor": (_sample("neon_osbs"), ["--sensor", "spot"], "unknown sensor preset"),
    "bad crs": (_sample("neon_osbs"), ["--crs", "EPSG:nope"], "not a coordinate reference"),
    "tile size too small": (_sample("neon_osbs"), ["--tile-size", "4"], "tile size"),
    "empty --bands": (_sample("neon_osbs"), ["--bands", ","], "--bands is empty"),
}


@pytest.mark.parametrize("case", list(BAD_TILE_INPUTS), ids=list(BAD_TILE_INPUTS))
def test_tile_bad_input_is_one_clean_line(
    case: str, run: Run, tmp_path: Path, make_scene: Callable[..., Path], rmnp_boundary_path: Path
) -> None:
    make_input, extra, expected = BAD_TILE_INPUTS[case]
    inputs = tmp_path / "in"
    inputs.mkdir()
    scene = make_input(inputs, make_scene)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    args = [a.replace(_BOUNDARY, str(rmnp_boundary_path)) for a in extra]
    code, stdout, err = run("tile", scene, *args, "--out", out_dir / "tiles.parquet")
    assert code == EXIT_USER_ERROR
    assert "Traceback" not in err
    lines = _error_lines(err)
    assert len(lines) == 1, err
    assert expected in lines[0]
    assert list(out_dir.iterdir()) == []  # nothing written, not even a partial file
    assert stdout == ""


@pytest.mark.parametrize(
    ("out", "expected"),
    [
        ("missing-folder/tiles.parquet", "output folder does not exist"),
        ("tiles.csv", "cannot tell the output format"),
        ("a-folder.parquet", "output path is a folder"),
    ],
)
def test_tile_bad_output(
    run: Run, osbs_path: Path, tmp_path: Path, out: str, expected: str
) -> None:
    (tmp_path / "a-folder.parquet").mkdir()
    code, _, err = run("tile", osbs_path, "--out", tmp_path / out)
    assert code == EXIT_USER_ERROR and "Traceback" not in err
    assert len(_error_lines(err)) == 1 and expected in err
    assert [p.name for p in tmp_path.iterdir()] == ["a-folder.parquet"]


@pytest.mark.parametrize("case", ["missing file", "truncated tiff", "complex64"])
def test_info_bad_input(
    case: str, run: Run, tmp_path: Path, make_scene: Callable[..., Path]
) -> None:
    make_input, _, expected = BAD_TILE_INPUTS[case]
    code, stdout, err = run("info", make_input(tmp_path, make_scene))
    assert code == EXIT_USER_ERROR and stdout == ""
    assert len(_error_lines(err)) == 1 and expected in err and "Traceback" not in err


def test_debug_shows_the_traceback(run: Run, tmp_path: Path) -> None:
    for args in (("--debug", "info", tmp_path / "x.tif"), ("info", tmp_path / "x.tif", "--debug")):
        code, _, err = run(*args)
        assert code == EXIT_USER_ERROR
        assert "Traceback" in err and "InputError" in err
        assert "geoscreen: error:" in err and "file not found" in err


def test_usage_errors_exit_2(run: Run, osbs_path: Path) -> None:
    code, _, err = run("tile", osbs_path)  # --out is required
    assert code == EXIT_USER_ERROR and "--out" in err and "Traceback" not in err


# -- real processes -------------------------------------------------------------------------
def test_console_script_bad_input(tmp_path: Path) -> None:
    result = subprocess.run(
        [*_console_script(), "tile", str(tmp_path / "missing.tif"), "--out",
         str(tmp_path / "tiles.parquet")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == EXIT_USER_ERROR
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("geoscreen: error:") and "file not found" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_interrupted_tile_leaves_no_file(osbs_path: Path, tmp_path: Path) -> None:
    # A fine warped grid takes tens of seconds to check; interrupt it once it has started.
    out = tmp_path / "tiles.parquet"
    proc = subprocess.Popen(
        [*_console_script(), "tile", str(osbs_path), "--crs", "EPSG:3857", "--resolution",
         "0.02", "--tile-size", "8", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        # Ctrl-C as a terminal delivers it: a test run started in the background of a
        # script inherits SIGINT ignored, and the command would never see the interrupt.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    assert proc.stderr is not None
    seen, deadline = b"", time.monotonic() + 60
    while b"checking tiles" not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 1.0)
        if ready:
            chunk = os.read(proc.stderr.fileno(), 4096)
            if not chunk:
                break
            seen += chunk
    assert b"checking tiles" in seen, seen
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=60)
    err = (seen + rest).decode()
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert "geoscreen: interrupted" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


# -- demo -------------------------------------------------------------------------------------
def test_demo_runs_the_whole_loop(run: Run, tmp_path: Path) -> None:
    """geoscreen demo --no-serve: tile, train, scan into SQLite, map, demo user (issue 7)."""
    out = tmp_path / "demo"
    code, stdout, _ = run("demo", "--out", out, "--no-serve")
    assert code == 0, stdout
    assert "NEON OSBS_029" in stdout and "Rocky Mountain NP" in stdout
    assert "16 of 16 tiles" in stdout
    names = {p.name for p in out.iterdir()}
    assert {"neon_osbs_tiles.parquet", "rmnp_rgb_tiles.parquet", "map.html",
            "geoscreen.sqlite", "model", "imagery", "runs"} <= names  # fmt: skip
    assert (out / "model" / "MODEL_CARD.md").is_file()
    assert "model written to" in stdout  # the task's own summary: trained through task_for
    assert "4 screened" in stdout and "one-time password: " in stdout
    password = stdout.split("one-time password: ")[1].split()[0]
    from geoscreen.review.store import open_store
    from geoscreen.review.users import authenticate

    store = open_store(out / "geoscreen.sqlite")
    try:
        assert store.count() > 0
        user = authenticate(store, "demo", password)
        assert user is not None and user.role == "supervisor"
    finally:
        store.close()
    page = (out / "map.html").read_text(encoding="utf-8")
    assert "matches profile tree_crowns_neon" in page and '<script src="http' not in page
    code, stdout, _ = run("demo", "--out", out, "--no-serve")  # again: reuses, skips
    assert code == 0 and "reusing the trained model" in stdout and "4 already screened" in stdout


def test_run_demo_reports_counts(tmp_path: Path) -> None:
    lines: list[str] = []
    found = run_demo(tmp_path / "nested" / "demo", echo=lines.append)
    by_name = {d.name: d for d in found}
    assert set(by_name) == {"neon_osbs", "rmnp_rgb"}
    assert (by_name["neon_osbs"].tiles_total, by_name["neon_osbs"].tiles_valid) == (16, 16)
    rmnp = by_name["rmnp_rgb"]
    assert rmnp.tiles_total == 12 and 0 < rmnp.tiles_valid < 12  # the park AOI drops tiles
    assert len(gpd.read_parquet(rmnp.tiles_path)) == rmnp.tiles_valid
    assert any("Tile grids written" in line for line in lines)


def test_demo_out_is_a_file(run: Run, tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.write_text("x")
    code, _, err = run("demo", "--out", target)
    assert code == EXIT_USER_ERROR and "is a file" in err
    assert target.read_text() == "x"
