"""``geoscreen train``, ``screen`` and ``similar`` end to end on the real NEON samples."""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
import torch
import yaml

from geoscreen.cli.app import EXIT_USER_ERROR, main
from geoscreen.cli.vision import scene_folder
from geoscreen.evaluate.tile_truth import tiles_containing
from geoscreen.fileio import sha256_file
from geoscreen.imagery.region import region_from_card
from geoscreen.imagery.scene import open_scene
from geoscreen.imagery.tiling import TileGrid
from geoscreen.labels import load_labels
from geoscreen.ranking import average_precision
from geoscreen.samples import make_sentinel2_like
from geoscreen.vision.classifier import load_model
from geoscreen.vision.infer import runs_backbone

PROFILE = Path(__file__).resolve().parents[2] / "geoscreen" / "configs" / "tree_crowns_neon.yaml"
Run = Callable[..., tuple[int, str, str]]


def call(*args: str | Path) -> tuple[int, str, str]:
    """Run ``geoscreen`` in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def one_error_line(err: str) -> str:
    """The single ``geoscreen: error:`` line, and no traceback."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("geoscreen: error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli_vision")


@pytest.fixture(scope="module")
def trained(
    workdir: Path, osbs_path: Path, osbs_labels_path: Path
) -> tuple[Path, tuple[int, str, str]]:
    model = workdir / "model"
    result = call("train", PROFILE, "--labels", osbs_labels_path, "--imagery", osbs_path,
                  "--out", model, "--device", "cpu", "--seed", "0")  # fmt: skip
    return model, result


@pytest.fixture(scope="module")
def screened(
    trained: tuple[Path, tuple[int, str, str]], workdir: Path, osbs_path: Path, yell_path: Path
) -> tuple[Path, tuple[int, str, str]]:
    out = workdir / "screen"
    result = call("screen", PROFILE, osbs_path, yell_path, "--model", trained[0], "--out", out,
                  "--embeddings", "--device", "cpu")  # fmt: skip
    return out, result


@pytest.fixture(scope="module")
def examples_path(workdir: Path, osbs_path: Path, osbs_labels_path: Path) -> Path:
    """Five OSBS crowns as polygons in EPSG:32617."""
    scene = open_scene(osbs_path)
    t = scene.transform
    boxes = load_labels(osbs_labels_path, scene).boxes_px()[[0, 10, 20, 30, 40]]
    geoms = [shapely.affinity.affine_transform(shapely.box(*b), [t.a, t.b, t.d, t.e, t.c, t.f])
             for b in boxes]  # fmt: skip
    path = workdir / "examples.geojson"
    gpd.GeoDataFrame({"label": ["tree"] * 5}, geometry=geoms, crs=scene.crs).to_file(path)
    return path


def test_train(trained: tuple[Path, tuple[int, str, str]]) -> None:
    model, (code, out, err) = trained
    assert code == 0, err
    assert sorted(p.name for p in model.iterdir()) == ["MODEL_CARD.md", "model.pt", "model.yaml"]
    assert out.startswith(f"model written to {model}: learner ")
    assert "cross-validated AP" in out and "threshold in force 0.5 (profile)" in out
    assert "MODEL_CARD.md" in out and out.count("\n") == 1
    assert "chips (61 positive)" in err and "spatially blocked folds over" in err
    assert "pixel_lr" in err and "<- chosen" in err
    card = yaml.safe_load((model / "model.yaml").read_text())
    region = region_from_card(card)  # where it was trained: screen/scan warn far from it
    assert region is not None and region.footprint is not None
    assert set(region.stats) == {"red", "green", "blue"}


