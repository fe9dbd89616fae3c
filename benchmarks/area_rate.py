"""Screening area rate: km² per hour of 10 m imagery, fp32 vs bf16 (and int8), per model.

Usage::

    python benchmarks/area_rate.py [--size 8192] [--models resnet18 efficientnet_lite0]
        [--model-dir DIR --profile YAML] [--tile-reads] [--force-bf16] [--workdir DIR]
        [--threads N]

On a synthetic 6-band uint16 scene at 10 m (``--size`` px square, at least 8,192 for
the issue; cached in ``--workdir``), screens the whole scene end to end with
``screen_scene`` (grid, empty-tile check, reading, preprocessing, model; 256 px tiles,
no overlap, batch 32, the CPU defaults) and reports km²/h for each model in fp32 and,
where the CPU computes bf16 in hardware (AMX or AVX512-BF16), in bf16, with the ratio
bf16/fp32 from the same run. Without that hardware bf16 is emulated and slower, and
``--precision auto`` picks fp32; ``--force-bf16`` measures it anyway. ResNets are also
screened in int8 (``--precision int8``: :mod:`geoscreen.vision.quantize`; its calibration
on 16 of the scene's tiles counted in the time), with int8/fp32 and int8/bf16. The
model-only rate (random batches through the same inference path) is shown beside it.

Models: untrained ``resnet18`` and ``efficientnet_lite0`` (random weights: speed does
not depend on them); the spectral-context learner (``spectral_gbm``: the features of
:mod:`geoscreen.vision.tilefeatures` and gradient-boosted trees of the shipped size,
:data:`~geoscreen.vision.learners.GBM_PARAMS`) on the CNNs' 256 px tiles
(``spectral_gbm``) and on ``open_water_s2``'s 16 px tiles overlapping by 4
(``spectral_gbm_16px``), its trees fitted to random labels on 400 tiles of the scene
(**speed only**: the trees' values do not change the work, their size does); and any
trained model folder with ``--model-dir`` and its ``--profile`` (its own bands, tiles
and preprocessing, on a scene with that many bands). Feature scorers screen block by
block (:mod:`geoscreen.vision.blockscreen`); ``--tile-reads`` also measures them read
tile by tile, the general path (the "before").
A new learner plugs in through :data:`LEARNERS`: a function from the scene to the
model and the profile it screens with (any :class:`TileModel`); :func:`measure` times
any :data:`Screener`, a function that screens a scene in a precision and returns the
number of tiles it scored.

Issue target: >= 2 million km²/h for a resnet18-class model on 2 CPU cores. Prints
numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table

from geoscreen.imagery.dataset import TileDataset, collate
from geoscreen.imagery.preprocess import NormalizationConfig, PreprocessConfig, ScenePreprocessor
from geoscreen.imagery.scene import Scene, open_scene
from geoscreen.imagery.tiling import TileGrid
from geoscreen.profiles import ModelSpec, Profile, TilingConfig, load_profile
from geoscreen.samples import make_synthetic_scene
from geoscreen.vision.backbones import BackboneSpec, build_backbone, input_stats
from geoscreen.vision.classifier import TileClassifier, TileModel, load_model
from geoscreen.vision.infer import ScreenOptions, model_for_inference, screen_scene
from geoscreen.vision.learners import GBM_PARAMS
from geoscreen.vision.quantize import CALIBRATION_TILES, cpu_has_fast_int8, int8_model, int8_refusal
from geoscreen.vision.runtime import autocast, cpu_has_fast_bf16, tune_malloc
from geoscreen.vision.scorer import FeatureScorer
from geoscreen.vision.tabular import PlattCalibrator, TreeEnsembleHead
from geoscreen.vision.tilefeatures import SpectralContext

TILE = 256
BATCH = 32
BANDS = 6
RESOLUTION_M = 10.0
TARGET_KM2_H = 2_000_000
CPU = torch.device("cpu")

Screener = Callable[[Scene, str], int]
"""Screen the whole ``scene`` at a precision (``fp32``/``bf16``/``int8``); the tiles scored."""


@dataclass(frozen=True)
class Rate:
    """One measured run."""

    tiles: int
    seconds: float
    km2: float

    @property
    def km2_per_h(self) -> float:
        return self.km2 / self.seconds * 3600 if self.seconds > 0 else float("inf")


def bench_profile(backbone: str) -> Profile:
    """256 px tiles, no overlap, all bands, dtype_range inputs, untrained ``backbone``."""
    return Profile(
        name=f"area_{backbone}",
        version="0.0.0",
        description="Benchmark profile: random weights, measures speed only.",
        tiling=TilingConfig(tile_size=TILE, overlap=0),
        preprocess=PreprocessConfig(normalization=NormalizationConfig(method="dtype_range")),
        model=ModelSpec(backbone=backbone),
    )


def bench_model(backbone: str, bands: int = BANDS) -> TileClassifier:
    """``backbone`` with random weights and ``bands`` input channels."""
    torch.manual_seed(0)
    spec = BackboneSpec(backbone, bands, band_roles=(None,) * bands)
    mean, std = input_stats(spec)
    return TileClassifier(build_backbone(spec), mean, std).eval()


def classifier_screener(model: TileModel, profile: Profile, block_reads: bool = True) -> Screener:
    """A :data:`Screener` running ``model`` through ``screen_scene`` with CPU defaults
    (``block_reads=False``: feature scorers read tile by tile too)."""

    def run(scene: Scene, precision: str) -> int:
        # check_margin 0: bf16 or int8 throughout (int8's calibration on the scene's tiles
        # inside the time). Random weights put every score near 0.5, where
        # the fp32 check of `auto` would score every tile again; its cost on trained
        # models is measured by precision.py.
        opts = ScreenOptions(batch_size=BATCH, device="cpu", num_workers=0, precision=precision,
                             block_reads=block_reads, check_margin=0.0)  # fmt: skip
        return len(screen_scene(model, profile, scene, opts).scores)

    return run


def spectral_profile(tile: int, overlap: int) -> Profile:
    """``open_water_s2``'s preprocessing (2-98 percentile stretch) on ``tile`` px tiles."""
    return Profile(
        name=f"area_spectral_{tile}",
        version="0.0.0",
        description="Benchmark profile: trees fitted to random labels, measures speed only.",
        tiling=TilingConfig(tile_size=tile, overlap=overlap),
        preprocess=PreprocessConfig(normalization=NormalizationConfig(method="percentile")),
        model=ModelSpec(backbone="efficientnet_lite0"),
    )


