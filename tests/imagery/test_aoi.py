"""AOIs from vector files in any CRS, placed on the scene's CRS."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pytest
from rasterio.crs import CRS
from shapely.geometry import LineString, MultiPolygon, Point, Polygon, box

from geoscreen.errors import InputError
from geoscreen.imagery.aoi import load_aoi
from geoscreen.imagery.scene import open_scene
from geoscreen.imagery.tiling import TileGrid


def test_real_shapefile_to_utm(rmnp_boundary_path: Path) -> None:
    aoi = load_aoi(rmnp_boundary_path, "EPSG:32613")
    assert aoi.geom_type == "Polygon" and aoi.is_valid
    # Rocky Mountain National Park is about 1,076 km².
    assert aoi.area / 1e6 == pytest.approx(1076, rel=0.02)
    left, bottom, right, top = aoi.bounds
    assert 400_000 < left < right < 480_000 and 4_400_000 < bottom < top < 4_500_000


@pytest.mark.parametrize(("ext", "driver"), [("geojson", "GeoJSON"), ("gpkg", "GPKG")])
def test_any_crs_and_format_gives_the_same_area(
    rmnp_boundary_path: Path, tmp_path: Path, ext: str, driver: str
) -> None:
    park = gpd.read_file(rmnp_boundary_path)
    path = tmp_path / f"park.{ext}"
    park.to_crs("EPSG:3857").to_file(path, driver=driver)
    reference = load_aoi(rmnp_boundary_path, "EPSG:32613")
    other = load_aoi(path, CRS.from_epsg(32613))
    assert other.symmetric_difference(reference).area < 1e-6 * reference.area


def test_polygons_are_unioned(tmp_path: Path) -> None:
    frame = gpd.GeoDataFrame(
        {"name": ["a", "b", "c"]},
        geometry=[box(0, 0, 2, 2), box(1, 1, 3, 3),
                  MultiPolygon([box(10, 10, 11, 11), box(20, 20, 21, 21)])],
        crs="EPSG:32633",
    )  # fmt: skip
    path = tmp_path / "parts.gpkg"
    frame.to_file(path)
    aoi = load_aoi(path, "EPSG:32633")
    assert aoi.geom_type == "MultiPolygon"
    assert aoi.area == pytest.approx(7 + 1 + 1)


def test_polygons_mixed_with_points_and_lines_are_refused(tmp_path: Path) -> None:
    """Which part is the area? A road or a well beside the polygons is not guessed away."""
    frame = gpd.GeoDataFrame(
        {"name": ["a", "road", "well"]},
        geometry=[box(0, 0, 2, 2), LineString([(0, 0), (50, 50)]), Point(40, 40)],
        crs="EPSG:32633",
    )
    path = tmp_path / "mixed.gpkg"
    frame.to_file(path)
    with pytest.raises(InputError, match=r"mixes polygons with 2 other features \(LineString, "
                                         r"Point\).*Keep only the area's polygons"):  # fmt: skip
        load_aoi(path, "EPSG:32633")


@pytest.mark.parametrize(
    ("shape", "reason"),
    [
        (Polygon([(0, 0), (2, 2), (2, 0), (0, 2)]), "Self-intersection"),  # a bow tie
        (Polygon([(0, 0), (4, 0), (4, 4), (0, 4)], [[(1, 1), (5, 1), (5, 2), (1, 2)]]),
         "Self-intersection"),  # a hole reaching outside the shell
    ],
)  # fmt: skip
def test_invalid_polygons_are_refused_with_a_fix(
    tmp_path: Path, shape: Polygon, reason: str
) -> None:
    assert not shape.is_valid
    path = tmp_path / "bad.geojson"
    gpd.GeoDataFrame(geometry=[box(10, 10, 11, 11), shape], crs="EPSG:4326").to_file(path)
    with pytest.raises(InputError, match=rf"feature 1 is not a valid polygon \({reason}.*"
                                         r"Repair it.*ogr2ogr -makevalid"):  # fmt: skip
        load_aoi(path, "EPSG:4326")


def test_aoi_filters_real_tiles(rmnp_path: Path, rmnp_boundary_path: Path) -> None:
    scene = open_scene(rmnp_path)
    grid = TileGrid(scene, 64)
    inside = grid.within(load_aoi(rmnp_boundary_path, scene.crs))
    assert 0 < len(inside) < len(grid)
    utm = scene.reproject("EPSG:32613", 150)
    utm_grid = TileGrid(utm, 64)
    utm_inside = utm_grid.within(load_aoi(rmnp_boundary_path, utm.crs))
    assert 0 < len(utm_inside) < len(utm_grid)


# -- bad input ------------------------------------------------------------------------------
def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"AOI file not found") as err:
        load_aoi(tmp_path / "area.geojson", "EPSG:4326")
    assert err.value.where == str(tmp_path / "area.geojson")


@pytest.mark.parametrize("content", ["just some notes\n", '{"type": "Feat'])
def test_unreadable_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "area.geojson"
    path.write_text(content)
    with pytest.raises(InputError, match=r"cannot read as a vector file") as err:
        load_aoi(path, "EPSG:4326")
    assert "It might help" not in err.value.message


def test_no_polygons(tmp_path: Path) -> None:
    path = tmp_path / "points.geojson"
    gpd.GeoDataFrame(geometry=[Point(1, 1), Point(2, 2)], crs="EPSG:4326").to_file(path)
    with pytest.raises(InputError, match=r"no polygons \(found: Point\)"):
        load_aoi(path, "EPSG:4326")
    empty = tmp_path / "empty.geojson"
    empty.write_text('{"type": "FeatureCollection", "features": []}')
    with pytest.raises(InputError, match=r"no polygons"):
        load_aoi(empty, "EPSG:4326")


@pytest.mark.filterwarnings("ignore:'crs' was not provided")
def test_no_crs_says_how_to_fix(tmp_path: Path) -> None:
    path = tmp_path / "area.shp"
    gpd.GeoDataFrame(geometry=[box(0, 0, 1, 1)]).to_file(path)  # no .prj written
    with pytest.raises(InputError, match=r"no coordinate reference system.*ogr2ogr -a_srs"):
        load_aoi(path, "EPSG:4326")


def test_degenerate_polygons_are_refused(tmp_path: Path) -> None:
    flat = Polygon([(0, 0), (1, 1), (2, 2), (0, 0)])  # zero area
    path = tmp_path / "flat.geojson"
    gpd.GeoDataFrame(geometry=[flat], crs="EPSG:4326").to_file(path)
    with pytest.raises(InputError, match=r"feature 0 is not a valid polygon"):
        load_aoi(path, "EPSG:32633")


def test_scene_without_crs(rmnp_boundary_path: Path) -> None:
    with pytest.raises(InputError, match=r"scene has no CRS, so this AOI cannot be placed"):
        load_aoi(rmnp_boundary_path, None)


def test_aoi_missing_the_scene(osbs_path: Path, rmnp_boundary_path: Path) -> None:
    scene = open_scene(osbs_path)
    aoi = load_aoi(rmnp_boundary_path, scene.crs)  # Colorado, the scene is in Florida
    with pytest.raises(InputError, match=r"AOI does not overlap the scene"):
        TileGrid(scene, 64).within(aoi)
