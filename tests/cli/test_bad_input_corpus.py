"""A corpus of malformed inputs across the commands: each is refused in one line.

Every case must exit 2 with exactly one ``geoscreen: error:`` line on stderr (after any
report lines a command prints first), no traceback, a sentence that says how to fix
it, and leave the work folder and the review store exactly as they were: no output
file or folder, no new store, no audit entry.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import sqlite3
from pathlib import Path

import geopandas as gpd
import pytest
import yaml
from shapely.geometry import LineString, Point, Polygon, box

from geoscreen.cli.app import main
from geoscreen.imagery.scene import open_scene
from geoscreen.profiles import load_profile
from geoscreen.review.testing import make_sites
from geoscreen.vision.testing import untrained_model_dir

CONFIGS = Path(__file__).resolve().parents[2] / "geoscreen" / "configs"
AS_ADMIN = "--as-admin-of-this-file"
SECRET = "a long enough secret"
FIX = re.compile(r"[.?!] [A-Z'(\"]")  # a second sentence: the fix
STORE = "review.sqlite"


def _profile(folder: Path, name: str, **changes: object) -> None:
    data = yaml.safe_load((CONFIGS / "tree_crowns_neon.yaml").read_text())
    data.update(changes)
    (folder / name).write_text(yaml.safe_dump(data))


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory, osbs_path: Path, osbs_labels_path: Path) -> Path:
    """Inputs good and bad, and a store with users and one loaded run."""
    folder = tmp_path_factory.mktemp("corpus")
    shutil.copy(osbs_path, folder / "scene.tif")
    shutil.copy(osbs_path, folder / "OSBS_029.tif")  # the name the labels give
    (folder / "scenes").mkdir()
    shutil.copy(osbs_path, folder / "scenes" / "scene.tif")
    shutil.copy(osbs_labels_path, folder / "labels.csv")
    _profile(folder, "profile.yaml")
    untrained_model_dir(  # scan checks the model before the store: a usable one
        load_profile(folder / "profile.yaml"), open_scene(folder / "scene.tif"), folder / "m"
    )
    _profile(folder, "huge_tile.yaml", tiling={"tile_size": 1_000_000_000_000})
    _profile(folder, "overlap.yaml", tiling={"tile_size": 64, "overlap": 64})
    _profile(folder, "resolution.yaml", imagery={"resolution_m": [0.1, float("inf")]})
    _profile(folder, "percentiles.yaml",
             preprocess={"normalization": {"percentiles": [98, 2]}})  # fmt: skip
    _profile(folder, "typo.yaml", treshold=0.5)
    shutil.copy(CONFIGS / "tree_crowns_detect_neon.yaml", folder / "detect.yaml")
    (folder / "notyaml.yaml").write_text("name: [unclosed\n")
    (folder / "list.yaml").write_text("- name\n- version\n")
    (folder / "garbage.tif").write_text("not an image")
    (folder / "garbage.parquet").write_bytes(b"PAR1 not really")
    (folder / "garbage.json").write_text("{not json")
    (folder / "afile").write_text("a file where a folder is expected")
    (folder / "existing.json").write_text("{}")
    (folder / "labels.txt").write_text("label\nTree\n")
    crs = "EPSG:32617"
    gpd.GeoDataFrame(geometry=[box(0, 0, 1, 1), LineString([(0, 0), (1, 1)]), Point(2, 2)],
                     crs=crs).to_file(folder / "mixed.gpkg")  # fmt: skip
    gpd.GeoDataFrame(geometry=[Polygon([(0, 0), (2, 2), (2, 0), (0, 2)])],
                     crs=crs).to_file(folder / "bowtie.geojson")  # fmt: skip
    gpd.GeoDataFrame(geometry=[Point(1, 1)], crs=crs).to_file(folder / "points.geojson")
    gpd.GeoDataFrame({"name": ["x"]}, geometry=[Point(1, 2)],
                     crs="EPSG:4326").to_file(folder / "noscore.geojson")  # fmt: skip
    with (folder / "labels.csv").open() as f:
        rows = f.read().splitlines()
    spoiled = [rows[0]] + [",".join([*r.split(",")[:5], ""]) for r in rows[1:30]] + rows[30:]
    (folder / "broken_labels.csv").write_text("\n".join(spoiled) + "\n")  # 29 unlabelled rows
    (folder / "screened").mkdir()
    (folder / "screened" / "tiles.parquet").write_bytes(b"garbage")
    (folder / "foreign.sqlite").write_bytes(b"SQLite format 3\x00" + b"\x00" * 200)
    make_sites(folder / "sites.parquet", 6)
    db = str(folder / STORE)
    stdin = io.StringIO(f"{SECRET}\n")
    for args in (["users", "add", "root", "--role", "admin", "--password-stdin", AS_ADMIN],
                 ["users", "add", "ann", "--user", "root", "--role", "analyst",
                  "--admin-password-stdin"],
                 ["users", "add", "sue", "--role", "supervisor", AS_ADMIN],
                 ["review", "load", str(folder / "sites.parquet"), AS_ADMIN]):  # fmt: skip
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr("sys.stdin", stdin)
            stdin.seek(0)
            assert main([*args, "--db", db]) == 0, args
    return folder


def _state(folder: Path) -> dict[str, object]:
    """Every file's content hash (the store by its SQL dump), and the audit head."""
    files: dict[str, object] = {}
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if path.is_dir():
            files[name] = "folder"
        elif name.startswith(STORE):
            continue  # -wal/-shm come and go with readers; the dump below is what counts
        else:
            files[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    with sqlite3.connect(folder / STORE) as conn:
        files[STORE] = hashlib.sha256("\n".join(conn.iterdump()).encode()).hexdigest()
    conn.close()
    return files


# (args, stdin, what the error says); paths are relative to the work folder
CASES: list[tuple[list[str], str, str]] = [
    # profiles
    (["profile", "validate", "huge_tile.yaml"], "",
     "tiling.tile_size: Input should be less than or equal to 4096 (got 1000000000000)"),
    (["profile", "validate", "overlap.yaml"], "", "overlap (64) must be smaller than tile_size"),
    (["profile", "validate", "resolution.yaml"], "", "imagery.resolution_m"),
    (["profile", "validate", "percentiles.yaml"], "", "percentiles must satisfy"),
    (["profile", "validate", "typo.yaml"], "", "treshold: unknown field"),
    (["profile", "validate", "notyaml.yaml"], "", "not valid YAML"),
    (["profile", "validate", "list.yaml"], "", "must be a YAML mapping"),
    (["profile", "validate", "nosuch.yaml"], "", "profile file not found"),
    # imagery
    (["info", "garbage.tif"], "", "garbage.tif"),
    (["info", "nosuch.tif"], "", "nosuch.tif"),
    (["tile", "scene.tif", "--tile-size", "1000000000000", "--out", "t.parquet"], "",
     "tile size must be 8 to 4096 pixels"),
    (["tile", "scene.tif", "--tile-size", "64", "--overlap", "64", "--out", "t.parquet"], "",
     "overlap must be between 0 and tile size - 1"),
    (["tile", "scene.tif", "--aoi", "mixed.gpkg", "--out", "t.parquet"], "",
     "mixes polygons with 2 other features"),
    (["tile", "scene.tif", "--aoi", "bowtie.geojson", "--out", "t.parquet"], "",
     "feature 0 is not a valid polygon (Self-intersection"),
    (["tile", "scene.tif", "--aoi", "points.geojson", "--out", "t.parquet"], "",
     "no polygons (found: Point)"),
    (["tile", "scene.tif", "--tile-size", "abc", "--out", "t.parquet"], "",
     "'abc' is not a valid integer"),
    (["tile", "scene.tif", "--out", "afile/t.parquet"], "", "afile"),
    # training and screening
    (["train", "profile.yaml", "--out", "m"], "", "training needs --labels and --imagery"),
    (["train", "profile.yaml", "--labels", "broken_labels.csv", "--imagery", "OSBS_029.tif",
      "--out", "m"], "", "label rows"),
    (["train", "profile.yaml", "--labels", "nosuch.csv", "--imagery", "OSBS_029.tif", "--out", "m"],
     "", "label file not found"),
    (["train", "profile.yaml", "--labels", "labels.txt", "--imagery", "OSBS_029.tif", "--out", "m"],
     "", "unknown label file type '.txt'"),
    (["train", "profile.yaml", "--labels", "labels.csv", "--imagery", "OSBS_029.tif", "--out", "m",
      "--positive", "Tree", "--negative", "tree"], "", "both --positive and --negative"),
    (["train", "profile.yaml", "--labels", "labels.csv", "--imagery", "OSBS_029.tif",
      "--out", "afile"], "", "afile"),
    (["train", "profile.yaml", "--folds", "1", "--out", "m"], "", "1 is not in the range"),
    (["train", "huge_tile.yaml", "--labels", "labels.csv", "--imagery", "OSBS_029.tif",
      "--out", "m"], "", "tiling.tile_size"),
    (["screen", "profile.yaml", "scene.tif", "--model", "nomodel", "--out", "s"], "", "nomodel"),
    # a similarity search kept as a model: the analyst's threshold, a similarity
    (["similar", "--profile", "profile.yaml", "--imagery", "scene.tif", "--example",
      "labels.csv", "--out", "s", "--save-model", "sm"], "", "--save-model needs --threshold"),
    (["similar", "--profile", "detect.yaml", "--imagery", "scene.tif", "--example",
      "labels.csv", "--out", "s"], "", "similarity search ranks tiles"),
    (["similar", "--profile", "profile.yaml", "--imagery", "scene.tif", "--example",
      "labels.csv", "--out", "s", "--threshold", "1.5"], "", "a cosine similarity lies in -1..1"),
    (["similar", "--profile", "profile.yaml", "--imagery", "scene.tif", "--example",
      "labels.csv", "--out", "s", "--threshold", "0.9", "--save-model", "afile"], "",
     "Directory 'afile' is a file"),
    (["screen", "profile.yaml", "scene.tif", "--model", "m", "--precision", "fp16", "--out", "s"],
     "", "'fp16' is not one of"),
    (["sites", "extract", "screened", "--profile", "profile.yaml", "--out", "x.parquet"], "",
     "not a screening output folder"),
    (["sites", "extract", "screened", "--image", "scene.tif", "--profile", "profile.yaml",
      "--out", "x.parquet"], "", "tiles.parquet"),
    (["sites", "extract", "nosuchfolder", "--threshold", "0.5", "--out", "x.parquet"], "",
     "nosuchfolder: no such folder"),
    (["evaluate", "--predicted", "sites.parquet", "--truth", "sites.parquet", "--out", "afile"],
     "", "afile"),
    (["evaluate", "--predicted", "nosuch.gpkg", "--truth", "sites.parquet", "--out", "e"], "",
     "nosuch.gpkg"),
    (["evaluate", "--predicted", "sites.parquet", "--truth", "sites.parquet", "--iou", "0.5",
      "--distance", "3", "--out", "e"], "", "give --iou or --distance, not both"),
    # the review store
    (["review", "load", "garbage.parquet", AS_ADMIN], "", "cannot read sites"),
    (["review", "load", "noscore.geojson", AS_ADMIN], "",
     "which profile found these sites? Give --profile NAME"),
    (["review", "load", "noscore.geojson", "--profile", "p", AS_ADMIN], "",
     "no 'score' or 'score_max' column"),
    (["review", "load", "sites.parquet"], "", "review load must say who acts"),
    (["review", "load", "sites.parquet", "--user", "zed", "--password-stdin"], f"{SECRET}\n",
     "no user named 'zed'"),
    (["review", "load", "sites.parquet", "--user", "ann", "--password-stdin"], "wrong!\n",
     "wrong user name or password"),
    (["review", "set", "1", "done", "--user", "ann", AS_ADMIN], "", "unknown status 'done'"),
    (["review", "set", "99", "confirmed", "--reason", "r", "--user", "ann", AS_ADMIN], "",
     "no candidate with id 99"),
    (["review", "set", "1", "in_review", "--user", "ann"], "", "who must give a password"),
    (["review", "set", "1", "in_review", "--user", "root", "--password-stdin"], "not it\n",
     "wrong user name or password"),
    (["review", "set", "1", "escalated", "--reason", "r", "--user", "ann", AS_ADMIN], "",
     "escalat"),
    (["review", "note", "1", "   ", "--user", "ann", AS_ADMIN], "", "a note needs some text"),
    (["review", "list", "--bbox", "1,2,3"], "", "not a bounding box"),
    (["review", "list", "--bbox", "nan,0,1,1"], "", "non-finite"),
    (["review", "list", "--since", "yesterday"], "", "not a date"),
    (["review", "list", "--status", "open"], "", "unknown status 'open'"),
    (["review", "show", "abc"], "", "'abc' is not a valid integer"),
    (["review", "list", "--db", "foreign.sqlite"], "", "not a geoscreen review store"),
    (["review", "list", "--db", "nosuch/x.sqlite"], "", "nosuch"),
    (["export", "--user", "ann", AS_ADMIN, "--out", "x.txt"], "", "cannot tell the format"),
    (["export", "--user", "sue", AS_ADMIN, "--redaction", "partner", "--min-m", "9",
      "--max-m", "5", "--out", "x.kml"], "", "max_m (5) must be above min_m (9)"),
    (["export", "--user", "ann", AS_ADMIN, "--area", "mixed.gpkg", "--out", "x.geojson"], "",
     "mixes polygons"),
    (["export", "--user", "sue", AS_ADMIN, "--redaction", "public", "--regions", "nosuch.gpkg",
      "--out", "x.geojson"], "", "regions file not found"),
    (["export", "--user", "ann", "--out", "x.geojson"], "", "who must give a password"),
    (["users", "add", "bad name!", "--role", "analyst", AS_ADMIN], "", "bad user name"),
    (["users", "add", "kim", "--role", "boss", AS_ADMIN], "", "unknown role 'boss'"),
    (["users", "add", "kim", "--role", "analyst"], "", "users add must say who acts"),
    (["users", "add", "kim", "--role", "analyst", "--user", "ann", "--admin-password-stdin"],
     f"{SECRET}\n", "needs admin"),
    (["users", "add", "ann", "--role", "analyst", AS_ADMIN], "", "user 'ann' exists already"),
    (["users", "add", "kim", "--role", "analyst", "--password-stdin", AS_ADMIN], "short\n",
     "password too short"),
    (["users", "disable", "zed", AS_ADMIN], "", "no user named 'zed'"),
    (["users", "disable", "ann"], "", "users disable must say who acts"),
    (["audit", "verify", "--anchor", "garbage.json"], "", "cannot read the anchor"),
    (["audit", "verify", "--anchor", "existing.json"], "", "not an audit anchor"),
    (["audit", "anchor", "--out", "existing.json"], "", "file exists"),
    # scan
    (["scan", "profile.yaml", "scenes", "--model", "m", "--db", "foreign.sqlite"], "",
     "not a geoscreen review store"),
    (["scan", "profile.yaml", "nosuch", "--model", "m"], "", "nosuch"),
    (["scan", "profile.yaml", "scenes", "--model", "m", "--tta"], "",
     "--tta is for detection profiles; this is a classify profile"),
    (["screen", "profile.yaml", "scene.tif", "--model", "m", "--tta", "--out", "s"], "",
     "--tta is for detection profiles"),
    (["scan", "huge_tile.yaml", "scenes", "--model", "m"], "", "tiling.tile_size"),
    (["scan", "profile.yaml", "scenes", "--model", "m", "--work", "afile/w"], "", "afile"),
    (["scan", "profile.yaml", "scenes", "--model", "m", "--db", "nosuch/x.sqlite"], "",
     "folder does not exist"),
    # everything else
    (["serve", "--trusted-proxy", "not-an-address"], "", "not-an-address"),
    (["nosuch"], "", "No such command 'nosuch'"),
]  # fmt: skip


def test_the_corpus_is_large_and_spans_the_commands() -> None:
    assert len(CASES) >= 40
    assert len({tuple(args[:2]) if args[0] in ("review", "users", "audit", "profile", "sites")
                else args[0] for args, _, _ in CASES}) >= 20  # fmt: skip


@pytest.mark.parametrize(
    ("args", "stdin", "message"), CASES, ids=[" ".join(args[:4]) for args, _, _ in CASES]
)
def test_refused_in_one_line_with_a_fix_and_nothing_left_behind(
    work: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    args: list[str], stdin: str, message: str,
) -> None:  # fmt: skip
    monkeypatch.chdir(work)
    monkeypatch.setenv("GEOSCREEN_DB", str(work / STORE))
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    before = _state(work)
    capsys.readouterr()
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 2, (args, out, err)
    assert "Traceback" not in err and out == ""
    errors = [line for line in err.splitlines() if line.startswith("geoscreen: error: ")]
    assert len(errors) == 1 and err.endswith(errors[0] + "\n"), err
    assert message in errors[0], errors[0]
    assert FIX.search(errors[0]) and errors[0].rstrip().endswith((".", ")", "'")), errors[0]
    assert _state(work) == before


def test_the_store_still_verifies(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "verify", "--db", str(work / STORE), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["entries"] == 4