def spectral_gbm(scene: Scene, profile: Profile, chips: int = 400, seed: int = 0) -> FeatureScorer:
    """A ``spectral_gbm`` feature scorer for ``scene``: spectral context (with relative
    channels, as training adds them for several bands) and trees fitted with the shipped
    :data:`GBM_PARAMS` to random labels of ``chips`` random tiles. Speed only."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    tile = profile.tiling.tile_size
    spectral = SpectralContext(scene.count, tile, relative=scene.count > 1)
    grid = TileGrid(scene, tile, profile.tiling.overlap)
    rng = np.random.default_rng(seed)
    picked = sorted(int(i) for i in rng.choice(len(grid), min(chips, len(grid)), replace=False))
    dataset = TileDataset(grid, ScenePreprocessor.build(profile.preprocess, scene))
    parts = []
    try:
        with torch.inference_mode():
            for start in range(0, len(picked), BATCH):
                batch = collate(dataset.__getitems__(picked[start : start + BATCH]))
                parts.append(spectral(batch["image"]).numpy())
    finally:
        dataset.close()
    features = np.concatenate(parts)
    labels = rng.integers(0, 2, len(features))
    fitted = HistGradientBoostingClassifier(**GBM_PARAMS, random_state=seed).fit(features, labels)
    head = TreeEnsembleHead.from_sklearn(fitted)
    return FeatureScorer(head, PlattCalibrator(), spectral=spectral).eval()


Learner = tuple[TileModel, Profile]


def spectral(tile: int, overlap: int) -> Callable[[Scene], Learner]:
    def make(scene: Scene) -> Learner:
        profile = spectral_profile(tile, overlap)
        return spectral_gbm(scene, profile), profile

    return make


def untrained(backbone: str) -> Callable[[Scene], Learner]:
    def make(scene: Scene) -> Learner:
        return bench_model(backbone, scene.count), bench_profile(backbone)

    return make


LEARNERS: dict[str, Callable[[Scene], Learner]] = {
    "resnet18": untrained("resnet18"),
    "efficientnet_lite0": untrained("efficientnet_lite0"),
    "spectral_gbm": spectral(TILE, 0),
    "spectral_gbm_16px": spectral(16, 4),
}
"""Learners measured by name: each takes the scene (its bands; a feature scorer's trees
are fitted on its tiles) and gives the model and the profile it screens with."""


def measure(screener: Screener, scene: Scene, precision: str) -> Rate:
    """Screen ``scene`` once with ``screener``: tiles, wall seconds, scene area in km²."""
    start = time.perf_counter()
    tiles = screener(scene, precision)
    seconds = time.perf_counter() - start
    xres, yres = scene.resolution
    return Rate(tiles, seconds, scene.width * scene.height * abs(xres * yres) / 1e6)


def model_only(backbone: str, bands: int, precision: str, n_tiles: int) -> Rate:
    """Random batches through screening's CPU model path (no reading): the ceiling."""
    tune_malloc()
    net = model_for_inference(bench_model(backbone, bands), CPU)
    batch = torch.rand(BATCH, bands, TILE, TILE).contiguous(memory_format=torch.channels_last)
    if precision == "int8":  # calibrated on random tiles: speed only (not in the time)
        net = int8_model(net, torch.rand(CALIBRATION_TILES, bands, TILE, TILE))
    with torch.inference_mode(), autocast("fp32" if precision == "int8" else precision, CPU):
        net.score_and_embed(batch[:4])  # warm-up
        start, done = time.perf_counter(), 0
        while done < n_tiles:
            n = min(BATCH, n_tiles - done)
            prob, _ = net.score_and_embed(batch[:n])
            prob.float().numpy()
            done += n
        seconds = time.perf_counter() - start
    return Rate(done, seconds, done * (TILE * RESOLUTION_M / 1000) ** 2)


