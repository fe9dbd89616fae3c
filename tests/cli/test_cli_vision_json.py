"""``--json`` on ``train``, ``screen`` and ``similar``: stdout is exactly one JSON object
that agrees with the files written; human lines and progress go to stderr."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import yaml

from geoscreen.cli.vision import scene_folder
from geoscreen.fileio import sha256_file
from geoscreen.imagery.scene import open_scene
from geoscreen.profiles import load_profile
from geoscreen.vision.testing import untrained_model_dir

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / "geoscreen" / "configs" / "tree_crowns_neon.yaml"
Run = Callable[..., tuple[int, str, str]]


def test_screen_and_similar_json(
    run: Run, osbs_path: Path, osbs_labels_path: Path, tmp_path: Path
) -> None:
    osbs = open_scene(osbs_path, sensor="rgb")
    model = untrained_model_dir(load_profile(PROFILE), osbs, tmp_path / "model")
    out = tmp_path / "screen"
    code, stdout, err = run("screen", PROFILE, osbs_path, "--model", model, "--out", out,
                            "--device", "cpu", "--json")  # fmt: skip
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary == json.loads((out / "screen.json").read_text())
    assert summary["kind"] == "screen" and summary["model_sha256"] == sha256_file(
        model / "model.pt"
    )
    (scene,) = summary["scenes"]
    assert scene["scene_id"] == osbs.id and scene["tiles"] == 64 and scene["warnings"] == []
    assert Path(scene["files"]["tiles"]).parent == out / scene_folder(osbs)
    assert "64 tiles screened" in err and "screening" in err  # the line and the progress bar
    out = tmp_path / "similar"
    code, stdout, err = run("similar", "--profile", PROFILE, "--imagery", osbs_path,
                            "--example", osbs_labels_path, "--out", out, "--device", "cpu",
                            "--json")  # fmt: skip
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary == json.loads((out / "similar.json").read_text())
    assert summary["kind"] == "similar" and summary["examples"] > 0
    assert [s["tiles"] for s in summary["scenes"]] == [64] and "tiles screened" in err


def test_train_json(run: Run, osbs_path: Path, osbs_labels_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    code, stdout, err = run("train", PROFILE, "--labels", osbs_labels_path, "--imagery",
                            osbs_path, "--out", out, "--mode", "spectral", "--folds", "2",
                            "--device", "cpu", "--json")  # fmt: skip
    assert code == 0, err
    record = json.loads(stdout)
    card = yaml.safe_load((out / "model.yaml").read_text())
    assert record["kind"] == "train" and record["task"] == "classify"
    assert record["model_sha256"] == sha256_file(out / "model.pt") == card["model_sha256"]
    assert record["profile"] == "tree_crowns_neon" and record["threshold"] == 0.5
    assert record["metrics"]["val_average_precision"] == card["metrics"]["val_average_precision"]
    assert record["learner"] == card["selection"]["chosen"] and record["region_recorded"]
    assert record["bands"] == ["red", "green", "blue"]
    assert f"model written to {out}" in err and record["summary"] in err
