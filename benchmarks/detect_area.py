"""A detector trained on the outlined corner of a larger scene: what the rest teaches.

Usage::

    python benchmarks/detect_area.py --out DIR --train-area auto|scene [--seed S]
                                     [--epochs N]

Real labels only. The second NEON YELL crop (2,299 x 2,472 px, 574 crowns) stands in for
an orthomosaic an analyst outlined in one corner: only the crowns wholly inside its
top-left 45% x 55% are kept (96), the other 478 are left unlabelled. ``train`` runs on it
with ``--train-area``: ``scene`` reads the whole crop (every unlabelled crown there is
background, as before session 30), ``auto`` only the labels' extent
(:func:`geoscreen.vision.detect_scenes.training_window`). The model is scored at its
card's threshold on the right 45% of the crop (322 crowns, never labelled for training:
the rest of the mosaic the analyst screens) and on the YELL crop (279 crowns, 13 km
away). Prints one JSON line; asserts nothing. With ``scene``, seeds whose held-out strip
falls beyond the outlined corner (0, 2, 3) are refused by ``train`` (no crown to
validate on).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from detect import NEON, POSITIVE_CLASSES, detected, hindsight_f1, neon_file

from geoscreen.evaluate.metrics import Criterion, evaluate_sites
from geoscreen.profiles import load_profile
from geoscreen.samples import sample_path
from geoscreen.vision.detect_infer import decision_threshold
from geoscreen.vision.detect_scenes import TRAIN_AREAS
from geoscreen.vision.detect_train import DetectTrainOptions, train_detector
from geoscreen.vision.detector import load_detector

PROFILE = (
    Path(__file__).resolve().parents[1] / "geoscreen" / "configs" / "tree_crowns_detect_neon.yaml"
)
CORNER = (0.45, 0.55)  # the outlined part: this share of the width and of the height
TEST_FROM = 0.55  # the test part: right of this share of the width

Box = tuple[float, float, float, float]


def voc_subset(source: Path, keep: Callable[[Box], Box | None], out: Path, image: str,
               width: int | None = None) -> int:  # fmt: skip
    """A copy of a Pascal VOC file with the objects ``keep`` maps (None drops one), for
    ``image`` (its width replaced when given); returns how many it keeps."""
    tree = ET.parse(source)
    root = tree.getroot()
    root.find("filename").text = image  # type: ignore[union-attr]
    if width is not None:
        root.find("size/width").text = str(width)  # type: ignore[union-attr]
    for obj in list(root.findall("object")):
        box = obj.find("bndbox")
        assert box is not None
        keys = ("xmin", "ymin", "xmax", "ymax")
        kept = keep(tuple(float(box.findtext(k) or 0) for k in keys))  # type: ignore[arg-type]
        if kept is None:
            root.remove(obj)
            continue
        for key, value in zip(keys, kept, strict=True):
            box.find(key).text = str(round(value))  # type: ignore[union-attr]
    part = out.with_name(f"{out.stem}.{os.getpid()}{out.suffix}")
    tree.write(part)
    part.replace(out)  # whole, for a run reading it side by side
    return len(root.findall("object"))


def prepare(folder: Path) -> tuple[Path, Path, Path, Path, int, int]:
    """The crop (linked), its corner's labels, the right part as an image, its labels."""
    folder.mkdir(parents=True, exist_ok=True)
    source, labels = Path(sample_path("neon_yell2")), Path(sample_path("neon_yell2_labels"))
    width, height = Image.open(source).size
    xl, yl, xr = int(CORNER[0] * width), int(CORNER[1] * height), int(TEST_FROM * width)
    image = folder / "yell2.png"
    with contextlib.suppress(FileExistsError):  # two runs may start side by side
        image.symlink_to(source)
    corner = folder / "yell2_corner.xml"
    n_corner = voc_subset(labels, lambda b: b if b[2] <= xl and b[3] <= yl else None,
                          corner, image.name)  # fmt: skip
    right = folder / "yell2_right.png"
    if not right.exists():  # written whole, then moved in place (runs side by side)
        part = folder / f"yell2_right.{os.getpid()}.png"
        Image.open(source).crop((xr, 0, width, height)).save(part)
        part.replace(right)
    right_labels = folder / "yell2_right.xml"
    n_right = voc_subset(labels, lambda b: (b[0] - xr, b[1], b[2] - xr, b[3]) if b[0] >= xr
                         else None, right_labels, right.name, width - xr)  # fmt: skip
    return image, corner, right, right_labels, n_corner, n_right


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="work folder (data and the model)")
    parser.add_argument("--train-area", default="auto", choices=TRAIN_AREAS)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=24, help="max epochs (the profile's 24)")
    args = parser.parse_args()
    out = Path(args.out)
    image, corner, right, right_labels, n_corner, n_right = prepare(out / "data")
    profile = load_profile(PROFILE)
    model_dir = out / f"model_{args.train_area}_seed{args.seed}_{args.epochs}"
    opts = DetectTrainOptions(device="cpu", seed=args.seed, max_epochs=args.epochs,
                              positive_classes=list(POSITIVE_CLASSES),
                              train_area=args.train_area)  # fmt: skip
    started = time.perf_counter()
    card = train_detector(profile, [corner], [image], model_dir, opts, progress=print)
    seconds = time.perf_counter() - started
    loaded = load_detector(model_dir)
    threshold = decision_threshold(profile, card)[0]
    result: dict[str, object] = {
        "train_area": args.train_area, "seed": args.seed, "epochs": args.epochs,
        "train_seconds": round(seconds), "outlined": n_corner, "threshold": threshold,
        "window": card.data.scenes[0].window,
    }  # fmt: skip
    tests = {
        f"rest of the crop ({n_right} crowns)": (right, right_labels),
        "YELL crop (279 crowns)": (neon_file(NEON["yell"][0]), neon_file(NEON["yell"][1])),
    }
    for name, (test_image, test_labels) in tests.items():
        sites, truth = detected(loaded, profile, Path(test_image), Path(test_labels))
        ev = evaluate_sites(sites, truth, Criterion(iou=0.4), score_threshold=threshold,
                            n_boot=200, seed=0)  # fmt: skip
        row = {k: round(float(ev.metrics[k]), 3)
               for k in ("precision", "recall", "f1", "average_precision")}  # fmt: skip
        row["hindsight_f1"] = round(hindsight_f1([(sites, truth)], 0.4)[0], 3)
        result[name] = row
    print(json.dumps(result))


if __name__ == "__main__":
    main()