def test_screen(
    screened: tuple[Path, tuple[int, str, str]],
    trained: tuple[Path, tuple[int, str, str]],
    osbs_path: Path,
    yell_path: Path,
    yell_labels_path: Path,
) -> None:
    out, (code, stdout, err) = screened
    assert code == 0, err
    osbs, yell = open_scene(osbs_path, sensor="rgb"), open_scene(yell_path, sensor="rgb")
    # Scene folders: file stem and short content id.
    names = [f"OSBS_029-{osbs.id[:8]}", f"{Path(yell_path).stem}-{yell.id[:8]}"]
    assert [scene_folder(osbs), scene_folder(yell)] == names
    assert sorted(p.name for p in out.iterdir()) == sorted([*names, "screen.json"])
    summary = json.loads((out / "screen.json").read_text())
    assert summary["kind"] == "screen" and summary["profile"] == "tree_crowns_neon"
    assert summary["model_sha256"] == sha256_file(trained[0] / "model.pt")
    assert len(summary["run_id"]) == 12
    assert [(s["scene_id"], s["tiles"]) for s in summary["scenes"]] == [
        (osbs.id, 64),
        (yell.id, 572),
    ]
    assert f"{osbs_path}: 64 tiles screened, top score" in stdout
    assert "screening: 100%" in err  # the progress bar
    for scene, crs in ((osbs, 32617), (yell, None)):
        folder = out / scene_folder(scene)
        assert sorted(p.name for p in folder.iterdir()) == [
            "embeddings.npy", "scores.tif", "tiles.parquet",
        ]  # fmt: skip
        frame = gpd.read_parquet(folder / "tiles.parquet")
        assert (frame.crs.to_epsg() if frame.crs else None) == crs
        assert (frame["model_sha256"] == summary["model_sha256"]).all()
        assert frame["score"].between(0, 1).all()
        with rasterio.open(folder / "scores.tif") as ds:
            assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        emb = np.load(folder / "embeddings.npy")
        width = load_model(trained[0]).model.features(torch.zeros(1, 3, 64, 64)).shape[1]
        assert emb.dtype == np.float16 and emb.shape == (len(frame), width)
    # The CLI's YELL scores rank crown tiles as the library's do (AP above the positive rate).
    frame = gpd.read_parquet(out / scene_folder(yell) / "tiles.parquet")
    grid = TileGrid(yell, 64, 16)
    assert frame["tile_id"].tolist() == [t.id for t in grid]
    truth = tiles_containing(grid, load_labels(yell_labels_path, yell).centres())
    assert average_precision(frame["score"].to_numpy(), truth) >= truth.mean() + 0.05


def test_similar(
    trained: tuple[Path, tuple[int, str, str]],
    workdir: Path,
    examples_path: Path,
    osbs_path: Path,
    yell_path: Path,
) -> None:
    out = workdir / "similar"
    code, stdout, err = call("similar", "--profile", PROFILE, "--imagery", osbs_path,
                             "--imagery", yell_path, "--example", examples_path, "--out", out,
                             "--device", "cpu")  # fmt: skip
    assert code == 0, err
    summary = json.loads((out / "similar.json").read_text())
    assert summary["kind"] == "similar" and summary["method"] == "similarity"
    assert summary["examples"] == 5 and [s["tiles"] for s in summary["scenes"]] == [64, 572]
    osbs = open_scene(osbs_path)
    frame = gpd.read_parquet(out / scene_folder(osbs) / "tiles.parquet")
    assert frame["score"].between(-1, 1 + 1e-6).all() and frame["score"].max() > 0.9
    assert stdout.count("tiles screened") == 2
    assert summary["features"] == ["deep"] and "not a probability" in summary["score"]
    every = np.concatenate([
        gpd.read_parquet(out / scene_folder(open_scene(p)) / "tiles.parquet")["score"]
        for p in (osbs_path, yell_path)
    ])  # fmt: skip
    top = round(float(np.quantile(every, 0.99)), 4)
    assert summary["score_top_1pct"] == pytest.approx(top, abs=1e-4)
    assert f"the top 1% of tiles score {top:.3f} or more" in stdout
    # and how the examples score against each other (each left out), to set it by
    quartiles = summary["example_score_left_out"]
    assert len(quartiles) == 3 and quartiles == sorted(quartiles) and quartiles[0] > 0
    assert "the examples, each scored as a tile against those two tiles or more away" in stdout
    # Its scores are no probabilities: sites need a threshold of the analyst's, for the
    # whole run's folder and for one scene's.
    sites = workdir / "similar_sites.parquet"
    for where in ([out], [out / scene_folder(osbs), "--image", osbs_path]):
        code, _, err = call("sites", "extract", *where, "--out", sites)
        assert code == EXIT_USER_ERROR and not sites.exists()
        line = one_error_line(err)
        assert "not a probability" in line and "--threshold" in line
        assert f"top 1% of tiles score {top:.3f} or more" in line
    # One scene's folder (the run mixes a georeferenced scene and one in pixel space).
    code, _, err = call("sites", "extract", out / scene_folder(osbs), "--image", osbs_path,
                        "--threshold", 0.9, "--out", sites)  # fmt: skip
    assert code == 0, err
    found = gpd.read_parquet(sites)
    assert len(found) > 0 and (found["score_max"] >= 0.9).all()
    assert set(found["profile"]) == {"tree_crowns_neon"}  # read from similar.json
    # With a trained model's features instead of the profile's backbone, kept as a model:
    # it records the features it compares and the trained model they came from.
    kept = workdir / "similar_model_kept"
    code, _, err = call("similar", "--profile", PROFILE, "--imagery", osbs_path, "--example",
                        examples_path, "--out", workdir / "similar_model", "--model", trained[0],
                        "--device", "cpu", "--threshold", 0.5, "--save-model", kept)  # fmt: skip
    assert code == 0, err
    assert (workdir / "similar_model" / scene_folder(osbs) / "scores.tif").is_file()
    source = load_model(trained[0])
    card = load_model(kept).card
    assert card.training is not None and card.learner is not None
    assert card.training.options["model"]["model_sha256"] == source.sha256
    uses_deep = source.card.learner is None or source.card.learner.features in ("deep", "combined")
    assert (card.backbone == source.card.backbone) if uses_deep else card.backbone is None
    assert card.learner.features == ("deep" if uses_deep else "spectral")


