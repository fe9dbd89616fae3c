"""``--out`` is checked before any work: a place that cannot be written is exit 2, at once.

Root may write to folders without write permission, so the unwritable places here are
ones nobody can write: a path under a regular file, and (on Linux) under ``/proc``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from geoscreen.cli.app import EXIT_USER_ERROR
from geoscreen.review.testing import make_sites
from geoscreen.samples import make_synthetic_scene

Run = Callable[..., tuple[int, str, str]]
PROFILE = Path(__file__).resolve().parents[2] / "geoscreen" / "configs" / "tree_crowns_neon.yaml"


def _refused(result: tuple[int, str, str], *words: str) -> str:
    code, _, err = result
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == EXIT_USER_ERROR, err
    assert len(lines) == 1 and lines[0].startswith("geoscreen: error:"), err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def _unwritable(tmp_path: Path) -> list[Path]:
    blocker = tmp_path / "a-file.txt"
    blocker.write_text("not a folder")
    places = [blocker / "inside"]
    if sys.platform.startswith("linux"):
        places.append(Path("/proc"))  # exists; no file can be made in it
    return places


def test_train_refuses_an_unwritable_out_before_training(
    tmp_path: Path, run: Run, osbs_path: Path, osbs_labels_path: Path
) -> None:
    for place in _unwritable(tmp_path):
        out = place / "model"
        _refused(run("train", PROFILE, "--labels", osbs_labels_path, "--imagery", osbs_path,
                     "--out", out), "--out")  # fmt: skip
        assert not out.exists()


def test_evaluate_refuses_an_existing_file_and_unwritable_places(tmp_path: Path, run: Run) -> None:
    sites = make_sites(tmp_path / "sites.parquet", 3)
    existing = tmp_path / "report.txt"
    existing.write_text("keep me")
    line = _refused(run("evaluate", "--predicted", sites, "--truth", sites, "--out", existing),
                    "is a file, not a folder")  # fmt: skip
    assert "folder as --out" in line
    assert existing.read_text() == "keep me"
    for place in _unwritable(tmp_path):
        _refused(run("evaluate", "--predicted", sites, "--truth", sites, "--out", place / "e"))
        assert not (place / "e").exists()


def test_export_refuses_an_unwritable_out_and_records_nothing(
    tmp_path: Path, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEOSCREEN_DB", str(tmp_path / "review.sqlite"))
    assert run("users", "add", "ann", "--role", "analyst", "--as-admin-of-this-file")[0] == 0
    sites = make_sites(tmp_path / "sites.parquet", 4)
    assert run("review", "load", sites, "--as-admin-of-this-file")[0] == 0
    before = run("audit", "verify")[1]
    for place in _unwritable(tmp_path):
        _refused(run("export", "--user", "ann", "--out", place / "out.geojson"), "--out")
    _refused(run("export", "--user", "ann", "--out", tmp_path / "missing" / "out.geojson"),
             "does not exist")  # fmt: skip
    assert run("audit", "verify")[1] == before  # no export entry was written


def _profile(folder: Path) -> Path:
    path = folder / "profile.yaml"
    path.write_text(yaml.safe_dump({
        "name": "bright_squares", "version": "1.0.0", "description": "bright squares",
        "model": {"backbone": "resnet18"}, "tiling": {"tile_size": 32}, "threshold": 0.5,
    }))  # fmt: skip
    return path


@pytest.mark.parametrize(
    "garbage",
    [
        b"this is not parquet at all",
        b"PAR1\x00\x00\x00\x00PAR1",  # the magic bytes around nothing
        pd.DataFrame({"row": ["a"], "col": [0], "score": [0.5], "valid_fraction": [1.0]}),
        pd.DataFrame({"row": [-1], "col": [0], "score": [0.5], "valid_fraction": [1.0]}),
        pd.DataFrame({"row": [np.nan], "col": [0], "score": [0.5], "valid_fraction": [1.0]}),
    ],
    ids=["text", "empty-parquet", "text-rows", "negative-rows", "nan-rows"],
)
def test_sites_extract_refuses_garbage_scores(tmp_path: Path, run: Run, garbage: object) -> None:
    scene = make_synthetic_scene(tmp_path / "scene.tif", 64, 64)
    folder = tmp_path / "scores"
    folder.mkdir()
    if isinstance(garbage, bytes):
        (folder / "tiles.parquet").write_bytes(garbage)
    else:
        assert isinstance(garbage, pd.DataFrame)
        garbage.to_parquet(folder / "tiles.parquet")
    line = _refused(run("sites", "extract", folder, "--image", scene, "--profile",
                        _profile(tmp_path), "--out", tmp_path / "sites.parquet"))  # fmt: skip
    assert "screen" in line  # the fix: screen the scene again
    assert not (tmp_path / "sites.parquet").exists()
