"""``geoscreen train``, ``geoscreen screen`` and ``geoscreen similar``."""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from geoscreen.cli.app import cli
from geoscreen.cli.options import (
    bands_option,
    batch_size_option,
    check_tta,
    device_option,
    json_option,
    precision_option,
    tta_option,
)
from geoscreen.errors import InputError
from geoscreen.fileio import atomic_write

if TYPE_CHECKING:  # torch and the imagery stack load when a command runs
    from geoscreen.imagery.scene import Scene
    from geoscreen.profiles import Profile
    from geoscreen.vision.detect_infer import Objects
    from geoscreen.vision.modelcard import ModelCard
    from geoscreen.vision.scoremap import ScoreMap

log = logging.getLogger(__name__)

SHORT_ID = 8  # characters of the scene's content id in its output folder name


def _stderr(message: str) -> None:
    click.echo(message, err=True)


@cli.command()
@click.argument("profile", type=click.Path(dir_okay=False))
@click.option(
    "--labels",
    "labels",
    multiple=True,
    help="Labelled examples (GeoJSON/GPKG/SHP/CSV/Pascal VOC); repeatable.",
)
@click.option("--imagery", "imagery", multiple=True, help="Scene file; repeatable.")
@click.option(
    "--from-store",
    "from_store",
    default=None,
    metavar="PATH|URL",
    help="Also learn from the review store: confirmed/escalated candidates are positives, "
    "rejected ones negatives; scenes from the paths the store recorded.",
)
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Model folder.")
@click.option(
    "--mode",
    type=click.Choice(["auto", "spectral", "linear_probe", "combined", "finetune"]),
    default="auto",
    show_default=True,
    help="auto compares the spectral-context, deep-feature and combined learners on "
    "spatially blocked folds and keeps the best; the others train one of them "
    "(finetune: the whole CNN, for a GPU).",
)
@click.option(
    "--positive",
    "positive",
    multiple=True,
    help="Class name counted as positive (repeatable); default: the profile's "
    "labels.positive_classes.",
)
@click.option(
    "--negative",
    "negative",
    multiple=True,
    help="Class name counted as negative (repeatable); default: every other class.",
)
@click.option(
    "--folds", default=5, show_default=True, type=click.IntRange(2, 20), help="Blocked CV folds."
)
@click.option(
    "--fold-by",
    type=click.Choice(["auto", "blocks", "scenes"]),
    default="auto",
    show_default=True,
    help="Fold blocks: square blocks within scenes, or whole scenes (auto: whole scenes "
    "when two or more scenes hold positives and negatives).",
)
@click.option(
    "--hard-negative-weight",
    "hard_negative_weight",
    default=None,
    type=click.FloatRange(0, 100, min_open=True),
    help="Classifiers, with --from-store: what each rejected candidate (a hard negative) "
    "weighs against a random background chip [default: 4, measured; see the README].",
)
@click.option(
    "--background-per-positive",
    "background_per_positive",
    default=None,
    type=click.FloatRange(0, 100),
    help="Classifiers: random background chips per positive, each counted as a "
    "negative [default: 4 when the labels give fewer than half as many negatives as "
    "positives, else none; see docs/tile-classifier.md].",
)
@click.option(
    "--learner",
    "learner",
    default=None,
    help="Classifiers: keep this learner of the comparison (e.g. the runner-up of a near "
    "tie) instead of the best by cross-validation; the card says so.",
)
@click.option(
    "--train-area",
    "train_area",
    type=click.Choice(["auto", "labels", "scene"]),
    default="auto",
    show_default=True,
    help="Detectors: the part of each scene to train on, where every unlabelled pixel "
    "counts as background: the labels' extent (plus one object around it), or the whole "
    "scene; auto: the labels' extent when it covers under half of the scene.",
)
@device_option
@bands_option
@json_option
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--max-epochs",
    default=None,
    type=click.IntRange(1),
    help="Upper bound on epochs (finetune, detection profiles).",
)
@click.option(
    "--allow-dropped",
    is_flag=True,
    help="Train even when more than 10% of a label file's rows are invalid (they are dropped).",
)
def train(
    profile: str,
    labels: tuple[str, ...],
    imagery: tuple[str, ...],
    out: str,
    mode: str,
    device: str,
    seed: int,
    max_epochs: int | None,
    positive: tuple[str, ...],
    negative: tuple[str, ...],
    folds: int,
    fold_by: str = "auto",
    from_store: str | None = None,
    allow_dropped: bool = False,
    hard_negative_weight: float | None = None,
    background_per_positive: float | None = None,
    learner: str | None = None,
    train_area: str = "auto",
    bands: tuple[str, ...] = (),
    as_json: bool = False,
) -> None:
    """Train PROFILE's model (classifier or detector) on labelled examples; writes weights
    and a model card.

    First prints each label file's report (rows kept, dropped and why); refuses a file
    with more than 10% invalid rows unless --allow-dropped.
    """
    from geoscreen.fileio import check_output_dir
    from geoscreen.profiles import load_profile
    from geoscreen.vision.task import TrainRequest, task_for

    check_output_dir(out)  # before minutes of training
    prof = load_profile(profile)
    if bands:  # resolved against the scenes given (by position when there are none)
        from geoscreen.imagery.scene import open_scene
        from geoscreen.profiles import select_bands

        given = [open_scene(p, sensor=prof.imagery.sensor) for p in imagery]
        prof = select_bands(prof, bands, given)
    if from_store is None and not (labels and imagery):
        raise InputError(
            "training needs --labels and --imagery, or --from-store",
            where="geoscreen train",
            fix="Give labelled examples and scenes, or a review store with reviewed candidates.",
        )
    task = task_for(prof)
    if train_area != "auto" and task.name != "detect":
        raise InputError(
            "--train-area chooses where a detector learns background; a tile classifier "
            "learns it from random background chips",
            where="geoscreen train",
            fix="Leave --train-area out for this profile (classifiers: --background-per-positive).",
        )
    if hard_negative_weight is not None and from_store is None:
        raise InputError(
            "--hard-negative-weight weighs the rejected candidates of a review store",
            where="geoscreen train",
            fix="Give --from-store DB, or leave --hard-negative-weight out.",
        )
    echo: Callable[[str], None] = _stderr
    if labels and imagery:
        from geoscreen.cli.labelcheck import check_training_labels, without

        printed = check_training_labels(prof, labels, imagery, positive,
                                         allow_dropped=allow_dropped, say=echo)  # fmt: skip
        echo = without(printed, echo)  # the trainer repeats the per-scene lines
    request = TrainRequest(device=device, seed=seed, max_epochs=max_epochs, mode=mode,
                           folds=folds, fold_by=fold_by, positive=positive,
                           negative=negative,
                           hard_negative_weight=hard_negative_weight,
                           background_per_positive=background_per_positive,
                           learner=learner, train_area=train_area)  # fmt: skip
    if from_store is not None:  # the review loop: analysts' decisions are labels
        from geoscreen.batch.retrain import train_from_store

        card = train_from_store(prof, from_store, out, labels=labels, imagery=imagery,
                                request=request, progress=echo)  # fmt: skip
    else:
        card = task.train(prof, labels, imagery, out, request, progress=echo)
    line = task.trained_summary(card, prof, out)
    if not as_json:
        click.echo(line)
        return
    _stderr(line)
    _print_json(_trained_record(card, prof, task.name, out, line))


