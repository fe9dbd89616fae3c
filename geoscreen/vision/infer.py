"""Screening: score every tile of a scene with a trained classifier.

A DataLoader reads and preprocesses tiles in worker processes while the model
computes (or, with ``num_workers=0``, the CPU default, in one reader thread between
model batches: :func:`read_in_thread`); inference runs
under ``torch.inference_mode`` in channels_last layout, in the precision
``ScreenOptions.precision`` picks (:mod:`geoscreen.vision.runtime`: by default bf16
autocast on CUDA and on CPUs with bf16 hardware, with the tiles scoring near the
threshold in force scored again in fp32; fp32 elsewhere). Results are deterministic for
the same inputs.
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from collections.abc import Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, closing
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from shapely.geometry.base import BaseGeometry
from torch.utils.data import DataLoader
from tqdm import tqdm

from geoscreen.errors import ConfigError
from geoscreen.imagery.aoi import load_aoi, load_areas
from geoscreen.imagery.dataset import TileDataset, collate
from geoscreen.imagery.preprocess import ScenePreprocessor
from geoscreen.imagery.scene import Scene
from geoscreen.imagery.tiling import TileGrid
from geoscreen.profiles import Profile, check_scene
from geoscreen.vision.blockscreen import block_path_applies, score_blocks
from geoscreen.vision.classifier import TileModel
from geoscreen.vision.fold import folded_for_inference
from geoscreen.vision.inputs import band_roles
from geoscreen.vision.modeldir import LoadedModelDir
from geoscreen.vision.quantize import (
    CALIBRATION_TILES,
    INT8_CHECK_MARGIN,
    check_int8,
    int8_model,
    trunk_of,
)
from geoscreen.vision.runtime import (
    BF16_CHECK_MARGIN,
    bf16_autocast,
    fp32_within,
    pick_device,
    pick_precision,
    tune_malloc,
)
from geoscreen.vision.scoremap import ScoreMap

log = logging.getLogger(__name__)

T = TypeVar("T")
# How close to the threshold in force a score must be to be computed again in fp32.
CHECK_MARGINS = {"bf16": BF16_CHECK_MARGIN, "int8": INT8_CHECK_MARGIN}
_END = object()
READER_THREAD = "geoscreen-reader"


@dataclass(frozen=True)
class ScreenOptions:
    """How to run inference (what to compute comes from the profile and model)."""

    batch_size: int = 32
    device: str = "auto"
    num_workers: int | None = None  # None: auto_workers(device)
    embeddings: bool = False
    drop_empty: bool = True
    progress: bool = False
    # fp32, bf16, int8 or auto (infer.screening_precision, runtime.pick_precision)
    precision: str = "auto"
    # The decision threshold in force (screen_scene: the profile's). In bf16 or int8, tiles
    # scoring within check_margin of it are scored again in fp32, so each falls on the
    # side of it that fp32 puts it. None: the arithmetic's own margin (CHECK_MARGINS). No
    # threshold or a margin of 0: no check, and auto means fp32.
    threshold: float | None = None
    check_margin: float | None = None
    # Feature scorers read many tiles per window (geoscreen.vision.blockscreen) where
    # that gives the same scores; False reads tile by tile (to compare the two).
    block_reads: bool = True


def check_model_fits(loaded: LoadedModelDir[Any], profile: Profile, scene: Scene) -> None:
    """Refuse a model trained for another profile, preprocessing, tile size or band layout,
    and a scene that does not fit the profile (:func:`~geoscreen.profiles.check_scene`).

    Call it for every scene before screening any, so that a run fails before writing.
    """
    check_model_profile(loaded, profile)
    check_scene(profile, scene)
    roles = band_roles(profile, scene)
    channels = loaded.card.channels
    if channels != len(roles):
        raise ConfigError(
            f"the model takes {channels} channels but this scene gives {len(roles)}",
            where=scene.uri,
            fix="Screen imagery with the bands the profile names.",
        )


def check_model_profile(loaded: LoadedModelDir[Any], profile: Profile) -> None:
    """Refuse a model trained for another profile, preprocessing or tile size (no scene
    needed: a scan checks this once, before it opens any scene)."""
    card = loaded.card
    if card.profile.name != profile.name:
        raise ConfigError(
            f"model was trained for profile {card.profile.name!r}, not {profile.name!r}",
            where=str(loaded.path),
            fix="Use the model trained for this profile, or train one with 'geoscreen train'.",
        )
    if card.preprocess != profile.preprocess:
        trained, given = card.preprocess.bands, profile.preprocess.bands
        if trained and trained != given:  # e.g. trained with --bands, screened without
            raise ConfigError(
                f"the model was trained on bands {','.join(trained)}, not "
                f"{','.join(given or []) or 'the profile default'}",
                where=str(loaded.path),
                fix=f"Give the bands it was trained on (--bands {','.join(trained)}), "
                "or retrain it for these.",
            )
        raise ConfigError(
            "the profile's preprocessing differs from the one the model was trained with",
            where=str(loaded.path),
            fix="Retrain the model after changing bands, indices or normalisation.",
        )
    trained_size = card.tiling.tile_size
    if trained_size != profile.tiling.tile_size:
        raise ConfigError(
            f"the model was trained on {trained_size} px tiles but the profile cuts "
            f"{profile.tiling.tile_size} px tiles",
            where=str(loaded.path),
            fix="Screen with the tile size the model was trained with, or retrain it.",
        )


def auto_workers(device: torch.device) -> int:
    """Tile-reading processes when not given: none on CPU, one on a GPU.

    On CPU the model keeps every core busy; one reader thread (``num_workers=0``,
    reading between batches, see :func:`read_in_thread`) costs less than a worker
    process, which adds a fork, a shared-memory copy per batch and one more busy
    process than there are cores (2 cores, 256 px tiles, mobilenet_v3_small: 0.72-0.77
    vs about 0.5 of model-only speed; resnet18 0.94-0.97 vs 0.90-0.96;
    benchmarks/screen.py).
    """
    return 0 if device.type == "cpu" else 1


def read_threads(device: torch.device, workers: int) -> int:
    """Threads that read each batch.

    On CPU with ``workers=0`` the model waits while a batch is read
    (:func:`read_in_thread`), so reading may use every core torch uses (at most 8):
    on 2 cores, 2 threads screened mobilenet_v3_small 9% faster than 1 (median of 6
    interleaved rounds). Otherwise one per reading process.
    """
    return min(torch.get_num_threads(), 8) if workers == 0 and device.type == "cpu" else 1


def runs_backbone(model: TileModel) -> bool:
    """Whether ``model`` runs a CNN backbone, the only part bf16 and int8 speed up."""
    return trunk_of(model) is not None


def screening_precision(
    model: TileModel, precision: str, device: torch.device, *, checked: bool
) -> Literal["fp32", "bf16", "int8"]:
    """The arithmetic :func:`score_grid` runs ``model`` in (``checked``: scores near the
    threshold are scored again in fp32). Feature scorers without deep features
    (spectral statistics, the per-pixel model) compute in fp32 whatever ``precision``
    says: their cost is not in matrix products, and the check covers backbones only. So
    does a similarity model (``fp32_only``), as ``geoscreen similar`` scores.
    ``int8`` (:mod:`geoscreen.vision.quantize`) is for ResNet trunks on a CPU; asked for
    elsewhere it is a ConfigError."""
    if not runs_backbone(model) or model.fp32_only:
        return "fp32"
    if precision == "int8":
        check_int8(model, device)
        return "int8"
    return pick_precision(precision, device, checked=checked)


def model_for_inference(model: TileModel, device: torch.device) -> TileModel:
    """An eval-mode copy on ``device``, batch normalisation folded into the convolutions
    (:mod:`geoscreen.vision.fold`: EfficientNet-Lite0 1.27x faster on a CPU core), in
    channels_last (faster convolutions on CPU and GPU); ``model`` is left as it is."""
    folded: TileModel = folded_for_inference(model)  # type: ignore[assignment]
    return folded.to(device=device, memory_format=torch.channels_last)  # type: ignore[call-overload]


def screen_scene(
    model: TileModel,
    profile: Profile,
    scene: Scene,
    opts: ScreenOptions | None = None,
    aoi: BaseGeometry | None = None,
    meta: dict[str, Any] | None = None,
) -> ScoreMap:
    """Score every (valid, in-AOI) tile of ``scene``; returns a :class:`ScoreMap`."""
    opts = opts or ScreenOptions()
    if opts.threshold is None:
        opts = replace(opts, threshold=float(profile.threshold))
    for warning in check_scene(profile, scene):
        log.warning(warning)
    device, grid, preprocessor = prepare_scene(
        profile, scene, opts.device, aoi, drop_empty=opts.drop_empty, progress=opts.progress
    )
    return score_grid(model, grid, preprocessor, opts, device, meta)


def new_run(profile: Profile, model_sha256: str, **extra: Any) -> dict[str, Any]:
    """Metadata of a new screening run: profile, its version, model hash, a fresh run id."""
    return {
        "profile": profile.name,
        "profile_version": profile.version,
        "model_sha256": model_sha256,
        "run_id": uuid.uuid4().hex[:12],
        **extra,
    }


def prepare_scene(
    profile: Profile,
    scene: Scene,
    device: str,
    aoi: BaseGeometry | None = None,
    *,
    drop_empty: bool = True,
    progress: bool = False,
) -> tuple[torch.device, TileGrid, ScenePreprocessor]:
    """What running a model over ``scene`` needs: the device (glibc malloc tuned on CPU),
    the profile's tile grid (:func:`profile_grid`, without empty tiles) and the
    preprocessor."""
    picked = pick_device(device)
    if picked.type == "cpu":
        tune_malloc()
    grid = profile_grid(profile, scene, aoi)
    if drop_empty:
        grid = grid.drop_empty(progress=progress)
    return picked, grid, ScenePreprocessor.build(profile.preprocess, scene)


def profile_grid(profile: Profile, scene: Scene, aoi: BaseGeometry | None = None) -> TileGrid:
    """The profile's tile grid of ``scene``: tiles meeting the profile's AOI (and ``aoi``),
    none wholly inside its exclusion zones. A profile with either needs a georeferenced
    scene (an area cannot be placed on pixels)."""
    grid = TileGrid(scene, profile.tiling.tile_size, profile.tiling.overlap)
    own = profile.aoi_path()
    for area in (load_aoi(own, scene.crs) if own else None, aoi):
        if area is not None:
            grid = grid.within(area)
    excluded = load_areas(profile.exclusion_paths(), scene.crs)
    return grid.outside(excluded) if excluded is not None else grid


@torch.inference_mode()
def score_grid(
    model: TileModel,
    grid: TileGrid,
    preprocessor: ScenePreprocessor,
    opts: ScreenOptions,
    device: torch.device,
    meta: dict[str, Any] | None = None,
) -> ScoreMap:
    """The inference loop over a prepared grid (the part benchmarks time).

    Feature scorers on spectral features read the grid block by block instead
    (:mod:`geoscreen.vision.blockscreen`, same scores; ``num_workers`` and
    ``batch_size`` do not apply there).
    """
    n = len(grid)
    scores = np.zeros(n, dtype=np.float32)
    valid = np.zeros(n, dtype=np.float32)
    embeddings: np.ndarray | None = None
    if n == 0:
        return ScoreMap(grid, scores, valid, None, dict(meta or {}))
    net = model_for_inference(model, device)
    if opts.block_reads and block_path_applies(net, grid):  # no backbone: fp32 (below)
        scores, valid, embeddings = score_blocks(
            net, grid, preprocessor, device, embeddings=opts.embeddings, progress=opts.progress
        )
        return ScoreMap(grid, scores, valid, embeddings, dict(meta or {}))
    workers = opts.num_workers if opts.num_workers is not None else auto_workers(device)
    dataset = TileDataset(grid, preprocessor, read_threads=read_threads(device, workers))
    loader = DataLoader(
        dataset,
        collate_fn=collate,
        batch_size=opts.batch_size,
        shuffle=False,
        num_workers=workers,
        persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None,
        pin_memory=device.type == "cuda",
    )
    with (
        ExitStack() as stack,
        tqdm(total=n, desc="screening", unit="tile", disable=not opts.progress) as bar,
    ):
        stack.callback(dataset.close)
        batches: Iterable[dict[str, Any]] = loader
        if workers == 0:  # closed first: the reader thread stops before the handle
            ahead = 0 if device.type == "cpu" else 2
            batches = stack.enter_context(closing(read_in_thread(loader, ahead)))
        checked = opts.threshold is not None and opts.check_margin != 0
        arithmetic = screening_precision(net, opts.precision, device, checked=checked)
        scorer = net  # what scores the tiles; net, in fp32, scores again those near
        if arithmetic == "bf16":
            stack.enter_context(bf16_autocast(device))  # once: weights cast once
        elif arithmetic == "int8":
            scorer = int8_model(net, calibration_tiles(dataset))
        margin = (
            CHECK_MARGINS.get(arithmetic, 0.0) if opts.check_margin is None else opts.check_margin
        )
        rechecked = 0
        for batch in batches:
            index = batch["index"].numpy()
            image = batch["image"].to(device, non_blocking=True)
            image = image.contiguous(memory_format=torch.channels_last)
            prob, feats = scorer.score_and_embed(image)
            batch_scores = prob.float().cpu().numpy()
            if arithmetic != "fp32" and checked:
                rechecked += fp32_near(net, image, batch_scores, opts, device, margin)
            scores[index] = batch_scores
            mask = batch["mask"].numpy().reshape(len(index), -1)
            valid[index] = np.count_nonzero(mask, axis=1) / mask.shape[1]  # 15x torch's mean
            if opts.embeddings:
                if embeddings is None:
                    embeddings = np.zeros((n, feats.shape[1]), dtype=np.float16)
                embeddings[index] = feats.float().cpu().numpy().astype(np.float16)
            bar.update(len(index))
    if arithmetic != "fp32" and checked:
        log.info("%s: %d of %d tiles scored near the threshold, scored again in fp32",
                 arithmetic, rechecked, n)  # fmt: skip
    return ScoreMap(grid, scores, valid, embeddings, dict(meta or {}))


def calibration_tiles(dataset: TileDataset, count: int = CALIBRATION_TILES) -> torch.Tensor:
    """Up to ``count`` preprocessed tiles spread evenly over the grid (its order runs
    across the scene): what int8's activation ranges are estimated from."""
    picks = np.unique(np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round())
    batch = collate(dataset.__getitems__([int(i) for i in picks]))
    image: torch.Tensor = batch["image"]
    return image.contiguous(memory_format=torch.channels_last)


