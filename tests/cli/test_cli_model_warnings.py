"""A model that did not beat its baselines in training says so wherever it screens.

Real data: the Sentinel-2 water points, where the band values at the pixel separate water
from forest and no learner beats the per-pixel regression (README, tile classifier). Named
with ``--learner``, another learner is kept anyway: ``screen`` and ``scan`` warn once, and
every run keeps the line in the store for the reviewers. The per-pixel model that
``train`` keeps by itself gets no warning.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from geoscreen.review.schema import runs
from geoscreen.review.store import open_store
from geoscreen.samples import sentinel2_water_forest
from geoscreen.vision.card_warnings import baseline_warnings
from geoscreen.vision.modelcard import BaselineScore, ClassifyCard, DetectCard

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / "geoscreen" / "configs" / "open_water_s2.yaml"
Run = Callable[..., tuple[int, str, str]]
NOT_BEATEN = "did not beat the per-pixel baseline by a clear margin"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The water profile trained twice on the scene's points: as ``train`` chooses, and
    with ``spectral_lr`` named."""
    from geoscreen.cli.app import main

    s2 = sentinel2_water_forest()
    root = tmp_path_factory.mktemp("models")
    made = {}
    for name, extra in (("chosen", []), ("named", ["--learner", "spectral_lr"])):
        out = root / name
        code = main(["train", str(PROFILE), "--labels", str(s2.points), "--imagery",
                     str(s2.image), "--out", str(out), "--mode", "spectral", "--device",
                     "cpu", *extra])  # fmt: skip
        assert code == 0
        made[name] = out
    return made


def _card(folder: Path) -> ClassifyCard:
    return ClassifyCard.model_validate(yaml.safe_load((folder / "model.yaml").read_text()))


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if NOT_BEATEN in line]


def test_the_named_learner_is_flagged_and_the_baseline_itself_is_not(
    models: dict[str, Path],
) -> None:
    chosen, named = _card(models["chosen"]), _card(models["named"])
    assert chosen.selection is not None and named.selection is not None
    # what train found: nothing beats the per-pixel regression here
    assert not chosen.selection.beats_pixel_baseline and chosen.selection.chosen == "pixel_lr"
    assert baseline_warnings(chosen) == []
    (line,) = baseline_warnings(named)
    scores = named.selection.learners
    assert line.startswith(f"the model (spectral_lr) {NOT_BEATEN}")
    assert f"AP {scores['spectral_lr'].ap:.3f} against {scores['pixel_lr'].ap:.3f}" in line
    # a card that beat its baseline, or predates the comparison, carries nothing
    beaten = named.selection.model_copy(update={"beats_pixel_baseline": True})
    assert baseline_warnings(named.model_copy(update={"selection": beaten})) == []
    assert baseline_warnings(named.model_copy(update={"selection": None})) == []


def test_screen_says_it_once_and_records_it(
    run: Run, models: dict[str, Path], tmp_path: Path
) -> None:
    s2 = sentinel2_water_forest()
    for name, expected in (("chosen", 0), ("named", 1)):
        out = tmp_path / name
        code, _, err = run("screen", PROFILE, s2.image, s2.image, "--model", models[name],
                           "--out", out, "--device", "cpu")  # fmt: skip
        assert code == 0, err
        said = _warnings(err)
        assert len(said) == expected, err  # once for the run, not once per scene
        summary = json.loads((out / "screen.json").read_text())
        assert summary["model_warnings"] == [s.removeprefix("warning: ") for s in said]


