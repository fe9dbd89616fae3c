"""``geoscreen evaluate``: predicted sites against ground truth, or a score raster at
labelled places (metrics, plots, a report)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from geoscreen.cli.app import cli
from geoscreen.cli.options import json_option
from geoscreen.errors import ConfigError, InputError

if TYPE_CHECKING:  # geopandas loads when the command runs
    import geopandas as gpd

    from geoscreen.evaluate.metrics import Evaluation


@cli.command("evaluate")
@click.option("--predicted", required=True,
              help="Predictions: a site file, any vector file with a score column, a CSV "
                   "of pixel boxes (DeepForest) with --image, or a classify screen's "
                   "scores.tif (read at each label).")  # fmt: skip
@click.option("--score-column", default=None, metavar="NAME",
              help="The predictions' score column [default: score; score_max for site "
                   "files].")  # fmt: skip
@click.option(
    "--truth", required=True, help="Labelled objects (vector file, or CSV/VOC + --image)."
)
@click.option("--positive", "positive", multiple=True, metavar="CLASS",
              help="Class counted as positive (repeatable); default: the label file's own "
                   "rule (one class, or positive/negative words).")  # fmt: skip
@click.option("--negative", "negative", multiple=True, metavar="CLASS",
              help="With a scores.tif: class counted as negative (repeatable); default: "
                   "every other class.")  # fmt: skip
@click.option("--iou", type=float, default=None, help="Match at IoU >= this [default: 0.4].")
@click.option("--distance", type=float, default=None, help="Match centres within this (m; px).")
@click.option("--image", default=None,
              help="The image pixel coordinates (truth, CSV boxes) refer to.")  # fmt: skip
@click.option("--score-threshold", type=float, default=None,
              help="Precision, recall and F1 of the sites scoring this much [default: all, "
                   "or the threshold in force that a detection screen's objects.parquet "
                   "records]; AP ranks them all.")  # fmt: skip
@click.option("--group-by", default=None, help="Column for the per-group breakdown.")
@click.option("--regions", default=None, help="Polygons for a per-region breakdown.")
@click.option("--region-column", default="name", show_default=True)
@click.option("--bootstrap", type=click.IntRange(0), default=1000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", "out", required=True, help="Folder for metrics.json, plots, report.html.")
@json_option
def evaluate(
    predicted: str,
    score_column: str | None,
    truth: str,
    positive: tuple[str, ...],
    negative: tuple[str, ...],
    iou: float | None,
    distance: float | None,
    image: str | None,
    score_threshold: float | None,
    group_by: str | None,
    regions: str | None,
    region_column: str,
    bootstrap: int,
    seed: int,
    out: str,
    as_json: bool,
) -> None:
    """Match predicted sites to ground truth one-to-one, or read a classify screen's
    scores.tif at each label; write metrics, plots and a report."""
    steps = Steps("evaluate", ["loading", "matching", "writing the report"])
    from geoscreen.evaluate.at_labels import is_score_raster
    from geoscreen.evaluate.metrics import Criterion, evaluate_sites
    from geoscreen.evaluate.predictions import load_predictions
    from geoscreen.evaluate.report import json_safe, write_report
    from geoscreen.evaluate.truth import load_truth
    from geoscreen.fileio import check_output_dir
    from geoscreen.imagery.scene import open_scene

    check_output_dir(out)
    if {c.casefold() for c in positive} & {c.casefold() for c in negative}:
        raise ConfigError("a class cannot be both --positive and --negative",
                          where="--positive/--negative", fix="Name each class once.")  # fmt: skip
    if is_score_raster(predicted):
        given = {"--iou": iou, "--distance": distance, "--score-column": score_column,
                 "--group-by": group_by, "--regions": regions}  # fmt: skip
        _at_labels(predicted, truth, image, positive, negative, score_threshold,
                   [k for k, v in given.items() if v is not None], bootstrap, seed, out,
                   as_json)  # fmt: skip
        return
    if negative:
        raise ConfigError(
            "--negative applies to a scores.tif read at labelled places",
            where="--negative",
            fix="Leave it out: against objects, only the positive labels count.",
        )
    if iou is not None and distance is not None:
        raise ConfigError(
            "give --iou or --distance, not both",
            fix="Pick one: --iou matches outlines by overlap, --distance (m) centres by distance.",
        )
    if iou is not None and not 0 < iou <= 1:
        raise ConfigError(
            f"--iou must be in (0, 1], got {iou}", fix="Use e.g. --iou 0.4 (the usual 0.5)."
        )
    if distance is not None and not distance >= 0:
        raise ConfigError(
            f"--distance must be at least 0, got {distance}", fix="Give metres, e.g. --distance 5."
        )
    if score_column is not None and not score_column.strip():
        raise ConfigError("--score-column is empty", fix="Name the predictions' score column.")
    criterion = Criterion(iou=0.4 if iou is None else iou, distance=distance)
    scene = open_scene(image) if image else None
    pred = load_predictions(predicted, score_column=score_column, scene=scene)
    objects = load_truth(truth, scene, positive_classes=list(positive) or None)
    if objects.attrs.get("not_truth"):
        left = ", ".join(f"{n} {name!r}" for name, n in objects.attrs["not_truth"].items())
        click.echo(f"geoscreen: note: {len(objects)} truth objects; labels not counted as "
                   f"objects to find: {left} (--positive names the classes that are)",
                   err=True)  # fmt: skip
    areas = _regions(regions) if regions else None
    if score_threshold is None and pred.threshold is not None:
        score_threshold = pred.threshold
        click.echo(
            f"geoscreen: note: precision, recall and F1 of the objects scoring at least "
            f"{score_threshold:g}, the threshold in force when screened (recorded in the file); "
            f"AP ranks all {len(pred.frame)}; --score-threshold chooses another",
            err=True,
        )
    steps.next()
    ev = evaluate_sites(
        pred.frame, objects, criterion, score_column=pred.score_column,
        score_threshold=score_threshold, group_column=group_by, regions=areas,
        region_column=region_column, n_boot=bootstrap, seed=seed,
    )  # fmt: skip
    extra = {"inputs": {"predicted": predicted, "truth": truth, "image": image,
                        "predictions": pred.describe()}}  # fmt: skip
    if pred.other_image:
        click.echo(
            f"geoscreen: note: {pred.other_image} predictions for other images left out",
            err=True,
        )
    inside = _missed_points_inside_sites(ev)
    if inside:
        click.echo(
            f"geoscreen: note: {inside} missed truth points lie inside a site: matching is "
            "one-to-one (one object per site), so points that sample a class count once per "
            "site; to rank places by their labels, evaluate a classify screen's scores.tif "
            "(--predicted .../scores.tif)",
            err=True,
        )
    steps.next()
    paths = write_report(ev, out, title=f"Evaluation of {Path(predicted).name}", extra=extra)
    m = ev.metrics
    steps.close()
    if as_json:
        summary = {k: v for k, v in ev.to_dict().items() if k != "pr_curve"}
        files = {k: str(v) for k, v in paths.items()}
        click.echo(json.dumps(json_safe({**summary, **extra, "files": files}), indent=2))
        return
    click.echo(
        f"{ev.criterion}: precision {m['precision']:.3f}, recall {m['recall']:.3f}, "
        f"F1 {m['f1']:.3f}, AP {m['average_precision']:.3f} "
        f"({m['tp']} TP, {m['fp']} FP, {m['fn']} FN) -> {paths['report']}"
    )


def _at_labels(
    raster: str,
    truth: str,
    image: str | None,
    positive: tuple[str, ...],
    negative: tuple[str, ...],
    score_threshold: float | None,
    refused: list[str],
    bootstrap: int,
    seed: int,
    out: str,
    as_json: bool,
) -> None:
    """A classify screen's scores.tif read at each label: how well it ranks them."""
    from geoscreen.evaluate.at_labels import label_metrics, scores_at_labels
    from geoscreen.evaluate.label_report import write_label_report
    from geoscreen.evaluate.report import json_safe
    from geoscreen.imagery.scene import open_scene

    if refused:
        raise ConfigError(
            f"{', '.join(refused)} match objects; a scores.tif is read at each label",
            where=refused[0],
            fix="Leave them out, or evaluate the scene's sites (geoscreen sites extract) "
            "against labelled objects.",
        )
    if not Path(raster).is_file():
        raise InputError("score raster not found", where=raster, fix="Check the path.")
    scene = open_scene(image) if image else None
    result = scores_at_labels(raster, truth, image=scene, positive_classes=list(positive) or None,
                              negative_classes=list(negative) or None)  # fmt: skip
    threshold = result.threshold if score_threshold is None else score_threshold
    notes = [result.report]
    if score_threshold is None and threshold is not None:
        notes.append(
            f"precision, recall and F1 at {threshold:g}, the threshold in force when "
            "screened (recorded in the raster); --score-threshold chooses another"
        )
    elif threshold is None:
        notes.append("the raster records no threshold: ranking only (--score-threshold "
                     "gives precision, recall and F1)")  # fmt: skip
    missing = {k: v for k, v in result.left_out.items() if v}
    if missing:
        notes.append("labels left out: " + ", ".join(f"{n} {k}" for k, n in missing.items()))
    for line in notes:
        click.echo(f"geoscreen: note: {line}", err=True)
    m = label_metrics(result, threshold, n_boot=bootstrap, seed=seed)
    extra = {"inputs": {"predicted": raster, "truth": truth, "image": image,
                        "kind": "score raster at labels"}, "notes": notes}  # fmt: skip
    paths = write_label_report(result, m, out, title=f"Evaluation of {Path(raster).name}",
                               extra=extra)  # fmt: skip
    if as_json:
        files = {k: str(v) for k, v in paths.items()}
        click.echo(json.dumps(json_safe({**m, **extra, "files": files}), indent=2))
        return
    interval = m["average_precision_interval"]
    ci = f" (95% {interval[0]:.3f}-{interval[1]:.3f})" if interval else ""
    line = (f"scores at {m['labels']} labels ({m['positives']} positive): AP "
            f"{m['average_precision']:.3f}{ci} against a positive rate of "
            f"{m['positive_rate']:.3f}, ROC AUC {m['roc_auc']:.3f}")  # fmt: skip
    if threshold is not None:
        line += (f"; at {threshold:g}: precision {m['precision']:.3f}, recall "
                 f"{m['recall']:.3f}, F1 {m['f1']:.3f}")  # fmt: skip
    click.echo(f"{line} -> {paths['report']}")


