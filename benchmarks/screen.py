"""Screening throughput and memory: the model alone vs end-to-end ``screen_scene``.

Usage::

    python benchmarks/screen.py [--size 8192] [--workdir DIR] [--quick]

On a synthetic 3-band uint8 scene (cached in ``--workdir``), for resnet18 and
mobilenet_v3_small (random init; a profile with 256 px tiles, no overlap,
dtype_range normalisation), reports tiles per second of

  (m) the model alone: random (32, 3, 256, 256) batches through the same inference
      path as screening (``model_for_inference``: eval, channels_last; then
      ``score_and_embed`` under ``torch.inference_mode``),
  (e) end-to-end ``screen_scene`` (grid, empty-tile check, reading, preprocessing,
      model), num_workers 0 (one reading thread, reading between model batches:
      the CPU default) and 1 (a reading process, reading ahead),

and e/m, with the CPU time per tile of each (worker processes included; much less
sensitive to other load on a shared machine than wall time). Then the peak RSS
(VmHWM) of screening a small and a large scene, each in a fresh process (num_workers
0: one process holds everything; 1: the main process), and the wall time of
``geoscreen train`` for the tree-crown profile on the CPU. Prints numbers and
ratios; asserts nothing. Issue targets on CPU: e/m >= 0.9 (resnet18), >= 0.7
(mobilenet_v3_small); RSS independent of scene size; training < 2 min.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import rasterio
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import peak_rss_mib, print_table, rate
from tiling import scene_file

from geoscreen.imagery.preprocess import NormalizationConfig, PreprocessConfig
from geoscreen.imagery.scene import Scene, open_scene
from geoscreen.profiles import ModelSpec, Profile, TilingConfig
from geoscreen.samples import sample_path
from geoscreen.vision.backbones import BackboneSpec, build_backbone, input_stats
from geoscreen.vision.classifier import TileClassifier
from geoscreen.vision.infer import ScreenOptions, model_for_inference, screen_scene
from geoscreen.vision.runtime import tune_malloc

TILE = 256
BATCH = 32
BACKBONES = ("resnet18", "mobilenet_v3_small")
TARGETS = {"resnet18": 0.9, "mobilenet_v3_small": 0.7}
MODEL_ONLY = "(m) model only"
E2E_0 = "(e) screen_scene, 0 workers (thread)"
E2E_1 = "(e) screen_scene, 1 worker"
ROOT = Path(__file__).resolve().parents[1]


def bench_profile(backbone: str) -> Profile:
    """256 px tiles, no overlap, dtype_range inputs, untrained ``backbone``."""
    return Profile(
        name=f"bench_{backbone}",
        version="0.0.0",
        description="Benchmark profile: random weights, measures speed only.",
        tiling=TilingConfig(tile_size=TILE, overlap=0),
        preprocess=PreprocessConfig(normalization=NormalizationConfig(method="dtype_range")),
        model=ModelSpec(backbone=backbone),
    )


def bench_model(backbone: str) -> TileClassifier:
    torch.manual_seed(0)
    spec = BackboneSpec(backbone, 3)
    mean, std = input_stats(spec)
    return TileClassifier(build_backbone(spec), mean, std).eval()


def model_only(model: TileClassifier, n_tiles: int) -> int:
    """Random batches through screening's CPU model path; returns tiles scored.

    The same calls as :func:`geoscreen.vision.infer.score_grid` makes around the
    model (allocator tuning, ``model_for_inference``, ``inference_mode``,
    ``score_and_embed``), minus reading and preprocessing.
    """
    tune_malloc()
    net = model_for_inference(model, torch.device("cpu"))
    batch = torch.rand(BATCH, 3, TILE, TILE).contiguous(memory_format=torch.channels_last)
    done = 0
    with torch.inference_mode():
        while done < n_tiles:
            n = min(BATCH, n_tiles - done)
            prob, _feats = net.score_and_embed(batch[:n])
            prob.float().cpu().numpy()
            done += n
    return done


def end_to_end(model: TileClassifier, profile: Profile, scene: Scene, workers: int) -> int:
    """``screen_scene`` on the whole scene; returns tiles scored."""
    # fp32 like model_only: the ratio measures the pipeline, not the arithmetic
    opts = ScreenOptions(batch_size=BATCH, device="cpu", num_workers=workers, precision="fp32")
    return len(screen_scene(model, profile, scene, opts).scores)


def measure(
    backbone: str, scene: Scene, n_tiles: int, rounds: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Tiles per second, and CPU milliseconds per tile, of each way of running ``backbone``.

    ``rounds`` interleaved rounds. CPU time (worker processes included) is much less
    sensitive than wall time to other load on a shared machine.
    """
    model, profile = bench_model(backbone), bench_profile(backbone)
    model_only(model, 2 * BATCH)  # warm-up: one-off kernel selection and allocations
    methods: dict[str, Callable[[], int]] = {
        MODEL_ONLY: partial(model_only, model, n_tiles),
        E2E_0: partial(end_to_end, model, profile, scene, 0),
        E2E_1: partial(end_to_end, model, profile, scene, 1),
    }
    rates: dict[str, list[float]] = {name: [] for name in methods}
    cpu: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(rounds):
        for name, run in methods.items():
            before = os.times()
            tiles, per_second = rate(run)
            after = os.times()
            used = sum(after[:4]) - sum(before[:4])  # user + system, this process and workers
            rates[name].append(per_second)
            cpu[name].append(1000 * used / tiles)
    return rates, cpu


