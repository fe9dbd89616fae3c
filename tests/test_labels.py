"""Labelled examples on a scene's pixel grid: real NEON labels, reprojection, reporting."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from pyproj import Transformer

from geoscreen.errors import InputError
from geoscreen.imagery.scene import Scene, open_scene
from geoscreen.labels import LabelsForOtherImage, load_labels


@pytest.fixture(scope="module")
def osbs(osbs_path: Path) -> Scene:
    return open_scene(osbs_path)


@pytest.fixture(scope="module")
def yell(yell_path: Path) -> Scene:
    return open_scene(yell_path)


def lonlat_of_pixels(scene: Scene, cols_rows: np.ndarray) -> np.ndarray:
    """Pixel positions (col, row) -> lon/lat through the scene transform and pyproj."""
    xs, ys = scene.transform @ (cols_rows[:, 0], cols_rows[:, 1])
    to_wgs84 = Transformer.from_crs(scene.crs, "EPSG:4326", always_xy=True)
    lon, lat = to_wgs84.transform(xs, ys)
    return np.column_stack([lon, lat])


def write_geojson(path: Path, features: list[tuple[dict[str, object] | None, object]]) -> Path:
    items = [
        {"type": "Feature", "geometry": geom, "properties": {"label": label}}
        for geom, label in features
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    return path


def point(lon: float, lat: float) -> dict[str, object]:
    return {"type": "Point", "coordinates": [lon, lat]}


# -- real bundled labels -----------------------------------------------------------------
def test_osbs_csv_gives_61_positive_boxes_inside(osbs: Scene, osbs_labels_path: Path) -> None:
    labels = load_labels(osbs_labels_path, osbs)
    assert len(labels) == 61 and len(labels.positives()) == 61 and len(labels.negatives()) == 0
    boxes = labels.boxes_px()
    assert boxes.shape == (61, 4)
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 400).all()
    assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= 400).all()
    np.testing.assert_array_equal(boxes[0], [203, 67, 227, 90])  # first row of OSBS_029.csv
    np.testing.assert_allclose(labels.centres()[0], [215.0, 78.5])
    assert set(labels.frame["label"]) == {"Tree"}
    report = labels.report
    assert (report.rows, report.kept, report.dropped_outside, report.invalid) == (61, 61, 0, 0)
    assert report.summary() == "OSBS_029.csv: 61 of 61 labels kept (61 positive, 0 negative)"
    # the scene-CRS geometry sits on the 0.1 m grid of the GeoTIFF
    x0, _, _, y1 = labels.frame["geometry_crs"].iloc[0].bounds
    assert (x0, y1) == pytest.approx(osbs.transform @ (203, 67))
    assert labels.frame["geometry_crs"].crs == osbs.crs


def test_osbs_explicit_positive_classes(osbs: Scene, osbs_labels_path: Path) -> None:
    assert len(load_labels(osbs_labels_path, osbs, positive_classes=["tree"]).positives()) == 61
    assert len(load_labels(osbs_labels_path, osbs, positive_classes=["Shrub"]).negatives()) == 61


def test_yell_voc_gives_279_boxes_in_pixel_space(yell: Scene, yell_labels_path: Path) -> None:
    labels = load_labels(yell_labels_path, yell)
    assert len(labels) == 279 and len(labels.positives()) == 279
    assert "geometry_crs" not in labels.frame.columns
    boxes = labels.boxes_px()
    np.testing.assert_array_equal(boxes[0], [1012, 161, 1041, 196])
    assert boxes[:, 2].max() <= 1249 and boxes[:, 3].max() <= 1035
    assert labels.report.format == "voc"


def test_rows_for_other_images_are_counted(
    osbs: Scene, osbs_labels_path: Path, tmp_path: Path
) -> None:
    path = tmp_path / "mixed.csv"
    extra = "OTHER_001.tif,1,1,20,20,Tree\nOTHER_002.tif,5,5,9,9,Tree\n"
    path.write_text(osbs_labels_path.read_text() + extra)
    labels = load_labels(path, osbs)
    assert len(labels) == 61 and labels.report.other_image == 2
    assert "2 rows for other images ignored" in labels.report.summary()
    assert len(load_labels(path, osbs, match_image=False)) == 63


def test_labels_for_another_image_only(yell: Scene, osbs_labels_path: Path) -> None:
    with pytest.raises(InputError, match="none of the 61 labels are for this scene"):
        load_labels(osbs_labels_path, yell)


def test_an_annotation_without_objects_says_the_image_holds_none(
    yell: Scene, osbs: Scene, tmp_path: Path
) -> None:
    """A VOC file of this image without <object>: an empty set (background for a
    detector), not the refusal of a file without labels; for another image: not this one's."""
    empty = tmp_path / "empty.xml"
    empty.write_text(
        "<annotation><filename>2019_YELL_2_541000_4977000_image_crop.png</filename>"
        "<size><width>1249</width><height>1035</height></size></annotation>"
    )
    labels = load_labels(empty, yell)
    assert len(labels) == 0 and labels.centres().shape == (0, 2)
    summary = labels.report.summary()
    assert summary == "empty.xml: an annotation without objects (the image holds none)"
    with pytest.raises(LabelsForOtherImage, match=r"the annotation \(without objects\) is for"):
        load_labels(empty, osbs)
    # DeepForest's CSV mark of an empty frame: a row of zeros for the image.
    frames = tmp_path / "frames.csv"
    frames.write_text("image_path,xmin,ymin,xmax,ymax,label\n"
                      "2019_YELL_2_541000_4977000_image_crop.png,0,0,0,0,Tree\n"
                      "OSBS_029.tif,10,10,40,40,Tree\nOSBS_029.tif,0,0,0,0,Tree\n")  # fmt: skip
    assert "without objects (the image holds none)" in load_labels(frames, yell).report.summary()
    osbs_set = load_labels(frames, osbs)  # a zero row beside real boxes: left out, not bad
    assert len(osbs_set) == 1 and osbs_set.report.invalid == 0
    header_only = tmp_path / "none.csv"
    header_only.write_text("image_path,xmin,ymin,xmax,ymax,label\n")
    with pytest.raises(InputError, match="holds no labels"):
        load_labels(header_only, osbs, crs="pixel")


