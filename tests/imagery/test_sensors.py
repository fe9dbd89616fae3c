"""Sensor band presets: layouts, detection from file metadata, defaults."""

from __future__ import annotations

import pytest

from geoscreen.errors import ConfigError
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