@cli.command()
@click.argument("profile", type=click.Path(dir_okay=False))
@click.argument("scenes", nargs=-1, required=True)
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False))
@click.option("--aoi", default=None, help="Only tiles intersecting these polygons.")
@batch_size_option
@click.option(
    "--workers",
    default=None,
    type=click.IntRange(0),
    help="Tile-reading processes running alongside the model "
    "[default: 0 on CPU (batches read in threads between model batches), 1 on a GPU].",
)
@device_option
@click.option("--embeddings/--no-embeddings", default=False, help="Also store tile embeddings.")
@precision_option
@bands_option
@json_option
@tta_option
def screen(
    profile: str,
    scenes: tuple[str, ...],
    model_dir: str,
    out: str,
    aoi: str | None,
    batch_size: int,
    workers: int | None,
    device: str,
    embeddings: bool,
    precision: str,
    tta: bool,
    bands: tuple[str, ...] = (),
    as_json: bool = False,
) -> None:
    """Score every tile of each SCENE with a trained PROFILE model (detection profiles:
    find objects, one site per object at the threshold in force; every object, for
    evaluation, in objects.parquet)."""
    from geoscreen.imagery.aoi import load_aoi
    from geoscreen.imagery.region import card_warnings
    from geoscreen.imagery.scene import open_scene
    from geoscreen.profiles import load_profile, select_bands
    from geoscreen.vision.card_warnings import baseline_warnings
    from geoscreen.vision.infer import new_run
    from geoscreen.vision.task import RunSettings, task_for

    prof = load_profile(profile)
    task = task_for(prof)
    check_tta(tta, task.name, profile)
    loaded = task.load(model_dir)
    opened = [open_scene(s, sensor=prof.imagery.sensor) for s in scenes]
    prof = select_bands(prof, bands, opened)
    for scene in opened:
        task.check(loaded, prof, scene)
    # Every input is checked before anything is written (an AOI on a scene without CRS fails).
    areas = [load_aoi(aoi, scene.crs) if aoi else None for scene in opened]
    threshold = task.threshold(loaded, prof, tta)
    model_warnings = baseline_warnings(loaded.card)  # once: it holds for every scene
    warned = [card_warnings(loaded.card, scene) for scene in opened]
    for line in model_warnings + [w for lines in warned for w in lines]:
        click.echo(f"warning: {line}", err=True)
    if task.name == "classify":
        click.echo(threshold_note(threshold, loaded.card, prof.name), err=True)
    arithmetic, note = arithmetic_note(precision, device, task.name, loaded.model)
    click.echo(f"arithmetic: {note}", err=True)
    settings = RunSettings(batch_size=batch_size, device=device, num_workers=workers,
                           embeddings=embeddings, progress=True, precision=precision,
                           tta=tta)  # fmt: skip
    meta = new_run(prof, loaded.sha256, task=task.name)
    say = _stderr if as_json else click.echo  # --json: stdout holds the JSON object only
    from geoscreen.vision.scoremap import ScoreMap

    results = []
    for scene, area, warnings in zip(opened, areas, warned, strict=True):
        result = task.score_scene(
            loaded, prof, scene, settings, aoi=area, meta={**meta, "scene_id": scene.id}
        )
        if isinstance(result, ScoreMap):
            written = _write(result, Path(out), scene.uri, prof, say, threshold[0])
            from geoscreen.vision.similarity_model import scene_comparison

            compared = scene_comparison(loaded.card, result.scores)
            if compared:
                say(f"{scene.uri}: {compared}")
        else:
            written = _write_objects(result, prof, scene, Path(out), meta, threshold, say)
        results.append({**written, "warnings": warnings})
    extra = {**profile_record(prof), "precision": arithmetic, "model_warnings": model_warnings}
    if task.name == "classify":  # what 'sites extract' applies unless given --threshold
        extra |= {"threshold": threshold[0], "threshold_source": threshold[1]}
    summary = _summary(Path(out), "screen", meta, results, extra)
    if as_json:
        _print_json(summary)


