"""One scan: every new scene screened -> sites -> store, incrementally and resumably.

Per scene the work is split in three:

1. :func:`plan_scene` (client): open the scene, derive its run id from the scene's
   content id, the profile version and the model hash, and skip it when the store
   already holds that run complete (incremental, by content, not file name).
2. :func:`score_chunk` (worker, any executor): score one block of the scene's
   tile grid; the model is loaded once per process.
3. :func:`finish_scene` (client, the single writer): assemble the chunks (a score
   map, or objects merged across tiles), make sites (:func:`~geoscreen.sites.make.scene_sites`),
   write evidence chips, match them to the candidates already in the store (a
   re-seen site keeps its id and gains a detection), and load the run in one
   transaction. Candidates found in the scene by an earlier run (another model or
   profile version) that this run does not find are flagged "below threshold with
   model ..." by the load, never deleted.

What the model is (classifier or detector) is the profile's ``model.task``
(:mod:`geoscreen.vision.task`); :func:`check_model` loads it once before the scan
opens any scene, so a model that cannot be used stops the scan before it writes.

A scan killed at any point leaves no partial run: the next scan redoes the
unfinished scenes and, with the same deterministic run ids, duplicates nothing.
Evidence chips and the scene's coverage row are written before the run is loaded
(which marks it complete), so a complete run always has its coverage; a row left by
an attempt killed before loading is replaced when the scene is redone, and a complete
run whose row is missing is screened again (loading it again changes nothing).
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
from sqlalchemy import select

from geoscreen.batch.idcache import SceneIdCache
from geoscreen.batch.sources import SceneRef
from geoscreen.errors import GeoscreenError
from geoscreen.imagery.region import card_warnings
from geoscreen.imagery.scene import Scene, open_scene
from geoscreen.imagery.tiling import TileGrid
from geoscreen.profiles import Profile, load_profile, select_bands
from geoscreen.review import audit
from geoscreen.review.loader import load_sites
from geoscreen.review.policy import run_policy
from geoscreen.review.schema import runs
from geoscreen.review.spatial import BBox
from geoscreen.review.store import CandidateFilter, Store
from geoscreen.sites.coverage import coverage_of, latest_gap, read_coverage, write_coverage
from geoscreen.sites.evidence import write_evidence
from geoscreen.sites.make import scene_sites
from geoscreen.sites.match import MatchRule, assign_one_to_one, candidate_pairs
from geoscreen.vision.card_warnings import baseline_warnings
from geoscreen.vision.infer import profile_grid, screening_precision
from geoscreen.vision.runtime import pick_device, pick_precision
from geoscreen.vision.scoremap import ScoreMap
from geoscreen.vision.similarity_model import scene_comparison
from geoscreen.vision.task import Chunk, RunSettings, task_for

log = logging.getLogger(__name__)

COVERAGE_FILE = "coverage.parquet"


@dataclass(frozen=True)
class ScanSettings:
    """What every worker needs to score tiles; small and picklable."""

    profile_path: str
    model_dir: str
    work_dir: str
    batch_size: int = 32
    chunk_tiles: int = 2048
    threads: int | None = None
    device: str = "cpu"
    precision: str = "auto"  # fp32, bf16, int8 (classify) or auto (runtime.pick_precision)
    bands: tuple[str, ...] = ()  # --bands, resolved to names (profiles.select_bands)
    tta: bool = False  # detect: also the 8 flips/rotations of each tile (the card's threshold)


@dataclass(frozen=True)
class ScenePlan:
    """A scene to screen: its grid split into chunks of flat tile indexes."""

    ref: SceneRef
    scene: Scene
    run_id: str
    chunks: tuple[np.ndarray, ...]

    @property
    def tiles(self) -> int:
        return int(sum(c.size for c in self.chunks))


@dataclass
class SceneOutcome:
    """What happened to one scene; the scan summary adds these up."""

    uri: str
    status: str  # screened | skipped | failed
    scene_id: str | None = None
    run_id: str | None = None
    tiles: int = 0
    new_sites: int = 0
    reseen_sites: int = 0
    below_threshold: int = 0  # earlier candidates of the scene this run no longer finds
    error: str | None = None
    seconds: float = 0.0
    # The scene is far from the model's training region or statistics (stored with the run).
    warnings: list[str] = field(default_factory=list)
    # Information for the analyst, not stored: a similarity model's scores on this scene
    # beside the examples' scene's (a threshold set on one scene need not suit another).
    notes: list[str] = field(default_factory=list)


@lru_cache(maxsize=4)
def _profile(path: str, bands: tuple[str, ...] = ()) -> Profile:
    """The profile, fed ``bands`` (already resolved against a scene) when given."""
    return select_bands(load_profile(path), bands, [])


@lru_cache(maxsize=2)
def _model(profile_path: str, model_dir: str, device: str) -> Any:
    """The profile's model (classifier or detector), loaded once per process (per worker
    on Dask)."""
    return task_for(_profile(profile_path)).load(model_dir, device)


def check_model(settings: ScanSettings) -> list[str]:
    """Load the model and check it was made for the profile and can run in the precision
    asked for; raises a GeoscreenError (corrupt weights, another profile's model, a
    classifier for a detection profile, int8 for a model or device it does not fit).
    Returns the model's warnings for every scene (:func:`baseline_warnings`), which
    each run keeps in the store and the caller says once."""
    profile = _profile(settings.profile_path, settings.bands)
    loaded = _model(settings.profile_path, settings.model_dir, settings.device)
    task = task_for(profile)
    task.check_profile(loaded, profile)
    device = pick_device(settings.device)
    if task.name == "classify":
        screening_precision(loaded.model, settings.precision, device, checked=True)
    else:
        pick_precision(settings.precision, device)
    return baseline_warnings(loaded.card)


def run_id_for(
    profile: Profile, model_sha256: str, scene_id: str, bands: tuple[str, ...] = ()
) -> str:
    """Deterministic run id: the same scene, profile version, model and ``--bands`` give
    the same id (other bands are another run, not one already done)."""
    run_id = f"{profile.name}:{profile.version}:{model_sha256[:16]}:{scene_id}"
    return f"{run_id}:bands={','.join(bands)}" if bands else run_id


def completed_runs(store: Store, run_ids: list[str]) -> set[str]:
    """Which of ``run_ids`` the store holds complete."""
    found: set[str] = set()
    with store.read() as conn:
        for start in range(0, len(run_ids), 500):
            part = run_ids[start : start + 500]
            query = select(runs.c.run_id).where(
                runs.c.run_id.in_(part), runs.c.completed_at.is_not(None)
            )
            found.update(r.run_id for r in conn.execute(query))
    return found


def uncovered_runs(plans: list[ScenePlan], settings: ScanSettings) -> set[str]:
    """Run ids of georeferenced scenes missing from the coverage file (lost by a crash in
    an older version between loading the run and writing coverage): screened again.

    Without a coverage file (a new work folder) nothing is redone.
    """
    located = {p.run_id for p in plans if p.scene.crs is not None}
    path = Path(settings.work_dir) / COVERAGE_FILE
    if not located or not path.exists():
        return set()
    return located - set(read_coverage(path)["run_id"].astype(str))


@lru_cache(maxsize=2)
def _model_sha256(model_dir: str) -> str:
    """The model hash without loading the model (the incremental check stays cheap)."""
    from geoscreen.vision.modeldir import WEIGHTS_FILE
    from geoscreen.vision.weights import sha256_file

    return sha256_file(Path(model_dir) / WEIGHTS_FILE)


def plan_scene(
    ref: SceneRef, settings: ScanSettings, ids: SceneIdCache | None = None
) -> ScenePlan | SceneOutcome:
    """Open the scene, derive its run id and split its grid into chunks (or say why not).

    ``ids`` remembers the content ids of unchanged files between scans.
    """
    started = time.perf_counter()
    profile = _profile(settings.profile_path, settings.bands)
    try:
        known = ids.get(ref.uri) if ids is not None else None
        scene = open_scene(ref.uri, sensor=profile.imagery.sensor, scene_id=known)
        if ids is not None and known is None:
            ids.put(ref.uri, scene.id)
        run_id = run_id_for(profile, _model_sha256(settings.model_dir), scene.id, settings.bands)
        flat = profile_grid(profile, scene).flat_indexes()  # within its AOI, not excluded
    except GeoscreenError as exc:
        return SceneOutcome(
            ref.uri, "failed", error=exc.message, seconds=time.perf_counter() - started
        )
    size = max(1, settings.chunk_tiles)
    chunks = tuple(flat[i : i + size] for i in range(0, flat.size, size))
    return ScenePlan(ref, scene, run_id, chunks)


def check_plan(plan: ScenePlan, settings: ScanSettings) -> SceneOutcome | None:
    """A failure if the model or profile does not fit the scene, else None."""
    profile = _profile(settings.profile_path, settings.bands)
    try:
        loaded = _model(settings.profile_path, settings.model_dir, settings.device)
        task_for(profile).check(loaded, profile, plan.scene)
    except GeoscreenError as exc:
        return SceneOutcome(plan.ref.uri, "failed", plan.scene.id, plan.run_id, error=exc.message)
    return None


def score_chunk(plan: ScenePlan, index: int, settings: ScanSettings) -> Chunk:
    """Score one chunk of a scene's grid (runs in a worker; the model is cached)."""
    import torch

    from geoscreen.imagery.preprocess import ScenePreprocessor
    from geoscreen.vision.runtime import pick_device, tune_malloc

    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = pick_device(settings.device)
    if device.type == "cpu":  # also undoes the low MALLOC_TRIM_THRESHOLD_ Dask's nanny sets
        tune_malloc()
    profile = _profile(settings.profile_path, settings.bands)
    loaded = _model(settings.profile_path, settings.model_dir, settings.device)
    grid = TileGrid(
        plan.scene, profile.tiling.tile_size, profile.tiling.overlap, selection=plan.chunks[index]
    ).drop_empty()
    preprocessor = ScenePreprocessor.build(profile.preprocess, plan.scene)
    task = task_for(profile)
    run = RunSettings(
        batch_size=settings.batch_size,
        device=settings.device,
        num_workers=0,
        precision=settings.precision,
        threshold=task.threshold(loaded, profile, settings.tta)[0],
        tta=settings.tta,
    )
    return task.score_chunk(loaded, grid, preprocessor, run, device)


