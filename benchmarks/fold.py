"""Batch normalisation folded into the convolutions: model-only speed, plain against folded.

Usage::

    python benchmarks/fold.py [--threads 1] [--rounds 2]

Untrained resnet18 and EfficientNet-Lite0 on random (32, 6, 256, 256) batches in
channels_last, fp32 and bf16 autocast, the module as built against
:func:`geoscreen.vision.fold.folded_for_inference` (what screening and detection run);
the best of ``--rounds`` for each. Prints tiles/s and the ratio; asserts nothing (the
outputs are compared in ``tests/vision/test_fold.py``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table
from area_rate import BANDS, BATCH, TILE, bench_model

from geoscreen.vision.classifier import TileModel
from geoscreen.vision.fold import folded_for_inference
from geoscreen.vision.runtime import tune_malloc


def rate(model: TileModel, x: torch.Tensor, bf16: bool, batches: int = 5) -> float:
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        model.score_and_embed(x[:4])  # warm-up
        start = time.perf_counter()
        for _ in range(batches):
            model.score_and_embed(x)
        return batches * x.shape[0] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tune_malloc()
    x = torch.rand(BATCH, BANDS, TILE, TILE).contiguous(memory_format=torch.channels_last)
    rows = []
    for name in ("efficientnet_lite0", "resnet18"):
        plain = bench_model(name).eval().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        folded = folded_for_inference(plain).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        for bf16 in (False, True):
            best = [0.0, 0.0]
            for _ in range(args.rounds):  # interleaved: load from elsewhere hits both alike
                best = [max(best[0], rate(plain, x, bf16)), max(best[1], rate(folded, x, bf16))]
            rows.append([name, "bf16" if bf16 else "fp32", f"{best[0]:.1f}", f"{best[1]:.1f}",
                         f"{best[1] / best[0]:.2f}"])  # fmt: skip
    print(f"{args.threads} torch thread(s), batch {BATCH} x {BANDS} x {TILE}^2, channels_last")
    print_table(["model", "precision", "plain tiles/s", "folded tiles/s", "folded / plain"], rows)


if __name__ == "__main__":
    main()