def scene_file(workdir: Path, size: int, bands: int) -> Path:
    """The cached synthetic ``bands``-band uint16 10 m scene of ``size``² px."""
    path = workdir / f"area_{size}_u16x{bands}_10m_deflate_b512.tif"
    if path.exists():
        try:
            with rasterio.open(path) as src:
                if (src.width, src.height, src.count) == (size, size, bands):
                    return path
        except rasterio.errors.RasterioIOError:
            pass
    print(f"writing {path} ...", flush=True)
    tmp = path.with_suffix(".partial.tif")
    make_synthetic_scene(
        tmp, size, size, count=bands, dtype="uint16", crs="EPSG:32643",
        resolution=RESOLUTION_M, origin=(300_000.0, 3_300_000.0), blocksize=512,
        compress="deflate",
    )  # fmt: skip
    tmp.replace(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8_192, help="scene side in px (10 m)")
    parser.add_argument("--models", nargs="*", default=list(LEARNERS),
                        choices=sorted(LEARNERS))  # fmt: skip
    parser.add_argument("--model-dir", type=Path, default=None, help="a trained model folder")
    parser.add_argument("--profile", type=Path, default=None, help="its profile (YAML)")
    parser.add_argument("--bands", type=int, default=None, help="scene bands (default 6)")
    parser.add_argument(
        "--tile-reads",
        action="store_true",
        help="also screen feature scorers tile by tile (the general path)",
    )
    parser.add_argument("--force-bf16", action="store_true",
                        help="measure bf16 also where the CPU only emulates it")  # fmt: skip
    parser.add_argument("--model-only-tiles", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--workdir", type=Path, default=None, help="cache for the scene")
    args = parser.parse_args()
    if (args.model_dir is None) != (args.profile is None):
        parser.error("--model-dir and --profile go together")
    if args.threads:
        torch.set_num_threads(args.threads)
    # The "bf16 is emulated here" warning once, in the summary, not once per run.
    logging.getLogger("geoscreen.vision.runtime").setLevel(logging.ERROR)
    workdir = args.workdir or Path(os.environ.get("TMPDIR", "/tmp")) / "geoscreen-bench"
    workdir.mkdir(parents=True, exist_ok=True)
    bands = args.bands or BANDS
    scene = open_scene(scene_file(workdir, args.size, bands))
    warm = open_scene(scene_file(workdir, 512, bands))
    fast = cpu_has_fast_bf16()
    precisions = ["fp32", "bf16"] if fast or args.force_bf16 else ["fp32"]
    learners = {name: LEARNERS[name](scene) for name in args.models}
    if args.model_dir is not None:
        loaded = load_model(args.model_dir).model
        learners[f"model {args.model_dir.name}"] = (loaded, load_profile(args.profile))
    screeners: dict[str, Screener] = {}
    for name, (model, profile) in learners.items():
        screeners[name] = classifier_screener(model, profile)
        # --tile-reads: the same fitted scorer also read tile by tile (the general path).
        if args.tile_reads and isinstance(model, FeatureScorer):
            screeners[f"{name}, tile reads"] = classifier_screener(model, profile, False)
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads, "
        f"{torch.backends.cpu.get_cpu_capability()}); bf16 hardware (AMX/AVX512-BF16): "
        f"{'yes' if fast else 'no'}; int8 dot products (VNNI): "
        f"{'yes' if cpu_has_fast_int8() else 'no'}"
    )
    km2 = scene.width * scene.height * RESOLUTION_M**2 / 1e6
    print(
        f"scene {args.size:,}^2 px x {bands} bands uint16 at 10 m ({km2:,.0f} km²), "
        f"{TILE} px tiles (spectral_gbm_16px: 16 px, overlap 4), batch {BATCH}, screen_scene "
        "end to end, one run each; spectral_gbm*: trees fitted to random labels, speed only\n"
    )
    rows: list[list[object]] = []
    ratios: list[str] = []
    for name, screener in screeners.items():
        measured: dict[str, Rate] = {}
        model = learners[name.removesuffix(", tile reads")][0]
        int8 = ["int8"] if int8_refusal(model, CPU) is None else []
        for precision in precisions + int8:
            screener(warm, precision)  # warm-up: kernel selection, allocator, caches
            measured[precision] = rate = measure(screener, scene, precision)
            ceiling = ""
            if name in ("resnet18", "efficientnet_lite0"):
                alone = model_only(name, bands, precision, args.model_only_tiles)
                ceiling = f"{alone.km2_per_h:,.0f}"
            rows.append([name, precision, rate.tiles, f"{rate.seconds:.1f}",
                         f"{rate.km2_per_h:,.0f}", ceiling])  # fmt: skip
        if "bf16" in measured:
            ratio = measured["bf16"].km2_per_h / measured["fp32"].km2_per_h
            note = "" if fast else " (bf16 emulated: no bf16 hardware)"
            ratios.append(f"{name}: bf16/fp32 {ratio:.2f}{note}")
        else:
            ratios.append(
                f"{name}: bf16 not measured: this CPU has no AMX/AVX512-BF16, so bf16 is "
                "emulated and --precision auto uses fp32 (--force-bf16 measures it anyway)"
            )
        if "int8" in measured:
            ratio = measured["int8"].km2_per_h / measured["fp32"].km2_per_h
            note = "" if cpu_has_fast_int8() else " (no VNNI on this CPU)"
            over_bf16 = (
                f", int8/bf16 {measured['int8'].km2_per_h / measured['bf16'].km2_per_h:.2f}"
                if "bf16" in measured else ""
            )  # fmt: skip
            ratios.append(f"{name}: int8/fp32 {ratio:.2f}{over_bf16}{note}")
    print_table(["model", "precision", "tiles", "seconds", "km²/h", "model-only km²/h"], rows)
    print()
    for line in ratios:
        print(line)
    by_name = {row[0]: row for row in rows if row[1] == "fp32"}
    if "resnet18" in by_name:
        base = float(str(by_name["resnet18"][4]).replace(",", ""))
        for name, row in by_name.items():
            if name != "resnet18":
                km2_h = float(str(row[4]).replace(",", ""))
                print(f"{name} / resnet18 (fp32, this run): {km2_h / base:.2f}")
    print(f"target: >= {TARGET_KM2_H:,} km²/h for a resnet18-class model on 2 CPU cores")


if __name__ == "__main__":
    main()
