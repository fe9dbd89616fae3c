"""Model cards of detectors: the machine-readable card, its Markdown page, later evaluations.

A detector's model directory has the layout of a classifier's
(:mod:`geoscreen.vision.modeldir`): ``model.pt``, ``model.yaml`` (this card) and
``MODEL_CARD.md``; the sections both cards share come from :mod:`geoscreen.vision.cards`.
:func:`record_evaluation` adds results on other imagery to both files without touching
the weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from geoscreen.errors import InputError
from geoscreen.profiles import Profile
from geoscreen.vision.cards import (
    HELD_OUT_LIMIT,
    data_lines,
    limits_lines,
    model_card,
    split_lines,
    training_record,
)
from geoscreen.vision.detect_baselines import cue_text
from geoscreen.vision.detect_metrics import RECALL_KEY, RECALL_TARGETS
from geoscreen.vision.detector import DetectorConfig
from geoscreen.vision.modelcard import DetectCard, EvaluationRecord, TrainingRecord, read_card
from geoscreen.vision.modeldir import CARD_FILE, write_card

if TYPE_CHECKING:
    from geoscreen.vision.detect_scenes import DetectionData
    from geoscreen.vision.detect_train import DetectTrainOptions


def detection_card(
    profile: Profile,
    config: DetectorConfig,
    data: DetectionData,
    objects: tuple[int, int],
    metrics: dict[str, float],
    history: dict[str, Any],
    opts: DetectTrainOptions,
    device: torch.device,
    seconds: float,
    threshold: float,
    refitted: bool | None = None,
    tta_threshold: float | None = None,
    blobs: dict[str, Any] | None = None,
) -> DetectCard:
    """The machine-readable model card of a detector.

    ``objects``: (training, validation) objects of the selection phase; ``threshold``:
    the held-out F1-optimal score threshold, which ``screen`` applies unless the profile
    sets its own; ``refitted``: whether the weights are the model refitted on every label
    (default: ``opts.refit``; False when the refit did not train and the selection model
    was kept); ``tta_threshold``: the same for the boxes fused over the 8 flips/rotations
    (``screen --tta``); ``blobs``: the fitted blobs of a blob detector (it has no backbone).
    """
    n_train, n_val = objects
    chosen = (
        "choose the threshold" + ("" if blobs else " (every planned epoch run)")
        if blobs or opts.epoch_choice == "fixed"
        else "choose the epochs and the threshold"
    )
    refit = bool(opts.refit if refitted is None else refitted)
    kept_selection = bool(opts.refit) and not refit  # the refit did not train
    kept_limit = [
        "The model refitted on every label did not train from two seeds (see "
        "training.refit_check): these are the weights of the selection model, trained "
        f"on {n_train} of the {data.objects} objects."
    ] if kept_selection else []  # fmt: skip
    card = model_card(
        profile,
        task="detect",
        output_meaning=f"boxes of objects matching screening profile '{profile.name}', "
        "each with a score",
        model={"detector": config.to_card() | ({"blobs": blobs} if blobs else {})},
        spec=config.backbone,
        stats=(config.mean, config.std),
        data=data,
        split={
            "method": "spatially blocked",
            "description": f"a strip of {opts.val_fraction:.0%} of each scene held out to "
            + chosen
            + ("; the model was then refitted on every label" if refit else "")
            + (
                "; the refit did not train, so these are the selection model's weights"
                if kept_selection
                else ""
            ),
            "train_objects": n_train,
            "val_objects": n_val,
            "objects": data.objects,
            "refit_on_all": refit,
            "seed": opts.seed,
        },
        metrics=metrics,
        training=training_record(opts, device, seconds, history),
        limits=[
            *kept_limit,
            HELD_OUT_LIMIT,
            f"Trained on {data.objects if refit else n_train} labelled objects: small data, "
            "wide uncertainty. "
            + (
                "Blobs tell round things of one colour and size from their ground, not one "
                "kind of round thing from another, and only where the labels' cue holds: "
                "screen the place the labels come from (fitted on one NEON crop of "
                "Yellowstone, they found another crop's crowns 13 km away at AP 0.08; "
                "README)."
                if blobs
                else "Published detectors of this kind learn from tens of thousands."
            ),
            (
                f"Blob sizes fit the labels' sizes at {config.resolution_m:g} m per pixel"
                if blobs
                else f"Anchors fit objects of about {config.object_size_m:g} m at "
                f"{config.resolution_m:g} m per pixel"
            )
            + "; other pixel sizes need retraining.",
            "Boxes are candidates for human review; a detection is not a finding.",
        ],
    )
    for record, window in zip(card["data"]["scenes"], data.windows, strict=True):
        if window is not None:  # read in part: where the labels are (train_area)
            record["window"] = list(window)
    if any(w is not None for w in data.windows):
        card["limits"].append(
            "Scenes marked with a window were trained on their labels' extent only: the "
            "model learnt nothing of the rest of them, objects or background."
        )
    card["threshold"] = round(float(threshold), 4)
    card["threshold_source"] = f"held-out F1-optimal (IoU {opts.eval_iou:g})"
    if tta_threshold is not None:
        card["tta_threshold"] = round(float(tta_threshold), 4)
    return DetectCard.model_validate(card)


def _tta_threshold_line(card: DetectCard) -> list[str]:
    if card.tta_threshold is None:  # cards before session 21
        return []
    return [f"- decision threshold with `--tta` (the 8 flips/rotations fused): "
            f"{card.tta_threshold} (chosen on the same strips)"]  # fmt: skip


def _model_lines(card: DetectCard) -> list[str]:
    """What the model is: a trained detector over its backbone, or fitted blobs."""
    d, b, blobs = card.detector, card.backbone, card.detector.blobs
    size = (
        f"- object size {d.object_size_m:g} m = {d.object_size_px:g} px at "
        f"{d.resolution_m:g} m per pixel"
    )
    if blobs is not None:
        lo, hi = (blobs.width * 2 * math.sqrt(2) * s for s in blobs.sigmas)
        return [
            f"- scale-space blobs (no backbone, fitted, not trained) of the cue "
            f"`{blobs.cue}` over the bands {blobs.bands}: LoG maxima at scales spanning the "
            f"labels' sizes, boxes {lo:.0f}-{hi:.0f} px wide (width factor {blobs.width:g}); "
            f"scores: Platt calibration of the blob strength (slope "
            f"{blobs.calibration[0]:.3g}, intercept {blobs.calibration[1]:.3g})",
            size,
        ]
    assert b is not None  # the card's validation requires it
    return [
        f"- {d.architecture} on a feature pyramid (strides {d.strides}) over "
        f"`{b.name}`, {b.in_channels} input channels, "
        f"pretrained weights: `{b.weights or 'none'}`",
        f"{size}; anchor sizes (px) per level: {d.anchor_sizes}",
    ]


def render_detection_card(card: DetectCard) -> str:
    """A readable model card (``MODEL_CARD.md``) from the machine-readable one."""
    d, split, training = card.detector, card.split, card.training
    lines = [
        f"# Model card: {card.profile.name} v{card.profile.version} (detector)",
        "",
        "Output: boxes of objects that **match the screening profile**, each with a score. "
        "They are candidates for human reviewers, not findings about any place or person.",
        "",
        "## Model",
        *_model_lines(card),
        f"- tiles {d.tile_size} px; at most {d.max_detections} detections per tile; "
        f"NMS IoU {d.nms_iou:g}; scores below {d.score_threshold:g} dropped",
        f"- decision threshold (precision/recall below): {card.threshold} "
        f"({card.threshold_source or 'profile'}; a threshold set in the profile wins)",
        *_tta_threshold_line(card),
        *_training_lines(training),
        f"- profile fingerprint `{card.profile.fingerprint or '?'}`",
        "- model sha256: `{model_sha256}`",
        *data_lines(card),
        *split_lines(card),
        f"- objects: selection {split and split.train_objects} training, "
        f"{split and split.val_objects} held out; refit on all: {split and split.refit_on_all}",
        "",
        "## Metrics on the held-out strips",
        "",
        "Object-level, on the held-out strips, by the selection-phase model (the refitted "
        "model also trained on them; these numbers estimate it): AP with greedy matching in "
        "score order (recall over all objects); precision/recall/F1 of one-to-one matches "
        "at the decision threshold.",
        "",
    ]
    counts = ("val_tp@", "val_fp@", "val_fn@", "val_objects@", "val_detections@")
    for key, value in card.metrics.items():
        if key.startswith("for_recall_"):
            continue  # their own table
        shown = f"{int(value)}" if key.startswith(counts) else f"{value:.3f}"
        lines.append(f"- {key}: {shown}")
    lines += _recall_lines(card)
    lines += _baseline_lines(card)
    if card.evaluations:
        lines += [
            "",
            "## Evaluations on other imagery",
            "",
            "| imagery | objects | IoU | threshold | precision | recall | F1 | AP |",
            "|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {e.imagery} | {e.objects} | {e.iou:g} | {e.threshold:g} | "
            f"{e.precision:.3f} | {e.recall:.3f} | {e.f1:.3f} | "
            f"{e.average_precision:.3f} |"
            for e in card.evaluations
        ]
    lines += limits_lines(card)
    return "\n".join(lines) + "\n"


def _recall_lines(card: DetectCard) -> list[str]:
    """The thresholds that find a target share of the strips' objects (cards since
    session 22)."""
    iou = next((float(k.rsplit("@", 1)[1]) for k in card.metrics if k.startswith("for_recall_")),
               None)  # fmt: skip
    if iou is None:
        return []
    rows = []
    for target in RECALL_TARGETS:
        values = {w: card.metrics.get(RECALL_KEY.format(target=target, what=w, iou=iou))
                  for w in ("threshold", "precision", "recall", "f1")}  # fmt: skip
        if all(v is not None for v in values.values()):
            rows.append(f"| {target:g} | {values['threshold']:g} | {values['precision']:.3f} | "
                        f"{values['recall']:.3f} | {values['f1']:.3f} |")  # fmt: skip
    return [
        "",
        f"## Thresholds for a target recall (held-out strips, IoU {iou:g})",
        "",
        "The decision threshold above is F1-optimal: a miss and a false alarm weigh alike. "
        "To find more of the objects and review more boxes, set `threshold:` in the profile "
        "to one of these (the highest threshold that reaches each recall on the strips; "
        "another site's scores may be lower).",
        "",
        "| recall at least | threshold | precision | recall | F1 |",
        "|---|---|---|---|---|",
        *(rows or ["| (none reached) | | | | |"]),
    ]


def _baseline_lines(card: DetectCard) -> list[str]:
    """The model against the simple baselines, on the same held-out strips."""
    b = card.baselines
    if b is None:
        return []
    names = {
        "model": "**this detector** (selection model)",
        "pixel_peaks": "pixel peaks (per-pixel baseline)",
        "scale_space_blobs": f"scale-space blobs ({b.blob_cue or 'cue not recorded'})",
        "random_boxes": "random boxes (chance)",
    }
    lines = [
        "",
        "## Against baselines (same held-out strips)",
        "",
        f"| detector | AP@{b.iou:g} | best F1 | at threshold |",
        "| --- | --- | --- | --- |",
    ]
    for name, row in b.scores.items():
        lines.append(
            f"| {names.get(name, name)} | {row.ap:.3f} | {row.best_f1:.3f} | "
            f"{row.best_threshold:g} |"
        )
    verdict = "beats" if b.beats_pixel_baseline else "does NOT beat"
    lines += ["", f"The detector {verdict} the per-pixel baseline by the margin {b.margin:g}."]
    if b.beats_blob_baseline is not None:
        verdict = "beats" if b.beats_blob_baseline else "does NOT beat"
        lines.append(f"It {verdict} the scale-space blobs by the margin {b.margin:g}.")
    if b.scene_cues:
        each = "; ".join(cue_text(c.scene, c.cue, c.objects) for c in b.scene_cues)
        lines += ["", "What marks the objects of each training scene (scale-space blobs "
                  f"fitted on its labels alone): {each}."]  # fmt: skip
    return lines


def _training_lines(training: TrainingRecord | None) -> list[str]:
    if training is None:
        return []
    cpu = training.cpu_seconds if training.cpu_seconds is not None else "?"
    epochs = ("fitted, no epochs" if training.epochs_run is None
              else f"epochs {training.epochs_run} (best {training.best_epoch})")  # fmt: skip
    lines = [
        f"- device {training.device}; training time {training.seconds:.1f} s "
        f"(CPU time {cpu} s); {epochs}"
    ]
    if training.options.get("scene_balance"):
        lines.append(
            "- chips per epoch: every scene as many as the largest one (scene balance), not "
            "in proportion to its area"
        )
    for i, member in enumerate(training.members or []):
        lines.append(
            f"- model {i + 1} of {len(training.members or [])}: colour rotation on "
            f"{member['colour_rotation']:.0%} of the chips; alone, AP {member['strips_ap']:.3f} "
            "on the held-out strips (the boxes of all are fused)"
        )
    check = training.refit_check
    checks = (check or {}).get("members", [check] if check else [])
    for i, one in enumerate(checks):
        tried = ", ".join(f"seed {t['seed']}: {t['strips_ap']:.3f}" for t in one["seeds"])
        lines.append(
            f"- refit check{f' (model {i + 1})' if len(checks) > 1 else ''}, AP on the "
            f"held-out strips: selection model {one['selection_ap']:.3f}; refits {tried}; "
            f"kept: the {one['kept']} model"
        )
    if len(checks) > 1 and check is not None:
        lines.append(f"- kept for every model: the {check['kept']} models")
    return lines


def record_evaluation(
    model_dir: str | Path, entries: Sequence[dict[str, Any]], *, replace: bool = False
) -> DetectCard:
    """Add evaluations on other imagery to a model's card (``model.yaml`` and ``MODEL_CARD.md``).

    Each entry: ``imagery``, ``objects``, ``iou``, ``threshold``, ``precision``, ``recall``,
    ``f1``, ``average_precision`` (and anything else worth keeping); ``replace`` drops
    earlier ones. The weights, and so the model hash, do not change.
    """
    folder = Path(model_dir)
    card = read_card(folder / CARD_FILE)
    if not isinstance(card, DetectCard):
        raise InputError(
            "model.yaml is not the card of a detection model",
            where=str(folder / CARD_FILE),
            fix="Record evaluations of detectors only.",
        )
    earlier = [] if replace else card.evaluations
    card = card.model_copy(
        update={"evaluations": [*earlier, *(EvaluationRecord.model_validate(e) for e in entries)]}
    )
    page = render_detection_card(card).replace("{model_sha256}", str(card.model_sha256))
    write_card(folder, card, page)
    return card