def test_scan_says_it_once_and_every_run_keeps_it_for_the_reviewers(
    run: Run, models: dict[str, Path], tmp_path: Path
) -> None:
    s2 = sentinel2_water_forest()
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    (incoming / "west.tif").symlink_to(s2.image)
    db = tmp_path / "store.sqlite"
    code, _, err = run("scan", PROFILE, incoming, "--model", models["named"], "--db", db)
    assert code == 0, err
    (line,) = baseline_warnings(_card(models["named"]))
    assert err.count(f"geoscreen: warning: {line}") == 1
    with open_store(db) as store:
        with store.read() as conn:
            stored = [json.loads(w) for w in conn.execute(select(runs.c.warnings)).scalars()]
        assert stored == [[line]]
        found = store.candidates()
        assert found and all(store.scene_warnings(c.id) == [line] for c in found)
        url = store.url.render_as_string(hide_password=False)
    code, out, _ = run("review", "show", str(found[0].id), "--db", url)
    assert code == 0 and f"warning:    {line}" in out


def test_a_detector_card_names_the_baselines_it_did_not_beat(run: Run, tmp_path: Path) -> None:
    """On a real detector card (blobs fitted on OSBS in seconds; a trained network's card
    also scores the blobs, added here): each baseline not beaten is named, with its AP."""
    from geoscreen.samples import sample_path

    data = yaml.safe_load((ROOT / "geoscreen/configs/tree_crowns_detect_neon.yaml").read_text())
    data["detection"].update(architecture="blobs", paired_colour_rotation=0.0)
    profile = tmp_path / "crowns.yaml"
    profile.write_text(yaml.safe_dump(data), encoding="utf-8")
    out = tmp_path / "model"
    code, _, err = run("train", profile, "--labels", sample_path("neon_osbs_labels"),
                       "--imagery", sample_path("neon_osbs"), "--out", out)  # fmt: skip
    assert code == 0, err
    card = DetectCard.model_validate(yaml.safe_load((out / "model.yaml").read_text()))
    assert card.baselines is not None and card.baselines.beats_pixel_baseline
    assert baseline_warnings(card) == []  # what train concluded: it beats pixel peaks
    blobs = BaselineScore(ap=0.7, best_f1=0.7, best_threshold=0.3)
    scores = {**card.baselines.scores, "scale_space_blobs": blobs}

    def with_flags(pixel: bool, blob: bool | None) -> list[str]:
        update = {"beats_pixel_baseline": pixel, "beats_blob_baseline": blob,
                  "blob_cue": "red, k 1", "scores": scores}  # fmt: skip
        baselines = card.baselines.model_copy(update=update)  # type: ignore[union-attr]
        return baseline_warnings(card.model_copy(update={"baselines": baselines}))

    assert with_flags(True, True) == [] and with_flags(True, None) == []
    model, pixel = scores["model"].ap, scores["pixel_peaks"].ap
    (line,) = with_flags(False, None)
    assert f"(AP@0.4 {model:.3f} against {pixel:.3f} for pixel peaks)" in line
    (line,) = with_flags(True, False)
    assert f"(AP@0.4 {model:.3f} against 0.700 for scale-space blobs (red, k 1))" in line
    (line,) = with_flags(False, False)
    assert f"against {pixel:.3f} for pixel peaks and 0.700 for scale-space blobs" in line
    assert baseline_warnings(card.model_copy(update={"baselines": None})) == []


def test_watch_says_it_on_its_first_poll_only(
    run: Run, models: dict[str, Path], tmp_path: Path
) -> None:
    """``watch`` scans the folder at every poll; the model's warning is said once, and the
    second poll skips the scene the first screened."""
    s2 = sentinel2_water_forest()
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    (incoming / "west.tif").symlink_to(s2.image)
    db = tmp_path / "store.sqlite"
    code, _, err = run("watch", incoming, "--profile", PROFILE, "--model", models["named"],
                       "--db", db, "--polls", "2", "--interval", "0.1")  # fmt: skip
    assert code == 0, err
    (line,) = baseline_warnings(_card(models["named"]))
    assert err.count(f"geoscreen: warning: {line}") == 1
    with open_store(db) as store, store.read() as conn:
        assert len(conn.execute(select(runs.c.run_id)).all()) == 1