def test_a_similarity_search_kept_as_a_model_screens_and_scans(
    workdir: Path, examples_path: Path, osbs_path: Path
) -> None:
    """Defined by examples, screened in batch: ``similar --save-model`` with the analyst's
    threshold; ``screen`` gives the search's scores and applies that threshold (recorded
    for ``sites extract``); ``scan`` puts the same candidates in the review store."""
    out, kept = workdir / "kept_search", workdir / "kept_model"
    base = ("similar", "--profile", PROFILE, "--imagery", osbs_path, "--example", examples_path,
            "--device", "cpu")  # fmt: skip
    # Without a threshold, or with one no similarity reaches: refused before any work.
    for extra in (("--save-model", kept), ("--save-model", kept, "--threshold", 2)):
        code, _, err = call(*base, "--out", out, *extra)
        assert code == EXIT_USER_ERROR and not out.exists() and not kept.exists()
        assert "--threshold" in one_error_line(err)
    code, stdout, err = call(*base, "--out", out, "--save-model", kept, "--threshold", 0.9)
    assert code == 0, err
    assert f"similarity model kept in {kept} (threshold 0.9)" in stdout
    summary = json.loads((out / "similar.json").read_text())
    assert summary["threshold"] == 0.9 and summary["model"]["path"] == str(kept)
    card = yaml.safe_load((kept / "model.yaml").read_text())
    assert card["learner"]["kind"] == "similarity" and card["threshold"] == 0.9
    assert card["thresholds"]["source"].startswith("analyst")
    # A kept search is no trained model to compare features with.
    code, _, err = call(*base, "--out", workdir / "again", "--model", kept)
    assert code == EXIT_USER_ERROR and "similarity search kept as a model" in one_error_line(err)
    screened = workdir / "kept_screen"
    code, stdout, err = call("screen", PROFILE, osbs_path, "--model", kept, "--out", screened,
                             "--device", "cpu")  # fmt: skip
    assert code == 0, err
    assert "threshold in force: 0.9 (model card: the analyst's threshold" in err
    # each scene's similarities beside the examples' scene's (a threshold may not transfer)
    assert "of tiles score at least 0.9 and the top 1%" in stdout
    assert "(random tiles of the examples' scene: " in stdout
    assert "arithmetic: fp32 (a similarity model" in err
    folder = scene_folder(open_scene(osbs_path))
    searched = gpd.read_parquet(out / folder / "tiles.parquet")["score"].to_numpy()
    again = gpd.read_parquet(screened / folder / "tiles.parquet")["score"].to_numpy()
    np.testing.assert_allclose(again, searched, atol=1e-5)
    recorded = json.loads((screened / "screen.json").read_text())
    assert recorded["threshold"] == 0.9 and recorded["threshold_source"].startswith("model card")
    # 'sites extract' applies the recorded threshold, to the search and to the screen.
    expected = int((searched >= 0.9).sum())
    assert 0 < expected < len(searched)
    counts = []
    for scores in (out, screened):
        sites = workdir / f"{scores.name}_sites.parquet"
        code, stdout, err = call("sites", "extract", scores, "--out", sites, "--no-evidence")
        assert code == 0, err
        assert "threshold in force: 0.9, recorded by the run" in stdout
        found = gpd.read_parquet(sites)
        assert (found["score_max"] >= 0.9).all()
        counts.append(len(found))
    assert counts[0] == counts[1] > 0
    # A scan into the review store: the same candidates, the run's policy names the card.
    incoming = workdir / "kept_incoming"
    incoming.mkdir()
    (incoming / osbs_path.name).write_bytes(osbs_path.read_bytes())
    db = workdir / "kept.sqlite"
    code, stdout, err = call("scan", PROFILE, incoming, "--model", kept, "--db", db,
                             "--work", workdir / "kept_work")  # fmt: skip
    assert code == 0, err
    assert f"{counts[0]} new and 0 re-seen candidate sites" in stdout + err
    # each scene's similarities beside the examples' scene's, as screen prints them
    note = next(line for line in stdout.splitlines() if "of tiles score at least 0.9" in line)
    assert osbs_path.name in note and "(random tiles of the examples' scene: " in note
    with sqlite3.connect(db) as conn:
        threshold, policy = conn.execute("SELECT threshold, policy FROM runs").fetchone()
    assert threshold == 0.9 and "the analyst's threshold" in json.loads(policy)["threshold_source"]
    # --json-log keeps stdout to JSON lines: the note is in the scene's record
    code, stdout, err = call("scan", PROFILE, incoming, "--model", kept, "--json-log",
                             "--db", workdir / "kept_log.sqlite",
                             "--work", workdir / "kept_log_work")  # fmt: skip
    assert code == 0, err
    records = [json.loads(line) for line in stdout.splitlines()]
    (scene,) = [r for r in records if r["event"] == "scene"]
    assert scene["status"] == "screened" and scene["notes"] == [note.split(": ", 1)[1]]