# What a similarity search's scores are (similar.json): 'sites extract' needs a threshold.
SIMILARITY_SCORE = "highest cosine similarity to any example (-1..1), not a probability"


def arithmetic_note(precision: str, device: str, task: str, model: Any) -> tuple[str, str]:
    """What ``--precision`` means for ``model``: ``fp32``, ``bf16`` or ``int8``
    (``screen.json`` records it), and that in words."""
    from geoscreen.vision.infer import CHECK_MARGINS, runs_backbone, screening_precision
    from geoscreen.vision.quantize import CALIBRATION_TILES
    from geoscreen.vision.runtime import pick_device, pick_precision

    checked = task == "classify"  # classifiers check bf16/int8 scores near the threshold
    where = pick_device(device)
    if task == "detect" and model.fp32_only:  # fitted blobs: numpy in fp64, no network
        return "fp32", "fp32 (scale-space blobs run no network: bf16 would not speed them up)"
    if not checked:
        device_picked = pick_precision(precision, where)
        words = "fp32" if device_picked == "fp32" else "bf16 (--precision fp32 for fp32)"
        return device_picked, words
    picked = screening_precision(model, precision, where, checked=True)
    if model.fp32_only:
        return picked, "fp32 (a similarity model scores as 'geoscreen similar' does)"
    if not runs_backbone(model):
        return picked, "fp32 (this model runs no backbone: bf16 would not speed it up)"
    if picked == "fp32":
        return picked, "fp32"
    how = "bf16"
    if picked == "int8":
        how = f"int8 (the trunk calibrated on {CALIBRATION_TILES} tiles of each scene)"
    return picked, (
        f"{how}, tiles scoring within {CHECK_MARGINS[picked]:g} of the threshold scored again "
        "in fp32 (--precision fp32 for fp32 throughout)"
    )


