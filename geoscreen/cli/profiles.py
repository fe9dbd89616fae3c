"""``geoscreen profile``: check and read screening profiles."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import click

from geoscreen.cli.app import cli
from geoscreen.cli.options import json_option

if TYPE_CHECKING:  # pydantic and the imagery stack load when a command runs
    from geoscreen.profiles import Profile


@cli.group()
def profile() -> None:
    """Screening profiles: what to look for, on which imagery, with which model."""


@profile.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--image", "images", multiple=True, metavar="SCENE",
              help="Also check that this scene fits: sensor, bands, indices, pixel size "
                   "(repeatable).")  # fmt: skip
def validate(file: Path, images: tuple[str, ...]) -> None:
    """Check a profile file; prints 'ok: NAME VERSION' or the problems (exit 2).

    With --image, the profile is also checked against the file in hand, as screening
    would: the bands and the inputs of every index must resolve on it.
    """
    from geoscreen.imagery.preprocess import ScenePreprocessor
    from geoscreen.imagery.scene import open_scene
    from geoscreen.profiles import check_scene, load_profile

    loaded = load_profile(file)
    fits: list[str] = []
    for image in images:
        scene = open_scene(image, sensor=loaded.imagery.sensor)
        for note in check_scene(loaded, scene):
            click.echo(f"geoscreen: warning: {Path(image).name}: {note}", err=True)
        built = ScenePreprocessor.build(loaded.preprocess, scene)
        fits.append(f"{Path(image).name} ({', '.join(built.channel_names)})")
    suffix = f"; fits {'; '.join(fits)}" if fits else ""
    click.echo(f"ok: {loaded.name} {loaded.version}{suffix}")


@profile.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@json_option
def show(file: Path, as_json: bool) -> None:
    """Summarise a profile for people reviewing it."""
    from geoscreen.profiles import load_profile

    loaded = load_profile(file)
    if as_json:
        payload = {
            "source": str(loaded.source_path),
            "fingerprint": loaded.fingerprint(),
            "profile": loaded.to_dict(),
        }
        click.echo(json.dumps(payload, indent=2))
        return
    click.echo(summary(loaded))


def summary(p: Profile) -> str:
    """A few readable lines describing a profile."""
    img, pre, model = p.imagery, p.preprocess, p.model
    low, high = img.resolution_m or (0.0, 0.0)
    resolution = "any" if not high else f"{low:g} m" if low == high else f"{low:g}-{high:g} m"
    weights = p.weights_location()
    if weights is None:
        weights_text = "none yet (train with labelled examples first)"
    else:
        sha = model.weights_sha256
        weights_text = f"{weights}" + (f" (sha256 {sha[:12]}...)" if sha else "")
    norm = pre.normalization
    lines = [
        f"{p.name} {p.version}",
        *textwrap.wrap(p.description, width=88, initial_indent="  ", subsequent_indent="  "),
        f"imagery:     sensor {img.sensor or 'any'}, bands {_join(img.bands)}, "
        f"pixel size {resolution}",
        f"tiles:       {p.tiling.tile_size} px, overlap {p.tiling.overlap} px",
        f"preprocess:  bands {_join(pre.bands)}, "
        f"indices {','.join(pre.indices) if pre.indices else 'none'}, normalisation {norm.method}",
        f"model:       {model.task}, backbone {model.backbone}, "
        f"{p.input_channels or 'all'} input channels",
        f"weights:     {weights_text}",
        *_detection_lines(p),
        f"threshold:   {_threshold_text(p)}",
        f"labels:      {_label_rule(p)}",
        f"sites:       min area {p.sites.min_area_m2:g} m2, "
        f"merge within {p.sites.merge_distance_m:g} m",
        f"aoi:         {p.resolve_path(p.aoi) if p.aoi else 'none'}; "
        f"exclusions: {len(p.exclusions) or 'none'}",
        f"review:      second reviewer to escalate: "
        f"{_yes(p.review.escalation_requires_second_reviewer)}; "
        f"reason required: {_yes(p.review.reason_required)}",
        "evidence:    chips kept "
        + (
            f"{p.review.retain_evidence_days} days"
            if p.review.retain_evidence_days
            else "with no limit (no review.retain_evidence_days)"
        )
        + "; rejected ones until the next 'geoscreen review purge'",
        f"fingerprint: {p.fingerprint()}",
        f"file:        {p.source_path}",
        f"A score means only 'matches profile {p.name}'; people decide what a place is.",
    ]
    return "\n".join(lines)


def _detection_lines(p: Profile) -> list[str]:
    """What a detect profile finds, and with what (none for a tile classifier)."""
    d = p.detection
    if p.model.task != "detect" or d is None:
        return []
    what = (
        "scale-space blobs, fitted on the labels (no backbone: model.backbone and the "
        "weights are not used)"
        if d.architecture == "blobs"
        else f"{d.architecture} trained on the labels"
        + (f", a pair (colour rotation {d.paired_colour_rotation:g})"
           if d.paired_colour_rotation else "")
    )  # fmt: skip
    return [f"detector:    {what}; objects about {d.object_size_m:g} m, at most "
            f"{d.max_detections} per tile, scores below {d.score_threshold:g} dropped"]  # fmt: skip


def _label_rule(p: Profile) -> str:
    if p.labels is None:
        return "positive/negative (or 1/0, or a single class name) in the label files"
    negatives = ",".join(p.labels.negative_classes or []) or "every other class"
    return f"positive classes {','.join(p.labels.positive_classes)}; negatives {negatives}"


def _join(items: list[str] | None) -> str:
    return ",".join(items) if items else "all"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _threshold_text(p: Profile) -> str:
    """Which threshold screening applies with this profile, and when another does."""
    if p.model.task == "detect":
        if "threshold" in p.model_fields_set:
            return f"{p.threshold:g} (set here: in force over the model card's)"
        return (f"not set: the model card's (held-out F1-optimal) is in force; {p.threshold:g} "
                "for a card without one")  # fmt: skip
    return (f"{p.threshold:g} (in force when screening with a trained model, whose card "
            "suggests others; a similarity model screens at its own)")  # fmt: skip
