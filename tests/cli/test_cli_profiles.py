"""``geoscreen profile validate`` and ``geoscreen profile show``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from rasterio.transform import from_origin

from geoscreen.cli import main

CONFIGS = Path(__file__).resolve().parents[2] / "geoscreen" / "configs"


@pytest.mark.parametrize(
    ("name", "version"),
    [("brick_kilns_s2", "0.1.0"), ("new_structures_rgb", "0.1.0"), ("tree_crowns_neon", "0.1.0")],
)
def test_validate_ok(name: str, version: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "validate", str(CONFIGS / f"{name}.yaml")]) == 0
    assert capsys.readouterr().out == f"ok: {name} {version}\n"


def test_validate_error_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    text = (CONFIGS / "tree_crowns_neon.yaml").read_text().replace("threshold: 0.5", "threshold: 7")
    path.write_text(text)
    assert main(["profile", "validate", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip()
    assert err.startswith(f"geoscreen: error: {path}: threshold: Input should be less than")
    assert "\n" not in err and "Traceback" not in err


def test_validate_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "validate", str(tmp_path / "nope.yaml")]) == 2
    assert "profile file not found" in capsys.readouterr().err


def test_show_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "show", str(CONFIGS / "brick_kilns_s2.yaml")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("brick_kilns_s2 0.1.0\n")
    assert "sensor sentinel2_l2a, bands B02,B03,B04,B08,B11,B12, pixel size 10 m" in out
    assert "indices ndbi" in out and "7 input channels" in out
    assert "weights:     none yet" in out
    assert "matches profile brick_kilns_s2" in out
    assert "a similarity model screens at its own" in out


def test_show_says_which_threshold_is_in_force(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A detection profile without a threshold screens at the model card's; one that
    sets it, at its own."""
    detect = CONFIGS / "tree_crowns_detect_neon.yaml"
    assert main(["profile", "show", str(detect)]) == 0
    out = capsys.readouterr().out
    assert "threshold:   not set: the model card's (held-out F1-optimal)" in out
    assert "detector:    fcos trained on the labels, a pair (colour rotation 0.5); objects " \
           "about 4 m" in out  # fmt: skip
    blobs = tmp_path / "blobs.yaml"
    blobs.write_text(detect.read_text().replace("architecture: fcos", "architecture: blobs"))
    assert main(["profile", "show", str(blobs)]) == 2  # a trained pair's setting, unread
    assert "paired_colour_rotation: settings of trained detectors" in capsys.readouterr().err
    blobs.write_text(blobs.read_text().replace("paired_colour_rotation: 0.5", ""))
    assert main(["profile", "show", str(blobs)]) == 0
    assert "detector:    scale-space blobs, fitted on the labels (no backbone: model.backbone " \
           "and the weights are not used)" in capsys.readouterr().out  # fmt: skip
    set_here = tmp_path / "set.yaml"
    set_here.write_text(detect.read_text() + "threshold: 0.4\n")
    assert main(["profile", "show", str(set_here)]) == 0
    assert "threshold:   0.4 (set here: in force over the model card's)" in capsys.readouterr().out


def test_show_json(capsys: pytest.CaptureFixture[str]) -> None:
    path = CONFIGS / "tree_crowns_neon.yaml"
    assert main(["profile", "show", "--json", str(path)]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["source"] == str(path.resolve())
    assert len(payload["fingerprint"]) == 64
    assert payload["profile"]["model"]["backbone"] == "efficientnet_lite0"
    assert payload["profile"]["threshold"] == 0.5


def test_show_error_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("name: x\nversion: 1.0.0\ndescription: rows of kilns\nmodel: {backbone: vgg}\n")
    assert main(["profile", "show", str(path)]) == 2
    assert "model.backbone: unknown backbone 'vgg'" in capsys.readouterr().err


def _landsat(path: Path, tags: dict[str, str]) -> Path:
    """A small 7-band Landsat 8 Collection 2 Level-2 stack (30 m, UTM), varied pixels."""
    rng = np.random.default_rng(3)
    grid = from_origin(600_000, 2_900_000, 30, 30)
    with rasterio.open(path, "w", driver="GTiff", width=96, height=96, count=7,
                       dtype="uint16", crs="EPSG:32645", transform=grid) as dst:  # fmt: skip
        dst.write(rng.integers(7000, 20000, (7, 96, 96), dtype=np.uint16))
        dst.update_tags(**tags)
    return path


def _kilns_for(tmp_path: Path, **imagery: object) -> Path:
    data = yaml.safe_load((CONFIGS / "brick_kilns_s2.yaml").read_text())
    data["imagery"] = {**data["imagery"], **imagery}
    path = tmp_path / "kilns_landsat.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


LANDSAT_TAGS = {"SPACECRAFT_ID": "LANDSAT_8", "PROCESSING_LEVEL": "L2SP"}


def test_validate_with_the_file_in_hand(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scene = _landsat(tmp_path / "l8.tif", LANDSAT_TAGS)
    # the shipped Sentinel-2 kiln profile on Landsat: refused, naming the presets that fit
    assert main(["profile", "validate", str(CONFIGS / "brick_kilns_s2.yaml"),
                 "--image", str(scene)]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "expects 13 or 12 bands but the file has 7" in err
    assert "landsat89_l2" in err and "--sensor" in err
    # a Landsat copy of it: bands and ndbi resolve on the file
    landsat = _kilns_for(tmp_path, sensor="landsat89_l2", resolution_m=[30.0, 30.0],
                         bands=["SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7"])  # fmt: skip
    assert main(["profile", "validate", str(landsat), "--image", str(scene)]) == 0
    out = capsys.readouterr().out
    assert out == ("ok: brick_kilns_s2 0.1.0; fits l8.tif "
                   "(SR_B2, SR_B3, SR_B4, SR_B5, SR_B6, SR_B7, ndbi)\n")  # fmt: skip


def test_bands_by_number_are_checked_against_the_scene(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """band2..band7 name no colour: ndbi resolves on a file whose preset is known."""
    numbered = _kilns_for(tmp_path, sensor=None, resolution_m=[30.0, 30.0],
                          bands=[f"band{i}" for i in range(2, 8)])  # fmt: skip
    assert main(["profile", "validate", str(numbered)]) == 0
    tagged = _landsat(tmp_path / "tagged.tif", LANDSAT_TAGS)
    assert main(["profile", "validate", str(numbered), "--image", str(tagged)]) == 0
    assert "fits tagged.tif (SR_B2, SR_B3, SR_B4, SR_B5, SR_B6, SR_B7, ndbi)" in (
        capsys.readouterr().out
    )
    bare = _landsat(tmp_path / "bare.tif", {})
    assert main(["profile", "validate", str(numbered), "--image", str(bare)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "index ndbi needs a 'swir16' band" in err