def test_screen_writes_the_raster_the_profile_asks_for(
    screened: tuple[Path, tuple[int, str, str]],
    trained: tuple[Path, tuple[int, str, str]],
    workdir: Path,
    osbs_path: Path,
) -> None:
    """By default each tile's score sits at its centre pixel, in 8 px cells (the gcd of
    the 48 px stride and the first centres' 8 px offset); ``tiling.raster: footprint``
    averages tiles over 16 px cells. The tile table is the same either way."""
    folder = scene_folder(open_scene(osbs_path))
    frame = gpd.read_parquet(screened[0] / folder / "tiles.parquet")
    with rasterio.open(screened[0] / folder / "scores.tif") as ds:
        assert ds.tags()["score_raster"] == "centre" and (ds.height, ds.width) == (50, 50)
        raster = ds.read(1)
    centre_cells = (frame["row_off"].to_numpy() + 31) // 8, (frame["col_off"].to_numpy() + 31) // 8
    np.testing.assert_allclose(raster[centre_cells], frame["score"].to_numpy(), rtol=1e-6)
    profile = yaml.safe_load(PROFILE.read_text())
    profile["tiling"]["raster"] = "footprint"
    averaged = workdir / "footprint.yaml"
    averaged.write_text(yaml.safe_dump(profile))
    out = workdir / "screen_footprint"
    code, _, err = call("screen", averaged, osbs_path, "--model", trained[0], "--out", out,
                        "--device", "cpu")  # fmt: skip
    assert code == 0, err
    again = gpd.read_parquet(out / folder / "tiles.parquet")
    assert again["tile_id"].tolist() == frame["tile_id"].tolist()
    with rasterio.open(out / folder / "scores.tif") as ds:
        assert ds.tags()["score_raster"] == "footprint" and (ds.height, ds.width) == (25, 25)


# -- bad input ----------------------------------------------------------------------------
def test_screen_missing_model_dir(osbs_path: Path, tmp_path: Path) -> None:
    code, _, err = call("screen", PROFILE, osbs_path, "--model", tmp_path / "nope",
                        "--out", tmp_path / "out")  # fmt: skip
    assert code == EXIT_USER_ERROR
    assert "not a geoscreen model directory" in one_error_line(err)
    assert not (tmp_path / "out").exists()