def throughput(args: argparse.Namespace, workdir: Path) -> None:
    path = scene_file(workdir, args.size)
    scene = open_scene(path)
    n_tiles = (args.size // TILE) ** 2
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"rasterio {rasterio.__version__} (GDAL {rasterio.__gdal_version__})")  # fmt: skip
    print(f"scene {args.size:,}^2 x 3 uint8 DEFLATE, blocks 512; {n_tiles:,} tiles of "
          f"{TILE}^2; batch size {BATCH}; {args.rounds} interleaved rounds\n")  # fmt: skip
    rows: list[list[object]] = []
    ratios: list[str] = []
    for backbone in args.backbones:
        rates, cpu = measure(backbone, scene, n_tiles, args.rounds)
        best = {name: max(values) for name, values in rates.items()}
        least = {name: min(values) for name, values in cpu.items()}
        rows += [
            [f"{backbone} {name}", n_tiles, best[name], statistics.median(values),
             f"{least[name]:.2f}"]
            for name, values in rates.items()
        ]  # fmt: skip
        m, cpu_m = best[MODEL_ONLY], least[MODEL_ONLY]
        ratios.append(
            f"{backbone}: e/m {best[E2E_0] / m:.2f} (0 workers), {best[E2E_1] / m:.2f} "
            f"(1 worker)   (target >= {TARGETS[backbone]}); CPU time m/e "
            f"{cpu_m / least[E2E_0]:.2f} (0 workers), {cpu_m / least[E2E_1]:.2f} (1 worker)"
        )
    print_table(["run", "tiles", "tiles/s best", "median", "CPU ms/tile"], rows)
    print()
    for line in ratios:
        print(line)


def rss_child(path: Path, backbone: str, workers: int) -> None:
    """Screen every tile of ``path``, write the outputs; print JSON with this process's peak."""
    model, profile = bench_model(backbone), bench_profile(backbone)
    scene = open_scene(path)
    before = peak_rss_mib()
    opts = ScreenOptions(device="cpu", num_workers=workers, precision="fp32")
    scores = screen_scene(model, profile, scene, opts)
    with tempfile.TemporaryDirectory() as tmp:
        scores.write(tmp)
    print(json.dumps({"tiles": len(scores.scores), "peak_rss_mib": peak_rss_mib(),
                      "before_mib": before}))  # fmt: skip


def measure_rss(path: Path, backbone: str, workers: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--rss-child", str(path), "--rss-backbone", backbone,
         "--rss-workers", str(workers)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def peak_rss(sizes: tuple[int, int], workdir: Path, backbone: str) -> None:
    """Peak RSS of screening a small and a large scene, fresh process each.

    With 0 workers one process does everything; with 1 worker this is the main
    process (model and score map), the reading worker not included.
    """
    small, large = sizes
    rows: list[list[object]] = []
    ratios: list[str] = []
    for workers in (0, 1):
        results = {
            size: measure_rss(scene_file(workdir, size), backbone, workers)
            for size in (small, large)
        }
        rows += [
            [f"{size:,}^2 scene, {workers} workers", int(r["tiles"]), r["peak_rss_mib"],
             r["before_mib"], r["peak_rss_mib"] - r["before_mib"]]
            for size, r in results.items()
        ]  # fmt: skip
        peak = {size: r["peak_rss_mib"] for size, r in results.items()}
        added = {size: r["peak_rss_mib"] - r["before_mib"] for size, r in results.items()}
        ratios.append(
            f"{workers} workers: RSS({large:,}^2) / RSS({small:,}^2) "
            f"{peak[large] / peak[small]:.2f}, added by screening "
            f"{added[large] / max(added[small], 1e-9):.2f}"
        )
    print()
    print_table(
        [f"screen_scene ({backbone}), peak RSS", "tiles", "peak MiB", "before", "added"], rows
    )
    print()
    for line in ratios:
        print(line + "   (target: ~1, independent of scene size)")


def train_time() -> None:
    """Wall time of ``geoscreen train`` (tree-crown profile, CPU), imports included."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable, "-m", "geoscreen", "train",
            str(ROOT / "geoscreen/configs/tree_crowns_neon.yaml"),
            "--labels", str(sample_path("neon_osbs_labels")),
            "--imagery", str(sample_path("neon_osbs")),
            "--out", str(Path(tmp) / "model"), "--device", "cpu",
        ]  # fmt: skip
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        card = (Path(tmp) / "model" / "model.yaml").read_text() if done.returncode == 0 else ""
    status = "ok" if done.returncode == 0 else f"FAILED ({done.stderr.strip()[-200:]})"
    inner = next((line for line in card.splitlines() if line.strip().startswith("seconds:")), "")
    print(f"\ngeoscreen train tree_crowns_neon (CPU): {seconds:.1f} s wall, {status}; "
          f"card {inner.strip() or '-'}   (target < 120 s)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=8_192, help="throughput scene side, px")
    parser.add_argument("--rss-sizes", type=int, nargs=2, default=(4_096, 8_192))
    parser.add_argument("--rss-backbone", default="mobilenet_v3_small", choices=BACKBONES)
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (3)")
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=BACKBONES)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's, one per core)"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="cache for generated scenes")
    parser.add_argument(
        "--quick", action="store_true", help="4,096^2 throughput, 1 round unless --rounds"
    )
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--rss-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--rss-workers", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child, args.rss_backbone, args.rss_workers)
        return
    if args.quick:
        args.size = 4_096
    args.rounds = args.rounds or (1 if args.quick else 3)
    if args.threads:
        torch.set_num_threads(args.threads)
    workdir = args.workdir or Path(tempfile.gettempdir()) / "geoscreen-bench"
    workdir.mkdir(parents=True, exist_ok=True)
    if not args.skip_throughput:
        throughput(args, workdir)
    if not args.skip_rss:
        peak_rss(args.rss_sizes, workdir, args.rss_backbone)
    if not args.skip_train:
        train_time()


if __name__ == "__main__":
    main()
