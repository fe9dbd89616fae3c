"""The whole loop on bundled real imagery, offline: what ``geoscreen demo`` runs.

1. describe and tile the bundled samples;
2. prepare imagery: the NEON OSBS_029 aerial scene cut into four georeferenced
   scenes (a small "drop folder");
3. train (or reuse) the tree-crown profile's model on the scene's labels, through
   the profile's task (:func:`geoscreen.vision.task.task_for`);
4. scan the drop folder into a SQLite review store;
5. write ``map.html`` (offline, self-contained);
6. create a demo user with a one-time password (printed once);
7. the CLI then starts the review server unless ``--no-serve``.

Tree crowns stand in for the structures analysts look for: they are the one
profile with real labels here. Candidates only match a profile; people decide.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import rasterio
from rasterio.windows import Window

from geoscreen.errors import ConfigError, InputError
from geoscreen.imagery.scene import open_scene
from geoscreen.profiles import load_profile
from geoscreen.samples import sample_path

Echo = Callable[[str], None]
DEMO_PROFILE = Path(__file__).resolve().parent / "configs" / "tree_crowns_neon.yaml"
DEMO_USER = "demo"


@dataclass(frozen=True)
class DemoResult:
    """Where the demo put things."""

    out_dir: Path
    db: Path
    map_html: Path
    model_dir: Path
    user: str
    password: str
    candidates: int


def profile_path() -> Path:
    """The demo profile, shipped in the package (``geoscreen/configs``), so an installed
    wheel runs the demo from any folder."""
    if not DEMO_PROFILE.is_file():
        raise ConfigError(
            f"the demo profile is missing ({DEMO_PROFILE})",
            fix="Reinstall geoscreen: its bundled profiles (geoscreen/configs) are incomplete.",
        )
    return DEMO_PROFILE


def prepare_imagery(folder: Path, size: int = 200) -> list[Path]:
    """Cut NEON OSBS_029 (400 x 400 px) into four 200 px georeferenced scenes."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    with rasterio.open(sample_path("neon_osbs")) as src:
        for i, (row, col) in enumerate([(0, 0), (0, size), (size, 0), (size, size)]):
            path = folder / f"osbs_029_part{i + 1}.tif"
            if not path.exists():
                window = Window(col, row, size, size)
                profile = dict(
                    src.profile, width=size, height=size, transform=src.window_transform(window)
                )
                with rasterio.open(path, "w", **profile) as dst:
                    dst.write(src.read(window=window))
            paths.append(path)
    return paths


def train_or_load(model_dir: Path, echo: Echo) -> Path:
    """Reuse a demo model that loads, else train the profile's model (seconds on a CPU),
    both through the profile's task, as ``geoscreen train``/``screen`` and ``scan`` do."""
    from geoscreen.vision.modeldir import CARD_FILE
    from geoscreen.vision.task import TrainRequest, task_for

    profile = load_profile(profile_path())
    task = task_for(profile)
    if (model_dir / CARD_FILE).is_file():
        try:
            task.check_profile(task.load(model_dir), profile)
            echo(f"  reusing the trained model in {model_dir}")
            return model_dir
        except (InputError, ConfigError):
            echo("  the saved model does not load; training again")
    card = task.train(
        profile,
        [sample_path("neon_osbs_labels")],
        [sample_path("neon_osbs")],
        model_dir,
        TrainRequest(),
        progress=lambda m: echo(f"  {m}"),
    )
    echo(f"  {task.trained_summary(card, profile, str(model_dir))}")
    return model_dir


def demo_user(db: Path) -> tuple[str, str]:
    """A supervisor 'demo' with a fresh one-time password (reset on every demo run)."""
    from geoscreen.review.store import open_store
    from geoscreen.review.users import add_user, list_users, set_password

    password = secrets.token_urlsafe(12)
    store = open_store(db, create=True)
    try:
        if any(u.name == DEMO_USER for u in list_users(store)):
            set_password(store, DEMO_USER, password, actor="geoscreen-demo")
        else:
            add_user(store, DEMO_USER, "supervisor", password=password, actor="geoscreen-demo")
    finally:
        store.close()
    return DEMO_USER, password


def write_map(db: Path, scenes: list[Path], out: Path) -> tuple[Path, int]:
    """The candidates of the store on an offline map with the scenes' quicklooks."""
    from geoscreen.review.store import open_store
    from geoscreen.web.mapping import build_map, quicklook

    store = open_store(db)
    try:
        frame = store.frame()
    finally:
        store.close()
    opened = [open_scene(p) for p in scenes]
    footprints = gpd.GeoDataFrame(
        {"scene": [p.name for p in scenes]}, geometry=[s.footprint for s in opened], crs="EPSG:4326"
    )
    looks = [quicklook(s, max_size=512) for s in opened]
    result = build_map(frame, footprints=footprints, quicklooks=looks, evidence_base=out.parent)
    return result.save(out), len(frame)


def run_full_demo(out_dir: str | Path, echo: Echo) -> DemoResult:
    """Steps 1-6 of the module doc; returns where everything is."""
    from geoscreen.batch.executors import LocalExecutor
    from geoscreen.batch.runner import run_scan
    from geoscreen.batch.scan import ScanSettings
    from geoscreen.batch.sources import discover
    from geoscreen.review.store import open_store

    out = Path(out_dir).resolve()
    echo("\n[2/6] preparing imagery: NEON OSBS_029 cut into four scenes")
    scenes = prepare_imagery(out / "imagery")
    echo("[3/6] training the tree-crown profile (learners compared on blocked folds)")
    model_dir = train_or_load(out / "model", echo)
    echo("[4/6] scanning the imagery folder into the review store")
    db = out / "geoscreen.sqlite"
    store = open_store(db, create=True)
    settings = ScanSettings(
        profile_path=str(profile_path()), model_dir=str(model_dir), work_dir=str(out / "runs")
    )
    try:
        summary = run_scan(
            discover([str(out / "imagery")]),
            settings,
            store,
            LocalExecutor(),
            actor="geoscreen-demo",
        )
    finally:
        store.close()
    totals = summary.as_dict()
    echo(
        f"  {totals['screened']} screened, {totals['skipped']} already screened, "
        f"{totals['new_sites']} new candidate sites matching the profile"
    )
    echo("[5/6] writing the offline map")
    map_html, count = write_map(db, scenes, out / "map.html")
    echo(f"  {map_html} ({count} candidates; no request leaves this machine)")
    echo("[6/6] creating the demo user")
    user, password = demo_user(db)
    echo(f"  user '{user}' (supervisor), one-time password: {password}")
    return DemoResult(out, db, map_html, model_dir, user, password, count)
