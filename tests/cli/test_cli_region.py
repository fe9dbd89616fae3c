"""Out-of-region warnings: a model card records where it was trained; ``screen`` and
``scan`` warn on a scene far from it, store the warning with the run, and the review
API marks the run's candidates."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import rasterio
import yaml
from affine import Affine
from sqlalchemy import select

from geoscreen.imagery.region import region_from_card
from geoscreen.imagery.scene import open_scene
from geoscreen.profiles import load_profile
from geoscreen.review.schema import runs
from geoscreen.review.store import open_store
from geoscreen.vision.testing import untrained_model_dir

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / "geoscreen" / "configs" / "tree_crowns_neon.yaml"
Run = Callable[..., tuple[int, str, str]]
FAR_NOTE = "km from where the model was trained"


def moved(source: Path, out: Path, north_m: float) -> Path:
    """``source``'s pixels at a place ``north_m`` metres further north (same CRS)."""
    with rasterio.open(source) as src:
        profile, data = src.profile, src.read()
    profile["transform"] = Affine.translation(0, north_m) * profile["transform"]
    out.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data)
    return out


def test_card_records_the_region_and_screen_warns_only_far_away(
    run: Run, osbs_path: Path, tmp_path: Path
) -> None:
    osbs = open_scene(osbs_path)
    model = untrained_model_dir(load_profile(PROFILE), osbs, tmp_path / "model", region_of=[osbs])
    region = region_from_card(yaml.safe_load((model / "model.yaml").read_text()))
    assert region is not None and region.footprint is not None
    assert osbs.footprint is not None and region.footprint.equals(osbs.footprint)
    assert set(region.stats) == set(osbs.band_names)
    far = moved(osbs_path, tmp_path / "far.tif", 1_000_000)  # 1,000 km north
    out = tmp_path / "screen"
    code, _, err = run("screen", PROFILE, osbs_path, far, "--model", model, "--out", out,
                       "--device", "cpu")  # fmt: skip
    assert code == 0, err
    warned = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warned) == 1 and warned[0].startswith(f"warning: {far}: ") and FAR_NOTE in warned[0]
    summary = json.loads((out / "screen.json").read_text())
    by_scene = {s["scene"]: s["warnings"] for s in summary["scenes"]}
    assert by_scene[str(osbs_path)] == [] and len(by_scene[str(far)]) == 1


def test_a_card_without_region_warns_of_nothing(run: Run, osbs_path: Path, tmp_path: Path) -> None:
    osbs = open_scene(osbs_path)
    model = untrained_model_dir(load_profile(PROFILE), osbs, tmp_path / "model")
    assert "region" not in yaml.safe_load((model / "model.yaml").read_text())
    far = moved(osbs_path, tmp_path / "far.tif", 1_000_000)
    code, _, err = run("screen", PROFILE, far, "--model", model, "--out", tmp_path / "out",
                       "--device", "cpu")  # fmt: skip
    assert code == 0, err
    assert "warning:" not in err


def test_scan_stores_the_warning_and_the_api_marks_the_candidates(
    run: Run, osbs_path: Path, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from geoscreen.review.users import add_user
    from geoscreen.web.app import create_app
    from geoscreen.web.testing import log_in

    # Threshold 0: the untrained model's every tile is a site, so both scenes give candidates.
    spec = yaml.safe_load(PROFILE.read_text())
    spec["threshold"] = 0.0
    profile_path = tmp_path / "profile.yaml"
    profile_path.write_text(yaml.safe_dump(spec))
    profile = load_profile(profile_path)
    osbs = open_scene(osbs_path)
    model = untrained_model_dir(profile, osbs, tmp_path / "model", region_of=[osbs])
    incoming = tmp_path / "incoming"
    near = moved(osbs_path, incoming / "near.tif", 0)
    far = moved(osbs_path, incoming / "far.tif", 1_000_000)
    db = tmp_path / "g.sqlite"
    code, out, err = run("scan", profile_path, incoming, "--model", model, "--db", db,
                         "--json-log")  # fmt: skip
    assert code == 0, err
    events = {e["uri"]: e for e in map(json.loads, out.splitlines()) if e["event"] == "scene"}
    assert events[str(near)]["warnings"] == []
    assert len(events[str(far)]["warnings"]) == 1 and FAR_NOTE in events[str(far)]["warnings"][0]
    assert sum(line.startswith("geoscreen: warning: ") for line in err.splitlines()) == 1
    with open_store(db) as store:
        with store.read() as conn:
            rows = conn.execute(select(runs.c.run_id, runs.c.warnings))
            stored = {r.run_id: r.warnings for r in rows}
        far_id, near_id = open_scene(far).id, open_scene(near).id
        assert {run_id.rsplit(":", 1)[1]: w is not None for run_id, w in stored.items()} == {
            far_id: True, near_id: False,
        }  # fmt: skip
        found = store.candidates()
        marked = {c.id for c in found if c.scene_id == far_id}
        assert marked and len(marked) < len(found)
        add_user(store, "ann", "analyst", password="correct horse battery staple")
    app = create_app(db, scenes=[incoming])
    try:
        client = TestClient(app)
        log_in(client, "ann", "correct horse battery staple")
        for candidate in found:
            detail = client.get(f"/api/candidates/{candidate.id}").json()
            assert bool(detail["scene_warnings"]) == (candidate.id in marked)
            if candidate.id in marked:
                assert FAR_NOTE in detail["scene_warnings"][0]
    finally:
        app.state.geoscreen.store.close()