class Steps:
    """A bar of named steps on stderr for a command that works silently for seconds: shown
    only on a terminal and once the command has run 2 s; cleared when the command ends."""

    def __init__(self, command: str, names: list[str]) -> None:
        from tqdm import tqdm

        self._command, self._names, self._at = command, names, 0
        self._bar = tqdm(total=len(names), desc=f"{command}: {names[0]}", unit="step",
                         delay=2, leave=False, disable=None)  # fmt: skip
        click.get_current_context().call_on_close(self._bar.close)

    def next(self) -> None:
        """The current step is done."""
        self._at += 1
        if self._at < len(self._names):
            self._bar.set_description_str(f"{self._command}: {self._names[self._at]}")
        self._bar.update()

    def close(self) -> None:
        """Clear the bar (before the command's own output)."""
        self._bar.close()


def _missed_points_inside_sites(ev: Evaluation) -> int:
    """How many point truth objects were missed although a site polygon covers them."""
    from geoscreen.evaluate.metrics import FN

    truth, sites = ev.truth, ev.predicted
    missed = truth[(truth["outcome"] == FN) & (truth.geom_type == "Point")]
    areal = sites[sites.geom_type.isin(("Polygon", "MultiPolygon"))]
    if missed.empty or areal.empty:
        return 0
    return int(missed.geometry.intersects(areal.geometry.union_all()).sum())


def _regions(path: str) -> gpd.GeoDataFrame:
    import geopandas as gpd
    import pyogrio.errors

    try:
        frame = gpd.read_file(path, engine="pyogrio")
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        raise InputError(f"cannot read the regions ({str(exc).splitlines()[0][:120]})",
                         where=path, fix="Give a polygon vector file.") from None  # fmt: skip
    return frame
