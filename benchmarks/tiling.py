"""Tile reading throughput and memory: geoscreen TileDataset vs plain rasterio vs TorchGeo.

Usage::

    python benchmarks/tiling.py [--size 16384] [--workdir DIR] [--quick]

Builds (once, cached in ``--workdir``) a synthetic 3-band uint8 DEFLATE GeoTIFF
tiled 512, then reports 256 x 256 tiles per second for

  (a) a plain rasterio windowed-read loop (uint8, no preprocessing),
  (b) geoscreen TileDataset (dtype_range preprocessing) through a DataLoader,
      num_workers 0 and 2,
  (c) TorchGeo RasterDataset + GridGeoSampler (if torchgeo imports),

and the peak RSS of iterating every tile of a small and a large scene through
TileDataset + DataLoader(num_workers=0), each in a fresh process. Prints numbers
and ratios; asserts nothing. Issue targets: b/a >= 0.8 (single process),
b/c >= 5, RSS(large) <= 1.2 x RSS(small).
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
from collections.abc import Callable
from pathlib import Path

import rasterio
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import peak_rss_mib, print_table, rate

from geoscreen.imagery.dataset import TileDataset, collate
from geoscreen.imagery.preprocess import (
    NormalizationConfig,
    PreprocessConfig,
    ScenePreprocessor,
)
from geoscreen.imagery.scene import open_scene
from geoscreen.imagery.tiling import TileGrid
from geoscreen.samples import make_synthetic_scene

TILE = 256


def scene_file(workdir: Path, size: int) -> Path:
    """The cached synthetic scene of ``size`` x ``size`` pixels (written once)."""
    path = workdir / f"synthetic_{size}_u8x3_deflate_b512.tif"
    if path.exists():
        try:
            with rasterio.open(path) as src:
                if src.width == size and src.height == size:
                    return path
        except rasterio.errors.RasterioIOError:
            pass
    print(f"writing {path} ...", flush=True)
    tmp = path.with_suffix(".partial.tif")
    make_synthetic_scene(tmp, size, size, count=3, dtype="uint8", blocksize=512, compress="deflate")
    tmp.replace(path)
    return path


def tile_dataset(path: Path) -> TileDataset:
    scene = open_scene(path)
    config = PreprocessConfig(normalization=NormalizationConfig(method="dtype_range"))
    return TileDataset(TileGrid(scene, TILE), ScenePreprocessor.build(config, scene))


def plain_rasterio(path: Path, limit: int | None) -> int:
    grid = TileGrid(open_scene(path), TILE)
    n = min(len(grid), limit or len(grid))
    with rasterio.open(path) as src:
        for i in range(n):
            src.read(window=grid[i].read_window)
    return n


def geoscreen_loader(path: Path, workers: int, batch_size: int) -> int:
    dataset = tile_dataset(path)
    loader = DataLoader(
        dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate,
        persistent_workers=False,
    )  # fmt: skip
    n = 0
    for batch in loader:
        n += int(batch["image"].shape[0])
    dataset.close()
    return n


def torchgeo_loader(path: Path, batch_size: int, limit: int | None) -> int:
    from torchgeo.datasets import RasterDataset, stack_samples
    from torchgeo.samplers import GridGeoSampler

    dataset = RasterDataset(paths=[str(path)])
    sampler = GridGeoSampler(dataset, size=TILE, stride=TILE)
    loader = DataLoader(dataset, sampler=sampler, batch_size=batch_size, collate_fn=stack_samples)
    n = 0
    for batch in loader:
        n += int(batch["image"].shape[0])
        if limit is not None and n >= limit:
            break
    return n


def rss_child(path: Path) -> None:
    """Iterate every tile of ``path`` (num_workers=0) and print JSON with peak RSS."""
    dataset = tile_dataset(path)
    before = peak_rss_mib()  # imports (torch dominates) and scene setup
    n = 0
    for batch in DataLoader(dataset, batch_size=32, collate_fn=collate):
        n += int(batch["image"].shape[0])
    dataset.close()
    print(json.dumps({"tiles": n, "peak_rss_mib": peak_rss_mib(), "before_mib": before}))


def measure_rss(path: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--rss-child", str(path)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=16_384, help="throughput scene side, px")
    parser.add_argument("--rss-sizes", type=int, nargs=2, default=(4_096, 32_768))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    parser.add_argument(
        "--torchgeo-tiles",
        type=int,
        default=1_024,
        help="tiles TorchGeo reads (rate on this prefix)",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="cache for generated scenes")
    parser.add_argument("--quick", action="store_true", help="4,096^2 throughput, 2,048/8,192 RSS")
    parser.add_argument("--skip-rss", action="store_true", help="throughput only")
    parser.add_argument("--skip-throughput", action="store_true", help="peak RSS only")
    parser.add_argument("--rss-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child)
        return
    if args.quick:
        args.size, args.rss_sizes = 4_096, (2_048, 8_192)
    workdir = args.workdir or Path(tempfile.gettempdir()) / "geoscreen-bench"
    workdir.mkdir(parents=True, exist_ok=True)
    if not args.skip_throughput:
        throughput(args, workdir)
    if not args.skip_rss:
        peak_rss(args.rss_sizes, workdir)


def throughput(args: argparse.Namespace, workdir: Path) -> None:
    """Tiles per second of (a), (b) and (c) on one scene."""
    path = scene_file(workdir, args.size)
    n_tiles = len(TileGrid(open_scene(path), TILE))
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, rasterio {rasterio.__version__} "
          f"(GDAL {rasterio.__gdal_version__})")  # fmt: skip
    print(f"scene {args.size:,}^2 x 3 uint8 DEFLATE, blocks 512; {n_tiles:,} tiles of {TILE}^2; "
          f"batch size {args.batch_size}\n")  # fmt: skip

    methods: dict[str, Callable[[], int]] = {
        "(a) rasterio windowed reads": lambda: plain_rasterio(path, None),
        "(b) TileDataset + DataLoader, 0 workers": lambda: geoscreen_loader(
            path, 0, args.batch_size
        ),
        "(b) TileDataset + DataLoader, 2 workers": lambda: geoscreen_loader(
            path, 2, args.batch_size
        ),
    }
    # Interleaved rounds, best rate of each: robust to other load on a shared machine.
    rates: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(args.rounds):
        for name, run in methods.items():
            rates[name].append(rate(run)[1])
    best = {name: max(values) for name, values in rates.items()}
    rows: list[list[object]] = [
        [name, n_tiles, best[name], statistics.median(rates[name])] for name in methods
    ]
    try:
        import torchgeo  # noqa: F401
    except ImportError:
        rate_c = None
        rows.append(["(c) TorchGeo RasterDataset + GridGeoSampler", "skipped", "-", "-"])
    else:
        n_c, rate_c = rate(lambda: torchgeo_loader(path, args.batch_size, args.torchgeo_tiles))
        rows.append(["(c) TorchGeo RasterDataset + GridGeoSampler", n_c, rate_c, "(1 round)"])
    print_table(["reader", "tiles", f"tiles/s best of {args.rounds}", "median"], rows)
    rate_a, names = best["(a) rasterio windowed reads"], list(methods)
    b0, b2 = best[names[1]], best[names[2]]
    print()
    print(f"b/a (0 workers): {b0 / rate_a:.2f}   (target >= 0.8)")
    print(f"b/a (2 workers): {b2 / rate_a:.2f}")
    if rate_c:
        print(f"b/c (0 workers): {b0 / rate_c:.1f}   (target >= 5)")
        print(f"b/c (2 workers): {b2 / rate_c:.1f}")
    else:
        print("b/c: skipped (pip install 'geoscreen[torchgeo]' to measure)")


def peak_rss(sizes: tuple[int, int], workdir: Path) -> None:
    """Peak RSS of iterating every tile of a small and a large scene, fresh process each."""
    small, large = sizes
    results = {size: measure_rss(scene_file(workdir, size)) for size in (small, large)}
    print()
    print_table(
        ["all tiles, num_workers=0", "tiles", "peak RSS MiB", "before reading", "added"],
        [
            [f"{size:,}^2 scene", int(r["tiles"]), r["peak_rss_mib"], r["before_mib"],
             r["peak_rss_mib"] - r["before_mib"]]
            for size, r in results.items()
        ],
    )  # fmt: skip
    ratio = results[large]["peak_rss_mib"] / results[small]["peak_rss_mib"]
    added = [results[s]["peak_rss_mib"] - results[s]["before_mib"] for s in (small, large)]
    print(f"\nRSS({large:,}^2) / RSS({small:,}^2): {ratio:.2f}   (target <= 1.2)")
    print(f"added by reading, {large:,}^2 / {small:,}^2: {added[1] / max(added[0], 1e-9):.2f}")


if __name__ == "__main__":
    main()
