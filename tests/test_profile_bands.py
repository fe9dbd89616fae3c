"""--bands: names or numbers resolved against the scene, the profile's indices against
the selected bands, refusals naming the bands found."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from geoscreen.errors import ConfigError, InputError
from geoscreen.imagery.scene import open_scene
from geoscreen.profiles import load_profile, parse_bands, select_bands
from geoscreen.samples import make_sentinel2_like

KILNS = Path(__file__).resolve().parents[1] / "geoscreen" / "configs" / "brick_kilns_s2.yaml"


@pytest.fixture(scope="module")
def s2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sentinel2_like(tmp_path_factory.mktemp("s2") / "s2.tif", 64, 64)


def test_numbers_and_names_select_the_same_bands(s2: Path) -> None:
    profile = load_profile(KILNS)
    scene = open_scene(s2, sensor=profile.imagery.sensor)
    by_number = select_bands(profile, parse_bands("4,3,2,8,12,13"), [scene])
    wanted = ["B04", "B03", "B02", "B08", "B11", "B12"]
    assert by_number.imagery.bands == by_number.preprocess.bands == wanted
    assert by_number.preprocess.indices == ["ndbi"] and by_number.derived_channels == 7
    by_name = select_bands(profile, parse_bands("B04, B03,B02,B08,B11,B12"), [scene])
    assert by_name.preprocess.bands == wanted
    common = select_bands(profile, parse_bands("red,green,blue,nir,swir16,swir22"), [scene])
    assert [scene.band_names[i - 1] for i in scene.band_indexes(common.preprocess.bands)] == wanted
    assert by_number.source_path == profile.source_path
    assert select_bands(profile, (), [scene]) is profile


def test_an_index_needs_its_bands_among_the_selected(s2: Path) -> None:
    profile = load_profile(KILNS)
    scene = open_scene(s2, sensor=profile.imagery.sensor)
    with pytest.raises(ConfigError) as caught:
        select_bands(profile, ("4", "3", "2"), [scene])
    assert "index ndbi of profile brick_kilns_s2 needs the swir16, nir band(s)" in caught.value.what
    assert "4 B04 (red)" in caught.value.message  # what can be added


def test_bad_bands_are_refused_listing_the_bands_found(s2: Path) -> None:
    profile = load_profile(KILNS)
    scene = open_scene(s2, sensor=profile.imagery.sensor)
    for bands, what in ((("14",), "the scene has no band 14"),
                        (("B99",), "band 'B99' is not in the scene"),
                        (("4", "B04"), "selects a band twice")):  # fmt: skip
        with pytest.raises(ConfigError) as caught:
            select_bands(profile, bands, [scene])
        assert what in caught.value.what
        assert "1 B01 (coastal), 2 B02 (blue)" in caught.value.message
        assert "13 B12 (swir22) (sensor preset sentinel2_l2a)" in caught.value.message
    # Six bands feed a model the profile says takes 7 channels only with the index.
    with pytest.raises(ConfigError, match="in_channels is 7"):
        select_bands(profile, parse_bands("4,3,2,8,12,13,5"), [scene])


def test_parse_bands_refuses_malformed_lists() -> None:
    assert parse_bands("B4,B3,B2") == ("B4", "B3", "B2")
    for text in ("4,,3", "", "0,1", "red,RED"):
        with pytest.raises(InputError):
            parse_bands(text)


def test_a_profile_without_sensor_checks_its_indices_on_the_selected_bands(
    s2: Path, tmp_path: Path
) -> None:
    spec = yaml.safe_load(KILNS.read_text())
    del spec["imagery"]["sensor"]
    spec["imagery"]["bands"] = ["band4", "band3", "band2", "band8", "band12"]
    spec["model"]["in_channels"] = 6
    path = tmp_path / "by_number.yaml"
    path.write_text(yaml.safe_dump(spec))
    profile = load_profile(path)
    scene = open_scene(s2)  # its preset (Sentinel-2) names the colours
    chosen = select_bands(profile, ("4", "3", "2", "8", "12"), [scene])
    assert chosen.preprocess.bands == ["red", "green", "blue", "nir", "swir16"]
    assert [scene.band_names[i - 1] for i in scene.band_indexes(chosen.preprocess.bands)] == [
        "B04", "B03", "B02", "B08", "B11",
    ]  # fmt: skip
    with pytest.raises(ConfigError, match="index ndbi of profile brick_kilns_s2 needs the swir16"):
        select_bands(profile, ("4", "3", "2", "8", "13"), [scene])
