"""Sensor band presets: layouts, detection from file metadata, defaults."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from geoscreen.errors import ConfigError
from geoscreen.imagery.scene import open_scene
from geoscreen.imagery.sensors import PRESETS, default_band_names, detect_preset, get_preset
from geoscreen.samples import SENTINEL2_BANDS


def test_every_preset_names_each_band_once_and_maps_common_names() -> None:
    for preset in PRESETS.values():
        for layout in preset.layouts():
            assert len(set(layout)) == len(layout)
            assert set(layout) <= set(preset.common_names), preset.name
        assert preset.description


def test_sentinel2_layouts() -> None:
    s2 = get_preset("sentinel2_l2a")
    assert s2.bands == SENTINEL2_BANDS
    assert s2.layout_for(13) == SENTINEL2_BANDS
    twelve = s2.layout_for(12)
    assert twelve is not None and "B10" not in twelve and len(twelve) == 12
    assert s2.layout_for(4) is None
    assert s2.common_names["B04"] == "red" and s2.common_names["B08"] == "nir"
    assert s2.common_names["B11"] == "swir16"
    assert s2.reflectance_scale == pytest.approx(1e-4)


def test_unknown_preset_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown sensor preset 'sentinel3'") as err:
        get_preset("sentinel3")
    assert err.value.fix is not None
    for name in PRESETS:
        assert name in err.value.fix


def test_detect_from_band_descriptions_case_insensitive() -> None:
    names = [b.lower() for b in SENTINEL2_BANDS]
    preset = detect_preset(13, names, ["undefined"] * 13, {})
    assert preset is not None and preset.name == "sentinel2_l2a"
    landsat = detect_preset(7, ["SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7"],
                            ["gray"] * 7, {})  # fmt: skip
    assert landsat is not None and landsat.name == "landsat89_l2"


@pytest.mark.parametrize(
    ("count", "tags", "expected"),
    [
        (13, {"SPACECRAFT_NAME": "Sentinel-2B"}, "sentinel2_l2a"),
        (12, {"PRODUCT_TYPE": "S2MSI2A"}, "sentinel2_l2a"),
        # Top-of-atmosphere reflectance only when the file says so.
        (13, {"PRODUCT_TYPE": "S2MSI1C"}, "sentinel2_l1c"),
        (13, {"PRODUCT_ID": "S2B_MSIL1C_20200101T000000_N0208_R001_T33UUU"}, "sentinel2_l1c"),
        (12, {"PROCESSING_LEVEL": "Level-1C", "SPACECRAFT_NAME": "Sentinel-2A"}, "sentinel2_l1c"),
        (7, {"SPACECRAFT_ID": "LANDSAT_9"}, "landsat89_l2"),
        (4, {"source": "PlanetScope analytic SR"}, "planetscope_4b"),
        (4, {"IMAGE_SOURCE": "NAIP 2022"}, "naip_rgbn"),
        (3, {"SPACECRAFT_NAME": "Sentinel-2A"}, None),  # tag says S2 but 3 bands fit no layout
    ],
)
def test_detect_from_tags(count: int, tags: dict[str, str], expected: str | None) -> None:
    preset = detect_preset(count, [None] * count, ["undefined"] * count, tags)
    assert (preset.name if preset else None) == expected


def test_detect_rgb_from_colour_interpretation_only() -> None:
    preset = detect_preset(3, [None] * 3, ["red", "green", "blue"], {})
    assert preset is not None and preset.name == "rgb"
    assert detect_preset(3, [None] * 3, ["gray", "undefined", "undefined"], {}) is None


def test_nothing_guessed_from_band_count_alone() -> None:
    for count in (3, 4, 7, 12, 13):
        assert detect_preset(count, [None] * count, ["undefined"] * count, {}) is None


def test_default_band_names() -> None:
    assert default_band_names(3, ["red", "green", "blue"]) == ("red", "green", "blue")
    assert default_band_names(4, ["gray", "undefined"]) == ("band1", "band2", "band3", "band4")
    assert default_band_names(4, ["Red", "Green", "Blue", "Alpha"]) == (
        "red", "green", "blue", "alpha",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("preset", "red", "nir"),
    [
        ("landsat89_l2", "SR_B4", "SR_B5"),
        ("landsat89_l1", "B4", "B5"),
        ("landsat7_etm_l2", "SR_B3", "SR_B4"),
        ("landsat7_etm_l1", "B3", "B4"),
        ("landsat45_tm_l2", "SR_B3", "SR_B4"),
        ("landsat45_tm_l1", "B3", "B4"),
    ],
)
def test_landsat_presets_name_red_nir_and_swir(preset: str, red: str, nir: str) -> None:
    """Band 4 is red on OLI but near-infrared on TM/ETM+: the common names say which."""
    found = get_preset(preset)
    common = found.common_names
    assert common[red] == "red" and common[nir] == "nir"
    for layout in found.layouts():
        assert {"red", "nir", "swir16", "swir22"} <= {common[b] for b in layout}  # ndvi, ndbi
    assert found.nominal_resolution_m == 30.0
    assert (found.reflectance_scale is not None) == preset.endswith("_l2")


@pytest.mark.parametrize(
    ("count", "tags", "expected"),
    [
        (6, {"SPACECRAFT_ID": "LANDSAT_5", "PROCESSING_LEVEL": "L2SP"}, "landsat45_tm_l2"),
        (7, {"SPACECRAFT_ID": "LANDSAT_4", "PROCESSING_LEVEL": "L1TP"}, "landsat45_tm_l1"),
        (6, {"SPACECRAFT_ID": "LANDSAT_7", "PROCESSING_LEVEL": "L1TP"}, "landsat7_etm_l1"),
        (6, {"SPACECRAFT_ID": "LANDSAT_7"}, "landsat7_etm_l2"),
        (7, {"LANDSAT_PRODUCT_ID": "LC08_L1TP_137045_20240110_20240124_02_T1",
             "SPACECRAFT_ID": "LANDSAT_8"}, "landsat89_l1"),
        (8, {"SPACECRAFT_ID": "LANDSAT_9"}, "landsat89_l1"),  # only Level-1 has 8 bands
        (10, {"SPACECRAFT_ID": "LANDSAT_8"}, "landsat89_l1"),
        (5, {"SPACECRAFT_ID": "LANDSAT_5"}, None),
    ],
)  # fmt: skip
def test_detect_landsat_mission_and_level_from_tags(
    count: int, tags: dict[str, str], expected: str | None
) -> None:
    preset = detect_preset(count, [None] * count, ["undefined"] * count, tags)
    assert (preset.name if preset else None) == expected


def test_shared_landsat_band_names_need_the_mission() -> None:
    """B1..B7 is OLI (B4 red) or TM with thermal B6 (B4 near-infrared): not guessed."""
    names = [f"B{i}" for i in range(1, 8)]
    assert detect_preset(7, names, ["gray"] * 7, {}) is None
    oli = detect_preset(7, names, ["gray"] * 7, {"SPACECRAFT_ID": "LANDSAT_8"})
    tm = detect_preset(7, names, ["gray"] * 7, {"SPACECRAFT_ID": "LANDSAT_5"})
    assert oli is not None and tm is not None
    assert (oli.name, tm.name) == ("landsat89_l1", "landsat45_tm_l1")
    # the same six SR bands mean the same on TM and ETM+: detected, the mission refines it
    sr = ["SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B7"]
    plain = detect_preset(6, sr, ["gray"] * 6, {})
    assert plain is not None and plain.common_names["SR_B4"] == "nir"
    tm_sr = detect_preset(6, sr, ["gray"] * 6, {"SPACECRAFT_ID": "LANDSAT_5"})
    assert tm_sr is not None and tm_sr.name == "landsat45_tm_l2"


def test_landsat_file_opens_with_its_bands_and_a_wrong_preset_names_the_fix(
    tmp_path: Path,
) -> None:
    path = tmp_path / "LT05_L2SP_stack.tif"
    grid = from_origin(500_000, 3_000_000, 30, 30)
    profile = {"driver": "GTiff", "width": 32, "height": 32, "count": 6, "dtype": "uint16",
               "crs": "EPSG:32644", "transform": grid}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.full((6, 32, 32), 9000, dtype=np.uint16))
        dst.update_tags(SPACECRAFT_ID="LANDSAT_5", PROCESSING_LEVEL="L2SP")
    scene = open_scene(path)
    assert scene.sensor == "landsat45_tm_l2"
    assert scene.band_index("nir") == 4 and scene.band_index("swir16") == 5
    assert scene.band_index("red") == 3
    with pytest.raises(ConfigError, match="expects 13 or 12 bands but the file has 6") as err:
        open_scene(path, sensor="sentinel2_l2a")
    fix = err.value.fix or ""
    assert "landsat45_tm_l2" in fix and "landsat7_etm_l2" in fix and "--sensor" in fix
    assert "by number" not in fix  # no option selects bands by number