def fp32_near(
    net: TileModel, image: torch.Tensor, scores: np.ndarray, opts: ScreenOptions,
    device: torch.device, margin: float,
) -> int:  # fmt: skip
    """Score again in fp32, in place, the tiles of ``image`` whose (bf16 or int8)
    ``scores`` lie within ``margin`` of ``opts.threshold``; returns how many. ``net`` is
    the fp32 model (for bf16, the same one, run here without autocast).

    bf16 and int8 moved a score by at most about half their margins (:data:`CHECK_MARGINS`)
    on the real NEON cases, so a tile outside the band is on the side of the threshold
    fp32 puts it, and one inside gets fp32's score. Embeddings stay those of the faster
    arithmetic (they rank, they decide nothing).
    """
    assert opts.threshold is not None
    near = np.flatnonzero(np.abs(scores - opts.threshold) <= margin)
    if near.size:
        with fp32_within(device):
            again, _ = net.score_and_embed(image[torch.from_numpy(near).to(image.device)])
        scores[near] = again.float().cpu().numpy()
    return int(near.size)


def read_in_thread(items: Iterable[T], ahead: int = 0) -> Generator[T, None, None]:
    """``items``, each produced by one background thread, up to ``ahead`` in advance.

    Screening with ``num_workers=0`` reads tiles this way. With ``ahead=0`` (CPU) the
    thread reads a batch when it is asked for, while the model waits, then the model
    runs while the thread waits: each phase has every core. Reading ahead instead
    (overlapping the model) oversubscribes the cores the model's threads run on, and
    they stall on each other's barriers: on 2 cores, mobilenet_v3_small screened at
    0.68-0.74 of model-only speed read ahead, 0.77-0.81 in phases (resnet18 0.97-1.02
    either way; ``benchmarks/screen.py``). A GPU computes asynchronously, so there the
    thread reads ahead. Either way only that thread calls the dataset (a raster handle
    is never used concurrently), and its allocations, GDAL's long-lived block
    cache among them, stay in its own malloc arena: in the model's heap they fragment it
    between the model's large transient buffers, and peak memory grew with scene size.
    Closing the generator waits for a read in progress and stops.
    """
    source = iter(items)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix=READER_THREAD) as pool:
        pending: deque[Future[Any]] = deque()
        try:
            while True:
                while len(pending) <= ahead:
                    pending.append(pool.submit(next, source, _END))
                item = pending.popleft().result()
                if item is _END:
                    return
                yield item
        finally:
            for future in pending:
                future.cancel()