def finish_scene(
    plan: ScenePlan,
    chunks: list[Chunk],
    settings: ScanSettings,
    store: Store,
    actor: str,
    started: float,
) -> SceneOutcome:
    """Assemble the chunks, make and match sites, load the run (the single writer)."""
    profile = _profile(settings.profile_path, settings.bands)
    task = task_for(profile)
    loaded = _model(settings.profile_path, settings.model_dir, settings.device)
    flat = np.concatenate([c.flat for c in chunks]) if chunks else np.zeros(0, np.int64)
    grid = TileGrid(
        plan.scene, profile.tiling.tile_size, profile.tiling.overlap, selection=np.sort(flat)
    )
    meta = {
        "profile": profile.name,
        "profile_version": profile.version,
        "model_sha256": loaded.sha256,
        "run_id": plan.run_id,
        "scene_id": plan.scene.id,
    }
    result = task.assemble(loaded, grid, chunks, meta)
    warnings = card_warnings(loaded.card, plan.scene)
    compared = (
        scene_comparison(loaded.card, result.scores) if isinstance(result, ScoreMap) else None
    )
    threshold, source = task.threshold(loaded, profile, settings.tta)
    sites = scene_sites(result, profile, plan.scene, threshold=threshold, run_id=plan.run_id,
                        model_sha256=loaded.sha256)  # fmt: skip
    work = Path(settings.work_dir)
    sites = write_evidence(sites, plan.scene, work / "evidence") if len(sites) else sites
    coverage_file = work / COVERAGE_FILE
    history = read_coverage(coverage_file) if coverage_file.exists() else None
    if history is not None:  # a row of this run is from an attempt killed before loading
        history = history[history["run_id"] != plan.run_id].reset_index(drop=True)
    sites, reseen = match_to_store(sites, store, profile, history)
    if plan.scene.crs is not None:  # before the run is complete: a kill now redoes the scene
        covered = coverage_of(
            grid, run_id=plan.run_id, profile=profile.name, acquired=plan.scene.acquired
        )
        frames = [f for f in (history, covered) if f is not None and len(f)]
        write_coverage(gpd.pd.concat(frames, ignore_index=True), coverage_file)
    loaded_run = load_sites(
        store, sites, profile=profile.name, run_id=plan.run_id, actor=actor,
        source=f"scan:{plan.ref.uri}", policy=run_policy(profile, threshold, source),
        rescreened=[plan.scene.id], model_sha256=loaded.sha256,
        warnings=baseline_warnings(loaded.card) + warnings,  # the reviewers see both
    )  # fmt: skip
    return SceneOutcome(
        plan.ref.uri,
        "screened",
        plan.scene.id,
        plan.run_id,
        tiles=len(grid),
        new_sites=loaded_run.new,
        reseen_sites=reseen,
        seconds=time.perf_counter() - started,
        below_threshold=loaded_run.below_threshold,
        warnings=warnings,
        notes=[compared] if compared else [],
    )


