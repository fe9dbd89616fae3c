"""``geoscreen scan --precision``: the option reaches the workers that score the tiles;
``screen`` says and records its arithmetic; ``int8`` runs for a ResNet classifier and is
one clear line and exit 2 elsewhere."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from geoscreen.imagery.scene import open_scene
from geoscreen.profiles import load_profile
from geoscreen.samples import make_synthetic_scene
from geoscreen.vision.runtime import pick_precision
from geoscreen.vision.testing import untrained_model_dir

PROFILE = {
    "name": "precision_probe", "version": "0.1.0",
    "description": "Bright square blobs in generated RGB scenes (untrained model).",
    "imagery": {"sensor": "rgb", "bands": ["red", "green", "blue"]},
    "tiling": {"tile_size": 64, "overlap": 0},
    "preprocess": {"normalization": {"method": "dtype_range"}},
    "model": {"task": "classify", "backbone": "mobilenet_v3_small"},
    "threshold": 0.5, "sites": {"min_area_m2": 0.0, "merge_distance_m": 0.0},
}  # fmt: skip


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Two small generated scenes, the profile and an untrained model folder for it."""
    work = tmp_path_factory.mktemp("scan_precision")
    folder = work / "scenes"
    folder.mkdir()
    for i in range(2):
        make_synthetic_scene(folder / f"scene{i}.tif", 192, 192, seed=i, structures=5,
                             origin=(500_000.0 + i * 1920, 4_500_000.0))  # fmt: skip
    profile_path = work / "profile.yaml"
    profile_path.write_text(yaml.safe_dump(PROFILE), encoding="utf-8")
    scene = open_scene(folder / "scene0.tif")
    model_dir = untrained_model_dir(load_profile(profile_path), scene, work / "model")
    return folder, profile_path, model_dir


def test_scan_in_each_precision(
    setup: tuple[Path, Path, Path],
    tmp_path: Path,
    run: Callable[..., tuple[int, str, str]],
) -> None:
    folder, profile, model = setup
    summaries = {}
    for precision in ("fp32", "bf16", "auto"):
        code, out, err = run("scan", profile, folder, "--model", model, "--db",
                             tmp_path / f"{precision}.sqlite", "--json-log",
                             "--precision", precision)  # fmt: skip
        assert code == 0, err
        summaries[precision] = json.loads(out.strip().splitlines()[-1])
    for summary in summaries.values():
        assert summary["event"] == "summary"
        assert (summary["scenes"], summary["screened"], summary["failed"]) == (2, 2, 0)
        assert summary["tiles"] == summaries["fp32"]["tiles"] == 2 * 3 * 3


def test_screen_says_and_records_its_arithmetic(
    setup: tuple[Path, Path, Path],
    tmp_path: Path,
    run: Callable[..., tuple[int, str, str]],
) -> None:
    """``auto`` on a classifier: checked bf16 where this CPU has bf16 hardware, else
    fp32; ``screen.json`` records which."""
    folder, profile, model = setup
    expected = {"fp32": "fp32", "auto": pick_precision("auto", torch.device("cpu"), checked=True)}
    for precision, word in expected.items():
        out = tmp_path / precision
        code, _, err = run("screen", profile, folder / "scene0.tif", "--model", model,
                           "--out", out, "--device", "cpu", "--precision", precision)  # fmt: skip
        assert code == 0, err
        said = [line for line in err.splitlines() if line.startswith("arithmetic: ")]
        assert len(said) == 1 and said[0].split()[1].rstrip(",") == word
        assert ("scored again in fp32" in said[0]) == (word == "bf16")
        assert json.loads((out / "screen.json").read_text())["precision"] == word


@pytest.fixture(scope="module")
def resnet(
    setup: tuple[Path, Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """The same profile on resnet18 (int8 runs for ResNets) and an untrained model for it."""
    folder = setup[0]
    work = tmp_path_factory.mktemp("scan_precision_resnet")
    profile_path = work / "profile.yaml"
    spec = {
        **PROFILE,
        "name": "precision_probe_resnet",
        "model": {**PROFILE["model"], "backbone": "resnet18"},
    }
    profile_path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    model_dir = untrained_model_dir(
        load_profile(profile_path), open_scene(folder / "scene0.tif"), work / "model"
    )
    return profile_path, model_dir


def test_screen_in_int8_says_and_records_it(
    setup: tuple[Path, Path, Path], resnet: tuple[Path, Path], tmp_path: Path,
    run: Callable[..., tuple[int, str, str]],
) -> None:  # fmt: skip
    profile, model = resnet
    out = tmp_path / "int8"
    code, _, err = run("screen", profile, setup[0] / "scene0.tif", "--model", model,
                       "--out", out, "--precision", "int8")  # fmt: skip
    assert code == 0, err
    said = [line for line in err.splitlines() if line.startswith("arithmetic: ")]
    assert len(said) == 1 and said[0].startswith("arithmetic: int8 (")
    assert "scored again in fp32" in said[0]
    assert json.loads((out / "screen.json").read_text())["precision"] == "int8"


def test_scan_in_int8(
    setup: tuple[Path, Path, Path], resnet: tuple[Path, Path], tmp_path: Path,
    run: Callable[..., tuple[int, str, str]],
) -> None:  # fmt: skip
    profile, model = resnet
    code, out, err = run("scan", profile, setup[0], "--model", model, "--db",
                         tmp_path / "s.sqlite", "--json-log", "--precision", "int8")  # fmt: skip
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert (summary["scenes"], summary["screened"], summary["failed"]) == (2, 2, 0)
    assert summary["tiles"] == 2 * 3 * 3


def test_int8_where_it_does_not_apply_is_one_clear_line(
    setup: tuple[Path, Path, Path], tmp_path: Path, run: Callable[..., tuple[int, str, str]]
) -> None:
    """The probe's backbone is a MobileNet: int8 is refused before anything is written."""
    folder, profile, model = setup
    out = tmp_path / "mobile"
    code, _, err = run("screen", profile, folder / "scene0.tif", "--model", model,
                       "--out", out, "--precision", "int8")  # fmt: skip
    assert code == 2
    assert "Traceback" not in err
    assert any("int8" in line and "mobilenet_v3_small" in line for line in err.splitlines())
    assert not out.exists()
    db = tmp_path / "s.sqlite"
    code, _, err = run("scan", profile, folder, "--model", model, "--db", db,
                       "--precision", "int8")  # fmt: skip
    assert code == 2 and "Traceback" not in err
    assert any("int8" in line and "mobilenet_v3_small" in line for line in err.splitlines())
    assert not db.exists()  # refused before the store was made