def test_invalid_profile(osbs_path: Path, osbs_labels_path: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(PROFILE.read_text().replace("tile_size: 64", "tile_size: 4"))
    code, _, err = call("train", bad, "--labels", osbs_labels_path, "--imagery", osbs_path,
                        "--out", tmp_path / "model")  # fmt: skip
    assert code == EXIT_USER_ERROR
    line = one_error_line(err)
    assert "bad.yaml" in line and "tiling.tile_size" in line
    assert not (tmp_path / "model").exists()


def test_cuda_without_gpu(
    trained: tuple[Path, tuple[int, str, str]],
    osbs_path: Path,
    osbs_labels_path: Path,
    tmp_path: Path,
) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    for args in (
        ("train", PROFILE, "--labels", osbs_labels_path, "--imagery", osbs_path),
        ("screen", PROFILE, osbs_path, "--model", trained[0]),
    ):
        code, _, err = call(*args, "--out", tmp_path / "out", "--device", "cuda")
        assert code == EXIT_USER_ERROR
        assert "no CUDA GPU is available" in one_error_line(err)
        assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_screen_scenes_that_do_not_fit(
    trained: tuple[Path, tuple[int, str, str]], osbs_path: Path, yell_path: Path, tmp_path: Path
) -> None:
    s2 = make_sentinel2_like(tmp_path / "s2.tif", 96, 80)
    out = tmp_path / "out"
    code, _, err = call("screen", PROFILE, osbs_path, s2, "--model", trained[0], "--out", out)
    assert code == EXIT_USER_ERROR
    assert "expects 3 bands but the file has 13" in one_error_line(err)
    # An AOI cannot be placed on a scene without georeference: refused before writing.
    aoi = tmp_path / "aoi.geojson"
    scene = open_scene(osbs_path)
    gpd.GeoDataFrame(geometry=[shapely.box(*scene.bounds)], crs=scene.crs).to_file(aoi)
    code, _, err = call("screen", PROFILE, osbs_path, yell_path, "--model", trained[0],
                        "--out", out, "--aoi", aoi)  # fmt: skip
    assert code == EXIT_USER_ERROR
    assert "has no CRS" in one_error_line(err)
    assert not out.exists()


def test_model_of_another_profile(
    trained: tuple[Path, tuple[int, str, str]], osbs_path: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other.yaml"
    other.write_text(PROFILE.read_text().replace("name: tree_crowns_neon", "name: other_trees"))
    code, _, err = call("screen", other, osbs_path, "--model", trained[0], "--out", tmp_path / "o")
    assert code == EXIT_USER_ERROR
    assert "trained for profile 'tree_crowns_neon', not 'other_trees'" in one_error_line(err)


def test_examples_outside_the_imagery(examples_path: Path, yell_path: Path, tmp_path: Path) -> None:
    code, _, err = call("similar", "--profile", PROFILE, "--imagery", yell_path, "--example",
                        examples_path, "--out", tmp_path / "out")  # fmt: skip
    assert code == EXIT_USER_ERROR
    assert "no example falls inside the given imagery" in one_error_line(err)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_model_without_backbone_screens_in_fp32_whatever_the_precision(
    trained: tuple[Path, tuple[int, str, str]],
    screened: tuple[Path, tuple[int, str, str]],
    workdir: Path,
    yell_path: Path,
) -> None:
    """The learner chosen on OSBS is a spectral one (no backbone): ``--precision bf16``
    changes nothing in its scores, and ``screen`` says and records fp32. (Backbone models
    in bf16: tests/vision/test_runtime_precision.py, tests/cli/test_cli_scan_precision.py.)"""
    assert not runs_backbone(load_model(trained[0]).model)
    out = workdir / "screen_bf16"
    code, _, err = call("screen", PROFILE, yell_path, "--model", trained[0], "--out", out,
                        "--device", "cpu", "--precision", "bf16")  # fmt: skip
    assert code == 0, err
    assert "arithmetic: fp32 (this model runs no backbone" in err
    assert json.loads((out / "screen.json").read_text())["precision"] == "fp32"
    assert json.loads((screened[0] / "screen.json").read_text())["precision"] == "fp32"
    yell = open_scene(yell_path, sensor="rgb")
    auto = gpd.read_parquet(screened[0] / scene_folder(yell) / "tiles.parquet")
    bf16 = gpd.read_parquet(out / scene_folder(yell) / "tiles.parquet")
    assert auto["tile_id"].tolist() == bf16["tile_id"].tolist()
    np.testing.assert_array_equal(auto["score"].to_numpy(), bf16["score"].to_numpy())


def test_bad_precision(osbs_path: Path, tmp_path: Path) -> None:
    out, db = tmp_path / "o", tmp_path / "store.sqlite"
    for args in (("screen", "--out", out), ("scan", "--work", out, "--db", db)):
        code, _, err = call(args[0], PROFILE, osbs_path, "--model", tmp_path, *args[1:],
                            "--precision", "fp16")  # fmt: skip
        assert code == EXIT_USER_ERROR and "Traceback" not in err
        assert "--precision" in err and "'fp16' is not one of" in err
        assert not out.exists() and not db.exists()


def test_bad_option_values(osbs_path: Path, osbs_labels_path: Path, tmp_path: Path) -> None:
    code, _, err = call("train", PROFILE, "--labels", osbs_labels_path, "--imagery", osbs_path,
                        "--out", tmp_path / "m", "--max-epochs", "0")  # fmt: skip
    assert code == EXIT_USER_ERROR and "Traceback" not in err
    assert "--max-epochs" in err and not (tmp_path / "m").exists()