def profile_record(profile: Profile) -> dict[str, Any]:
    """The profile a screening used, in ``screen.json``: ``sites extract`` reads it back
    when not given ``--profile``."""
    where = profile.source_path
    return {"profile_spec": profile.to_dict(), "profile_path": str(where) if where else None}


def _write_objects(
    objects: Objects,
    profile: Profile,
    scene: Scene,
    out: Path,
    meta: dict[str, Any],
    threshold: tuple[float, str],
    say: Callable[[str], None] = click.echo,
) -> dict[str, Any]:
    """A detection result: the objects at or above the threshold in force as sites in
    ``<out>/<scene folder>/sites.parquet`` (and ``.gpkg``), every object with that
    threshold in ``objects.parquet`` (:func:`geoscreen.sites.detections.write_detection_sites`)."""
    from geoscreen.sites.detections import write_detection_sites
    from geoscreen.sites.make import scene_sites

    sites = scene_sites(objects, profile, scene, run_id=meta["run_id"],
                        model_sha256=meta["model_sha256"])  # fmt: skip
    value, source = threshold
    files = write_detection_sites(sites, out / scene_folder(scene), value)
    shown = int((sites["score_max"] >= value).sum())
    say(
        f"{scene.uri}: {objects.meta['tiles']} tiles, {len(sites)} objects, {shown} scoring "
        f">= {value:g} (threshold from the {source}) -> {files['sites']} (every object: "
        f"{files['objects'].name})"
    )
    return {
        "scene": scene.uri,
        "scene_id": scene.id,
        "tiles": objects.meta["tiles"],
        "objects": len(sites),
        "threshold": value,
        "threshold_source": source,
        "objects_at_threshold": shown,
        "files": {k: str(v) for k, v in files.items()},
    }


def threshold_note(threshold: tuple[float, str], card: ModelCard, profile: str) -> str:
    """Which threshold makes sites, from where, and what the model card suggests."""
    from geoscreen.vision.modelcard import ClassifyCard

    thresholds = card.thresholds if isinstance(card, ClassifyCard) else None
    best = thresholds.suggested.get("best_f1") if thresholds else None
    hint = f"; the model card suggests {best.threshold:g} for best F1" if best else ""
    value, source = threshold
    where = f"profile {profile}" if source == "profile" else source
    return f"threshold in force: {value:g} ({where}){hint}"