def match_to_store(
    sites: gpd.GeoDataFrame,
    store: Store,
    profile: Profile,
    coverage: gpd.GeoDataFrame | None,
    rule: MatchRule | None = None,
) -> tuple[gpd.GeoDataFrame, int]:
    """Give sites that match a stored candidate of the profile that candidate's id.

    Returns the sites (re-seen ones renamed, new ones flagged ``new_since`` where an
    earlier acquisition covered the place) and how many were re-seen.
    """
    if len(sites) == 0 or sites.crs is None:
        return sites, 0
    west, south, east, north = sites.total_bounds
    box = BBox(float(west), float(south), float(east), float(north))
    existing = store.frame(CandidateFilter(profile=profile.name, bbox=box))
    out = sites.copy()
    reseen = 0
    if len(existing):
        pairs = candidate_pairs(
            out.geometry.values, existing.geometry.values, rule or MatchRule(), True
        )
        matched = assign_one_to_one(pairs, len(out), len(existing))
        ids = out["site_id"].to_numpy(dtype=object, copy=True)
        ids[matched.left] = existing["site_id"].to_numpy(dtype=object)[matched.right]
        out["site_id"] = ids
        reseen = int(matched.left.size)
        fresh = np.setdiff1d(np.arange(len(out)), matched.left)
    else:
        fresh = np.arange(len(out))
    if coverage is not None and len(coverage) and fresh.size:
        points = gpd.GeoSeries(out.geometry.iloc[fresh].representative_point(), crs=out.crs)
        gaps = latest_gap(
            points.reset_index(drop=True),
            out["profile"].to_numpy(object)[fresh],
            out["first_seen"].iloc[fresh].reset_index(drop=True),
            coverage,
        )
        column = out["new_since"].copy()
        column.iloc[fresh] = gaps.to_numpy()
        out["new_since"] = column
    return out, reseen


def record_failure(store: Store, outcome: SceneOutcome, profile: Profile, actor: str) -> None:
    """Put a failed scene in the audit log (who, when, which file, the error)."""
    with store.write() as conn:
        audit.append(
            conn,
            actor=actor,
            action="scan_failed",
            entity="scene",
            entity_id=outcome.uri,
            after={"error": outcome.error or "", "scene_id": outcome.scene_id},
            profile=profile.name,
            profile_version=profile.version,
        )


def failure(ref: SceneRef, exc: BaseException, started: float) -> SceneOutcome:
    """An outcome for a scene whose processing raised."""
    if isinstance(exc, GeoscreenError):
        text = exc.message
    else:
        text = f"{type(exc).__name__}: {exc}"
        log.debug("scene %s failed:\n%s", ref.uri, "".join(traceback.format_exception(exc)))
    return SceneOutcome(ref.uri, "failed", error=text, seconds=time.perf_counter() - started)
