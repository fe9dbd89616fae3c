"""How long ``geoscreen train`` takes on real labels: the issue's "1,000 labels in under
2 minutes on the 2-core CPU".

Usage::

    python benchmarks/train_time.py [--mode auto] [--repeat 1]

Trains the bundled Sentinel-2 profile (``geoscreen/configs/open_water_s2.yaml``) on all
866 labelled points of the bundled scene (``--positive water``), as ``geoscreen train``
does, and prints wall time, this process's CPU time, the load average before and after
(the machine is often shared: compare CPU-seconds / cores with the wall time), the
number of chips, and each learner's cross-validation seconds from the card. Asserts
nothing.

``--background-per-positive`` defaults to 4, as for labels of positives alone: 2,705
chips, the heavier job. ``geoscreen train`` itself adds no random background chips to
these labels (399 forest points sample what is not water; see ``background.py``), and
then trains on 866 chips; ``--background-per-positive auto`` measures that.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table

from geoscreen.profiles import load_profile
from geoscreen.samples import sentinel2_water_forest
from geoscreen.vision.train import TrainOptions, train_classifier

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", default="auto")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--background-per-positive", default="4")
    args = parser.parse_args()
    sample = sentinel2_water_forest()
    profile = load_profile(ROOT / "geoscreen" / "configs" / "open_water_s2.yaml")
    given = args.background_per_positive
    background = None if given == "auto" else float(given)
    rows = []
    for run in range(args.repeat):
        load_before = os.getloadavg()[0]
        wall, cpu = time.perf_counter(), time.process_time()
        with tempfile.TemporaryDirectory() as out:
            card = train_classifier(
                profile, [sample.points], [sample.image], Path(out) / "model",
                TrainOptions(mode=args.mode, device="cpu", seed=0, positive_classes=["water"],
                             background_per_positive=background),
            )  # fmt: skip
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        learners = card.selection.learners if card.selection else {}
        rows.append([
            run, sum((card.split.test_chips_per_fold if card.split else None) or []),
            f"{wall:.1f}", f"{cpu:.1f}", f"{load_before:.1f}", f"{os.getloadavg()[0]:.1f}",
            card.selection.chosen if card.selection else args.mode,
            ", ".join(f"{k} {v.seconds:.1f}" for k, v in learners.items()),
        ])  # fmt: skip
    print(f"train {profile.name} on 866 labels (mode {args.mode}), {os.cpu_count()} CPUs")
    print_table(
        ["run", "chips", "wall s", "CPU s", "load before", "load after", "chosen",
         "CV s per learner"],
        rows,
    )  # fmt: skip


if __name__ == "__main__":
    main()