def test_voc_size_must_match(osbs: Scene, yell_labels_path: Path, tmp_path: Path) -> None:
    renamed = tmp_path / "OSBS_029.xml"
    text = yell_labels_path.read_text()
    renamed.write_text(text.replace("2019_YELL_2_541000_4977000_image_crop.png", "OSBS_029.tif"))
    with pytest.raises(InputError, match="for a 1249 x 1035 image but the scene is 400 x 400"):
        load_labels(renamed, osbs)


# -- reprojection --------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:Could not parse column:UserWarning")  # mixed-type labels
def test_wgs84_points_land_on_their_pixels(osbs: Scene, tmp_path: Path) -> None:
    pixels = np.array([[10.5, 20.5], [200.0, 300.0], [399.5, 0.5], [123.25, 45.75]])
    lonlat = lonlat_of_pixels(osbs, pixels)
    path = write_geojson(
        tmp_path / "points.geojson",
        [(point(*ll), lab) for ll, lab in zip(lonlat, [1, 0, "yes", "negative"], strict=True)],
    )
    labels = load_labels(path, osbs)
    np.testing.assert_allclose(labels.centres(), pixels, atol=1e-4)
    assert labels.frame["positive"].tolist() == [True, False, True, False]
    assert labels.frame["label"].tolist() == ["1", "0", "yes", "negative"]
    in_utm = shapely.get_coordinates(labels.frame["geometry_crs"].values)
    expected = np.column_stack(osbs.transform @ (pixels[:, 0], pixels[:, 1]))
    np.testing.assert_allclose(in_utm, expected, atol=1e-4)