@cli.command()
@click.option(
    "--profile",
    "profile",
    required=True,
    type=click.Path(dir_okay=False),
    help="Profile giving backbone, bands and tile size.",
)
@click.option("--imagery", "imagery", multiple=True, required=True, help="Scene file; repeatable.")
@click.option(
    "--example",
    "example",
    required=True,
    help="Example sites (points/boxes/polygons) lying in one of the scenes.",
)
@click.option("--out", "out", required=True, type=click.Path(file_okay=False))
@click.option("--model", "model_dir", default=None, help="Use a trained model's backbone instead.")
@click.option(
    "--threshold",
    type=float,
    default=None,
    help="The similarity from which a tile is worth a review: recorded for 'sites extract' "
    "and, with --save-model, in the model card.",
)
@click.option(
    "--save-model",
    "save_model",
    default=None,
    type=click.Path(file_okay=False),
    help="Also keep the search as a model folder, for 'screen' and 'scan' (needs --threshold).",
)
@batch_size_option
@device_option
@bands_option
@json_option
def similar(
    profile: str,
    imagery: tuple[str, ...],
    example: str,
    out: str,
    model_dir: str | None,
    threshold: float | None,
    save_model: str | None,
    batch_size: int,
    device: str,
    bands: tuple[str, ...] = (),
    as_json: bool = False,
) -> None:
    """Rank tiles by similarity to example sites, with no training.

    A tile scores its highest cosine similarity (-1..1) to any example, over the
    backbone's features (every stage) and, for imagery beyond visible RGB, the spectral
    statistics of every band, standardised by tiles of the examples' scene. Scores are
    not probabilities: give a --threshold of your own, here or to 'sites extract'.
    With --save-model, the search (examples, features, threshold) is kept as a model
    that 'screen' and 'scan' use as they use a trained one.
    """
    import time

    import numpy as np
    import torch

    from geoscreen.imagery.scene import open_scene
    from geoscreen.profiles import check_scene, load_profile, select_bands
    from geoscreen.vision.classifier import load_model
    from geoscreen.vision.embeddings import SimilarityModel, example_set, similarity_features
    from geoscreen.vision.infer import ScreenOptions, check_model_fits, screen_scene
    from geoscreen.vision.runtime import pick_device
    from geoscreen.vision.similarity_model import blocked_leave_one_out

    started = time.perf_counter()
    if save_model is not None:
        _check_saving(save_model, threshold)
    if threshold is not None and not -1 <= threshold <= 1:
        raise InputError(f"--threshold {threshold:g}: a cosine similarity lies in -1..1",
                         where="geoscreen similar", fix="Give a similarity, e.g. 0.9.")  # fmt: skip
    prof = load_profile(profile)
    if prof.model.task != "classify":
        raise InputError(
            f"profile {prof.name} detects objects; similarity search ranks tiles",
            where=profile,
            fix="Give a classify profile whose tiles are about the size of what you look "
            "for; a detection profile finds objects with a detector trained by 'geoscreen "
            "train'.",
        )
    where = pick_device(device)  # an unusable device fails before any work
    scenes = [open_scene(s, sensor=prof.imagery.sensor) for s in imagery]
    prof = select_bands(prof, bands, scenes)
    trained = None
    if model_dir:
        loaded = load_model(model_dir)
        for scene in scenes:
            check_model_fits(loaded, prof, scene)
        trained = loaded
    else:
        for scene in scenes:
            check_scene(prof, scene)
    features = similarity_features(prof, scenes[0], trained.model if trained else None)
    found = example_set(features, prof, scenes, example)
    model = SimilarityModel(features, torch.from_numpy(found.embeddings))
    run_id = uuid.uuid4().hex[:12]
    meta = {
        "profile": prof.name,
        "profile_version": prof.version,
        "run_id": run_id,
        "method": "similarity",
        "examples": len(found.embeddings),
    }
    about: dict[str, Any] = {
        "score": SIMILARITY_SCORE,
        "features": features.blocks,
        **profile_record(prof),
    }
    if threshold is not None:  # 'sites extract' applies it unless given another
        about |= {"threshold": threshold, "threshold_source": "analyst (similar --threshold)"}
    # fp32: the similarity of the embeddings decides here, and the bf16 check covers only
    # the model's own scores
    opts = ScreenOptions(batch_size=batch_size, device=device, embeddings=True, progress=True,
                         precision="fp32")  # fmt: skip
    say = _stderr if as_json else click.echo  # --json: stdout holds the JSON object only
    if save_model is not None:  # kept before the scenes are screened: nothing depends on them
        assert threshold is not None
        from geoscreen.vision.similarity_model import keep_search

        saved = keep_search(model, prof, found, threshold, save_model, where,
                            source=trained, options={"examples": str(example)},
                            started=started)  # fmt: skip
        about["model"] = {"path": str(save_model), "model_sha256": saved}
        say(f"similarity model kept in {save_model} (threshold {threshold:g}); see "
            f"{save_model}/MODEL_CARD.md")  # fmt: skip
    results, every = [], []
    for scene in scenes:
        scores = screen_scene(model, prof, scene, opts, meta={**meta, "scene_id": scene.id})
        results.append(_write(scores, Path(out), scene.uri, prof, say, threshold))
        every.append(scores.scores)
    joined = np.concatenate(every)
    if joined.size:  # a guide for the threshold 'sites extract' asks for
        about["score_top_1pct"] = round(float(np.quantile(joined, 0.99)), 4)
        about["score_max"] = round(float(joined.max()), 4)
        say(f"scores are similarities, not probabilities: the top 1% of tiles score "
            f"{about['score_top_1pct']:.3f} or more; 'geoscreen sites extract {out} "
            "--threshold T' makes sites of those at T or above")  # fmt: skip
    left_out = blocked_leave_one_out(found, prof.tiling.tile_size)
    left_out = left_out[np.isfinite(left_out)]
    if left_out.size:  # and how the examples score, each against the others
        quartiles = np.quantile(left_out, [0.25, 0.5, 0.75])
        about["example_score_left_out"] = [round(float(q), 4) for q in quartiles]
        say(
            "the examples, each scored as a tile against those two tiles or more away, score "
            "{:.3f} / {:.3f} / {:.3f} (quartiles): a threshold above them misses places like "
            "them".format(*quartiles)
        )
    summary = _summary(Path(out), "similar", meta, results, about)
    if as_json:
        _print_json(summary)


