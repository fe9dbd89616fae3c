"""``geoscreen profile validate`` and ``geoscreen profile show``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from geoscreen.cli import main

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


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