@pytest.mark.parametrize("name", ["polys.shp", "polys.gpkg"])
def test_polygons_in_web_mercator(osbs: Scene, tmp_path: Path, name: str) -> None:
    left, bottom, _, top = osbs.bounds
    frame = gpd.GeoDataFrame(
        {"label": ["kiln", "field"]},
        geometry=[
            shapely.box(left + 1, top - 3, left + 2, top - 1),  # cols 10-20, rows 10-30
            shapely.box(left + 30, bottom + 5, left + 35, bottom + 10),
        ],
        crs=osbs.crs,
    ).to_crs("EPSG:3857")
    frame.to_file(tmp_path / name)
    labels = load_labels(tmp_path / name, osbs, positive_classes=["kiln"])
    np.testing.assert_allclose(labels.boxes_px()[0], [10, 10, 20, 30], atol=0.05)
    np.testing.assert_allclose(labels.boxes_px()[1], [300, 300, 350, 350], atol=0.05)
    assert labels.frame["positive"].tolist() == [True, False]


def test_csv_points_lonlat_and_xy(osbs: Scene, tmp_path: Path) -> None:
    pixels = np.array([[50.5, 60.5], [250.5, 350.5]])
    lonlat = lonlat_of_pixels(osbs, pixels)
    path = tmp_path / "points.csv"
    path.write_text(
        "lon,lat,label\n" + "".join(f"{float(a)!r},{float(b)!r},true\n" for a, b in lonlat)
    )
    np.testing.assert_allclose(load_labels(path, osbs).centres(), pixels, atol=1e-4)
    xs, ys = osbs.transform @ (pixels[:, 0], pixels[:, 1])
    xy = tmp_path / "xy.csv"
    xy.write_text(
        "x,y,label\n"
        + "".join(f"{float(a)!r},{float(b)!r},1\n" for a, b in zip(xs, ys, strict=True))
    )
    np.testing.assert_allclose(load_labels(xy, osbs, crs="EPSG:32617").centres(), pixels, atol=1e-6)
    with pytest.raises(InputError, match="coordinate system is unknown"):
        load_labels(xy, osbs)
    with pytest.raises(InputError, match="2 outside the scene"):  # UTM metres read as pixels
        load_labels(xy, osbs, crs="pixel")


def test_georeferenced_labels_need_a_georeferenced_scene(yell: Scene, tmp_path: Path) -> None:
    path = write_geojson(tmp_path / "p.geojson", [(point(-110.5, 44.6), "positive")])
    with pytest.raises(InputError, match="scene has no georeference"):
        load_labels(path, yell)
    # the same kind of file holding pixel coordinates works when it says so
    pixels = write_geojson(tmp_path / "px.geojson", [(point(600.5, 400.5), "positive")])
    np.testing.assert_allclose(load_labels(pixels, yell, crs="pixel").centres(), [[600.5, 400.5]])


def test_pixel_labels_on_a_reprojected_scene(osbs: Scene, osbs_labels_path: Path) -> None:
    with pytest.raises(InputError, match="scene was reprojected"):
        load_labels(osbs_labels_path, osbs.reproject("EPSG:3857"))


# -- reporting ----------------------------------------------------------------------------
def test_outside_invalid_and_clipped_are_reported(osbs: Scene, tmp_path: Path) -> None:
    inside, outside = lonlat_of_pixels(osbs, np.array([[100.5, 100.5], [-50.0, 120.0]]))
    ring = lonlat_of_pixels(osbs, np.array([[380.0, 10], [420, 10], [420, 30], [380, 30]]))
    crossing = {"type": "Polygon", "coordinates": [[*ring.tolist(), ring[0].tolist()]]}
    bowtie = lonlat_of_pixels(osbs, np.array([[10.0, 10], [20, 20], [20, 10], [10, 20]]))
    invalid = {"type": "Polygon", "coordinates": [[*bowtie.tolist(), bowtie[0].tolist()]]}
    path = write_geojson(
        tmp_path / "mixed.geojson",
        [
            (point(*inside), "positive"),
            (point(*outside), "positive"),
            (crossing, "negative"),
            (invalid, "positive"),
            (None, "positive"),
            (point(*inside), None),
        ],
    )
    labels = load_labels(path, osbs)
    report = labels.report
    assert (report.rows, report.kept, report.dropped_outside, report.invalid) == (6, 2, 1, 3)
    assert report.clipped == 1 and (report.positives, report.negatives) == (1, 1)
    assert report.reasons == {
        "invalid polygon (self-intersecting or unclosed)": 1,
        "missing geometry": 1,
        "missing label": 1,
    }
    assert (1, "outside the scene") in report.dropped
    np.testing.assert_allclose(labels.boxes_px()[1], [380, 10, 400, 30], atol=1e-3)
    assert labels.frame["source_row"].tolist() == [0, 2]
    summary = report.summary()
    assert summary.startswith("mixed.geojson: 2 of 6 labels kept (1 positive, 1 negative)")
    assert "1 outside the scene" in summary and "3 invalid (" in summary
    assert "1 clipped at the scene edge" in summary