def _check_saving(save_model: str, threshold: float | None) -> None:
    """Refuse, before any work, a similarity model without its threshold or folder."""
    from geoscreen.fileio import check_output_dir

    if threshold is None:
        raise InputError(
            "--save-model needs --threshold: a similarity model screens with the analyst's "
            "threshold, not the profile's (a probability)",
            where="geoscreen similar",
            fix="Run 'geoscreen similar' without --save-model first; it prints the score of "
            "the top 1% of tiles as a guide. Then give --threshold T with --save-model.",
        )
    check_output_dir(save_model, "--save-model")


def _write(
    scores: ScoreMap,
    out: Path,
    uri: str,
    prof: Profile,
    say: Callable[[str], None] = click.echo,
    threshold: float | None = None,
) -> dict[str, Any]:
    scene = scores.grid.scene
    files = scores.write(out / scene_folder(scene), raster=prof.tiling.raster, threshold=threshold)
    top = float(scores.scores.max()) if scores.scores.size else float("nan")
    say(f"{uri}: {len(scores.grid)} tiles screened, top score {top:.3f} -> {files['tiles']}")
    return {
        "scene": uri,
        "scene_id": scene.id,
        "tiles": len(scores.grid),
        "files": {k: str(v) for k, v in files.items()},
    }


def _summary(
    out: Path,
    kind: str,
    meta: dict[str, Any],
    results: list[dict[str, Any]],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``<out>/<kind>.json`` (what ran, on which scenes, the files); returns it."""
    summary = {"kind": kind, "finished": datetime.now(UTC).isoformat(), **meta,
               "scenes": results, **(extra or {})}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(summary, indent=2)
    atomic_write(out / f"{kind}.json", lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return summary


def scene_folder(scene: Scene) -> str:
    """A scene's output folder: ``<file stem>-<short content id>`` (a name a person
    recognises; the id keeps two files with one name apart)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(scene.uri.split("?")[0]).stem).strip("._")
    return f"{stem[:64] or 'scene'}-{scene.id[:SHORT_ID]}"


def _trained_record(
    card: ModelCard, profile: Profile, task: str, out: str, line: str
) -> dict[str, Any]:
    """What ``train --json`` prints: the model, its profile, metrics and threshold."""
    from geoscreen.fileio import sha256_file
    from geoscreen.vision.modelcard import DetectCard
    from geoscreen.vision.modeldir import WEIGHTS_FILE

    learner: str | None
    if isinstance(card, DetectCard):
        threshold, learner = card.threshold, card.detector.architecture
    else:  # the learner selection kept, or the training mode
        threshold = profile.threshold
        learner = card.selection.chosen if card.selection else None
        learner = learner or (card.training.mode if card.training else None)
    return {
        "kind": "train",
        "out": str(out),
        "task": task,
        "profile": profile.name,
        "profile_version": profile.version,
        "bands": profile.preprocess.bands,
        "model_sha256": sha256_file(Path(out) / WEIGHTS_FILE),
        "learner": learner,
        "metrics": dict(card.metrics),
        "threshold": threshold,
        "region_recorded": card.region is not None,
        "summary": line,
    }


def _print_json(record: dict[str, Any]) -> None:
    """One JSON object on stdout (NaN as null: strict parsers refuse NaN)."""
    from geoscreen.evaluate.report import json_safe

    click.echo(json.dumps(json_safe(record), indent=2))
