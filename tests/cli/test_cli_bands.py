"""``--bands`` on train, screen, similar and scan: the scene bands a profile gets, by
name or number; a band the scene lacks is one line naming the bands it has."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from geoscreen.imagery.scene import open_scene
from geoscreen.profiles import load_profile, select_bands
from geoscreen.vision.testing import untrained_model_dir

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / "geoscreen" / "configs" / "tree_crowns_neon.yaml"
Run = Callable[..., tuple[int, str, str]]
FOUND = "Its bands are 1 red, 2 green, 3 blue (sensor preset rgb)"


@pytest.fixture(scope="module")
def reordered_model(tmp_path_factory: pytest.TempPathFactory, osbs_path: Path) -> Path:
    """A model made for OSBS's bands in the order blue, green, red."""
    scene = open_scene(osbs_path, sensor="rgb")
    profile = select_bands(load_profile(PROFILE), ("3", "2", "1"), [scene])
    return untrained_model_dir(profile, scene, tmp_path_factory.mktemp("bands") / "model")


def _one_line(err: str) -> str:
    assert "Traceback" not in err
    lines = [x for x in err.splitlines() if x.startswith("geoscreen: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_bad_bands_exit_2_with_one_line_and_write_nothing(
    run: Run, osbs_path: Path, osbs_labels_path: Path, reordered_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    calls = {
        "screen": ["screen", PROFILE, osbs_path, "--model", reordered_model, "--out", out],
        "similar": ["similar", "--profile", PROFILE, "--imagery", osbs_path, "--example",
                    osbs_labels_path, "--out", out],
        "train": ["train", PROFILE, "--labels", osbs_labels_path, "--imagery", osbs_path,
                  "--out", out],
        "scan": ["scan", PROFILE, osbs_path, "--model", reordered_model, "--db",
                 tmp_path / "g.sqlite", "--work", out],
    }  # fmt: skip
    for name, args in calls.items():
        for bands, what in (("9", "the scene has no band 9"), ("B9", "band 'B9' is not in")):
            code, _, err = run(*args, "--device", "cpu", "--bands", bands) if name != "scan" \
                else run(*args, "--bands", bands)  # fmt: skip
            assert code == 2, (name, err)
            line = _one_line(err)
            assert what in line and FOUND in line, (name, line)
        code, _, err = run(*args, "--bands", "3,,1")
        assert code == 2 and "--bands: '3,,1' has an empty item" in _one_line(err)
        assert not out.exists() and not (tmp_path / "g.sqlite").exists(), name


def test_screen_with_reordered_bands(
    run: Run, osbs_path: Path, reordered_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "screen"
    code, _, err = run("screen", PROFILE, osbs_path, "--model", reordered_model, "--out", out,
                       "--device", "cpu", "--bands", "3,2,1")  # fmt: skip
    assert code == 0, err
    spec = json.loads((out / "screen.json").read_text())["profile_spec"]
    assert spec["imagery"]["bands"] == spec["preprocess"]["bands"] == ["blue", "green", "red"]
    # By name, the same; without --bands the model (made for blue, green, red) refuses.
    by_name = tmp_path / "by_name"
    code, _, err = run("screen", PROFILE, osbs_path, "--model", reordered_model, "--out",
                       by_name, "--device", "cpu", "--bands", "blue,green,red")  # fmt: skip
    assert code == 0, err
    code, _, err = run("screen", PROFILE, osbs_path, "--model", reordered_model, "--out",
                       tmp_path / "without", "--device", "cpu")  # fmt: skip
    line = _one_line(err)  # names the bands to give
    assert code == 2 and "trained on bands blue,green,red" in line
    assert "--bands blue,green,red" in line


def test_scan_with_reordered_bands(
    run: Run, osbs_path: Path, reordered_model: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "incoming"
    folder.mkdir()
    shutil.copy(osbs_path, folder / "osbs.tif")
    db = tmp_path / "g.sqlite"
    code, out, err = run("scan", PROFILE, folder, "--model", reordered_model, "--db", db,
                         "--bands", "3,2,1", "--json-log")  # fmt: skip
    assert code == 0, err
    summary = json.loads(out.splitlines()[-1])
    assert summary["screened"] == 1 and summary["failed"] == 0
    with sqlite3.connect(db) as conn:  # the bands are part of the run id
        (run_id,) = conn.execute("select run_id from runs").fetchone()
    assert run_id.endswith(":bands=blue,green,red"), run_id
    code, out, err = run("scan", PROFILE, folder, "--model", reordered_model, "--db", db,
                         "--bands", "3,2,1", "--json-log")  # fmt: skip
    assert code == 0 and json.loads(out.splitlines()[-1])["screened"] == 0  # done already
    # Without --bands the model, made for blue, green, red, is refused before anything.
    code, out, err = run("scan", PROFILE, folder, "--model", reordered_model, "--db",
                         tmp_path / "other.sqlite")  # fmt: skip
    line = _one_line(err)  # names the bands to give
    assert code == 2 and "trained on bands blue,green,red" in line
    assert "--bands blue,green,red" in line
    assert not (tmp_path / "other.sqlite").exists()