def test_bad_boxes_in_csv_are_reported(osbs: Scene, tmp_path: Path) -> None:
    path = tmp_path / "OSBS_029.csv"
    path.write_text(
        "image_path,xmin,ymin,xmax,ymax,label\n"
        "OSBS_029.tif,10,10,20,20,positive\n"
        "OSBS_029.tif,30,10,20,20,positive\n"
        "OSBS_029.tif,abc,10,20,20,negative\n"
        "OSBS_029.tif,500,500,520,520,negative\n"
    )
    report = load_labels(path, osbs).report
    assert (report.kept, report.invalid, report.dropped_outside) == (1, 2, 1)
    assert report.dropped[0] == (1, "bad box (need numbers with xmin < xmax and ymin < ymax)")


def test_nothing_usable_is_an_error(osbs: Scene, tmp_path: Path) -> None:
    outside = lonlat_of_pixels(osbs, np.array([[-100.0, -100.0]]))[0]
    path = write_geojson(tmp_path / "far.geojson", [(point(*outside), "positive")])
    with pytest.raises(InputError, match=r"no usable labels: .*1 outside the scene"):
        load_labels(path, osbs)


# -- bad input -----------------------------------------------------------------------------
def test_several_classes_need_positive_classes(osbs: Scene, tmp_path: Path) -> None:
    path = tmp_path / "classes.csv"
    path.write_text("x,y,label\n1,1,kiln\n2,2,field\n3,3,0\n")
    with pytest.raises(InputError, match=r"several classes \(field, kiln\).*positive_classes"):
        load_labels(path, osbs, crs="pixel")
    labels = load_labels(path, osbs, crs="pixel", positive_classes=["kiln"])
    assert labels.frame["positive"].tolist() == [True, False, False]


def test_unknown_format(osbs: Scene, tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_text("hello")
    with pytest.raises(InputError, match=r"unknown label file type '\.txt'.*GeoJSON"):
        load_labels(path, osbs)


def test_missing_label_column(osbs: Scene, tmp_path: Path) -> None:
    path = tmp_path / "nolabel.csv"
    path.write_text("x,y,kind\n1,1,a\n")
    with pytest.raises(InputError, match=r"no 'label' column \(columns: x, y, kind\)"):
        load_labels(path, osbs, crs="pixel")
    assert len(load_labels(path, osbs, crs="pixel", label_column="kind")) == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "the CSV file is empty"),
        ("image_path,xmin,ymin,xmax,ymax,label\n", "the file holds no labels"),
        ("a,b,label\n1,2,x\n", "CSV has no coordinate columns"),
    ],
)
def test_empty_or_shapeless_csv(osbs: Scene, tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=expected):
        load_labels(path, osbs)


def test_not_voc_and_missing_file(osbs: Scene, tmp_path: Path) -> None:
    path = tmp_path / "x.xml"
    path.write_text("<svg></svg>")
    with pytest.raises(InputError, match="not a Pascal VOC annotation"):
        load_labels(path, osbs)
    with pytest.raises(InputError, match="label file not found"):
        load_labels(tmp_path / "none.geojson", osbs)
    broken = tmp_path / "broken.geojson"
    shutil.copy(path, broken)
    with pytest.raises(InputError, match="cannot read as vector data"):
        load_labels(broken, osbs)
