"""``--precision int8`` from the command line: a ResNet classifier screens and scans in
int8 (checked near the threshold) and says so; elsewhere one clear line and exit 2."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from geoscreen.imagery.scene import open_scene
from geoscreen.profiles import load_profile
from geoscreen.samples import make_synthetic_scene
from geoscreen.vision.testing import untrained_model_dir

Run = Callable[..., tuple[int, str, str]]


def _profile(backbone: str) -> dict[str, object]:
    return {
        "name": f"int8_{backbone}", "version": "0.1.0",
        "description": "Bright square blobs in generated RGB scenes (untrained model).",
        "imagery": {"sensor": "rgb", "bands": ["red", "green", "blue"]},
        "tiling": {"tile_size": 64, "overlap": 0},
        "preprocess": {"normalization": {"method": "dtype_range"}},
        "model": {"task": "classify", "backbone": backbone},
        "threshold": 0.5, "sites": {"min_area_m2": 0.0, "merge_distance_m": 0.0},
    }  # fmt: skip


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two generated scenes; a resnet18 and a mobilenet profile, each with an untrained
    model folder."""
    work = tmp_path_factory.mktemp("int8")
    folder = work / "scenes"
    folder.mkdir()
    for i in range(2):
        make_synthetic_scene(folder / f"scene{i}.tif", 192, 192, seed=i, structures=5,
                             origin=(500_000.0 + i * 1920, 4_500_000.0))  # fmt: skip
    paths = {"scenes": folder}
    scene = open_scene(folder / "scene0.tif")
    for backbone in ("resnet18", "mobilenet_v3_small"):
        profile_path = work / f"{backbone}.yaml"
        profile_path.write_text(yaml.safe_dump(_profile(backbone)), encoding="utf-8")
        paths[backbone] = profile_path
        paths[f"{backbone} model"] = untrained_model_dir(
            load_profile(profile_path), scene, work / f"{backbone}_model"
        )
    return paths


def test_screen_in_int8_says_and_records_it(setup: dict[str, Path], tmp_path: Path,
                                            run: Run) -> None:  # fmt: skip
    out = tmp_path / "int8"
    code, _, err = run("screen", setup["resnet18"], setup["scenes"] / "scene0.tif", "--model",
                       setup["resnet18 model"], "--out", out, "--precision", "int8")  # fmt: skip
    assert code == 0, err
    said = [line for line in err.splitlines() if line.startswith("arithmetic: ")]
    assert len(said) == 1 and said[0].startswith("arithmetic: int8 (")
    assert "scored again in fp32" in said[0]
    assert json.loads((out / "screen.json").read_text())["precision"] == "int8"


def test_scan_in_int8(setup: dict[str, Path], tmp_path: Path, run: Run) -> None:
    code, out, err = run("scan", setup["resnet18"], setup["scenes"], "--model",
                         setup["resnet18 model"], "--db", tmp_path / "s.sqlite", "--json-log",
                         "--precision", "int8")  # fmt: skip
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert (summary["scenes"], summary["screened"], summary["failed"]) == (2, 2, 0)
    assert summary["tiles"] == 2 * 3 * 3


def test_int8_where_it_does_not_apply_is_one_clear_line(
    setup: dict[str, Path], tmp_path: Path, run: Run
) -> None:
    out = tmp_path / "mobile"
    code, _, err = run("screen", setup["mobilenet_v3_small"], setup["scenes"] / "scene0.tif",
                       "--model", setup["mobilenet_v3_small model"], "--out", out,
                       "--precision", "int8")  # fmt: skip
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert "Traceback" not in err
    assert any("int8" in line and "mobilenet_v3_small" in line for line in lines)
    assert not out.exists()
