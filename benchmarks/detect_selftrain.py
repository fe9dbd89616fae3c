"""Does self-training on an unlabelled scene help a detector at another site? (issue 13, item 4)

Usage::

    python benchmarks/detect_selftrain.py --train osbs --unlabelled yell --test yell \
        [--epochs 12] [--quantiles 0.7 0.9] [--threads 1]

Round 1 trains the profile's detector (``tree_crowns_detect_neon``, default recipe but
no held-out selection: all labels, ``--epochs`` epochs) on the labelled NEON sites.
It then detects over the unlabelled scenes; the detections scoring at or above the
given quantile of their own scores become boxes ("pseudo-labels"), and round 2 trains a
fresh detector on the labelled sites plus those boxes. Both rounds are scored on the
test sites' real labels (AP at IoU 0.4 and the best F1 in hindsight). A quantile, not a
fixed score, because at another site the scores shift (docs/detector.md: the card's threshold
does not transfer). With ``--unlabelled`` equal to ``--test`` this is transductive (the
test image without its labels), as an analyst screening that scene could do.

This measures; geoscreen does not ship self-training (docs/detector.md: it helped one direction
and not the other). Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from rasterio.windows import Window

from geoscreen.imagery.dataset import SceneWindowReader
from geoscreen.imagery.preprocess import ScenePreprocessor
from geoscreen.imagery.scene import open_scene
from geoscreen.profiles import Profile, load_profile
from geoscreen.samples import sample_path
from geoscreen.vision.detect_data import SceneView
from geoscreen.vision.detect_infer import DetectOptions, detect_scene
from geoscreen.vision.detect_metrics import best_threshold, detection_metrics
from geoscreen.vision.detect_scenes import DetectionData, detector_config, load_detection_data
from geoscreen.vision.detect_train import (
    DEFAULT_CHIP_PX,
    DetectTrainOptions,
    fitted_config,
    new_model,
    predict_views,
    run_training,
)
from geoscreen.vision.detector import Detector, LoadedDetector
from geoscreen.vision.modelcard import (
    BackboneRecord,
    DetectCard,
    DetectorRecord,
    ProfileRecord,
)

PROFILE = (
    Path(__file__).resolve().parents[1] / "geoscreen" / "configs" / "tree_crowns_detect_neon.yaml"
)
SITES = ("osbs", "yell", "yell2", "soap")
POSITIVE_CLASSES = ["Tree", "Dead", "Alive"]
CPU = torch.device("cpu")


def labelled(profile: Profile, names: Sequence[str]) -> DetectionData:
    return load_detection_data(
        profile,
        [sample_path(f"neon_{n}_labels") for n in names],
        [sample_path(f"neon_{n}") for n in names],
        POSITIVE_CLASSES,
    )


def score(model: Detector, tests: dict[str, DetectionData]) -> dict[str, dict[str, float]]:
    """AP at IoU 0.4 and the best F1 over thresholds, per test site (whole image)."""
    out = {}
    for name, data in tests.items():
        predictions = predict_views(model, data.views, CPU)
        truths = [v.boxes for v in data.views]
        ap = detection_metrics(predictions, truths, 0.4, 0.0)["average_precision"]
        threshold, f1 = best_threshold(predictions, truths, 0.4)
        out[name] = {"ap": round(ap, 3), "hindsight_f1": round(f1, 3), "at": threshold}
    return out


def pseudo_views(
    model: Detector, profile: Profile, names: Sequence[str], quantile: float
) -> list[SceneView]:
    """Each unlabelled scene whole, with its detections at or above the score quantile."""
    card = DetectCard(
        profile=ProfileRecord(name=profile.name, version=profile.version),
        detector=DetectorRecord.model_validate(model.config.to_card()),
        preprocess=profile.preprocess, tiling=profile.tiling,
        backbone=BackboneRecord(name=model.config.backbone.name, in_channels=3),
    )  # fmt: skip
    loaded = LoadedDetector(model.to(memory_format=torch.contiguous_format).eval(), card,
                            "round-1", Path("round-1"))  # fmt: skip
    views = []
    for name in names:
        scene = open_scene(sample_path(f"neon_{name}"), sensor=profile.imagery.sensor)
        objects = detect_scene(loaded, profile, scene, DetectOptions(device="cpu", num_workers=0))
        reader = SceneWindowReader(scene, ScenePreprocessor.build(profile.preprocess, scene))
        try:
            image, valid = reader.read(Window(0, 0, scene.width, scene.height))
        finally:
            reader.close()
        cut = float(np.quantile(objects.score_max, quantile)) if len(objects) else 1.0
        keep = objects.score_max >= cut
        print(f"{name}: {len(objects)} detections, score >= {cut:.3f} (quantile {quantile}): "
              f"{int(keep.sum())} pseudo-labels")  # fmt: skip
        views.append(SceneView(image * valid, valid, objects.boxes[keep].astype(np.float64),
                               (0, 0, scene.width, scene.height), name))  # fmt: skip
    return views


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", nargs="+", choices=SITES, required=True)
    parser.add_argument("--unlabelled", nargs="+", choices=SITES, required=True)
    parser.add_argument("--test", nargs="+", choices=SITES, required=True)
    parser.add_argument("--epochs", type=int, default=DetectTrainOptions().max_epochs)
    parser.add_argument("--quantiles", type=float, nargs="+", default=[0.7, 0.9])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    profile = load_profile(PROFILE)
    opts = DetectTrainOptions(device="cpu", chip_size=DEFAULT_CHIP_PX, seed=args.seed,
                              positive_classes=POSITIVE_CLASSES)  # fmt: skip
    data = labelled(profile, args.train)
    config = fitted_config(detector_config(profile, data.scenes[0], 0.1), data.views, 0.1,
                           opts.fit_anchors)  # fmt: skip
    tests = {name: labelled(profile, [name]) for name in args.test}

    def train(views: list[SceneView]) -> Detector:
        started = time.perf_counter()
        model = new_model(replace(config), opts, CPU)
        run_training(model, views, opts, CPU, args.epochs)
        print(f"trained {args.epochs} epochs in {time.perf_counter() - started:.0f} s")
        return model

    first = train(data.views)
    print("round 1 (labels only):", score(first, tests))
    for quantile in args.quantiles:
        second = train(data.views + pseudo_views(first, profile, args.unlabelled, quantile))
        print(f"round 2 (labels + pseudo-labels at quantile {quantile}):", score(second, tests))


if __name__ == "__main__":
    main()
