"""Train a profile's model from the review store: analysts' decisions become labels.

``geoscreen train PROFILE --from-store DB --out DIR`` (optionally with label files and
more imagery): the review stage writes the reviewed candidates as a label GeoJSON
(:func:`geoscreen.review.trainlabels.write_review_labels`), the scenes come from the
paths the store recorded, and the profile's task (:mod:`geoscreen.vision.task`) trains
on all of it: a classifier on points inside the sites, a detector on their outlines
(confirmed and escalated ones are boxes; rejected ones are background, no box there).
Rejections are hard negatives: the classifier weighs each one ``hard_negative_weight``
random background chips; the detector cuts a background chip around each every epoch.
The card gets a ``provenance`` section (labels from files and from reviews,
by whom, up to which audit entry) and the store an audit entry with the new model's
hash, so every label the model learned from traces back to a person's decision.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from geoscreen.errors import InputError
from geoscreen.profiles import Profile
from geoscreen.vision.folds import MIN_POSITIVES as FOLD_MIN_POSITIVES

MIN_POSITIVES = FOLD_MIN_POSITIVES  # what blocked cross-validation needs at the least
MIN_NEGATIVES = FOLD_MIN_POSITIVES  # hard negatives: as many, or the model learns background
DOMINANT_SHARE = 0.8  # warn when one reviewer made more than this share of the labels
REVIEW_LABELS = "review store"


def train_from_store(
    profile: Profile,
    db: str,
    out_dir: str | Path,
    *,
    labels: Sequence[str | Path] = (),
    imagery: Sequence[str | Path] = (),
    opts: Any = None,
    request: Any = None,
    actor: str | None = None,
    progress: Callable[[str], None] | None = None,
    min_positives: int = MIN_POSITIVES,
    min_negatives: int = MIN_NEGATIVES,
) -> dict[str, Any]:
    """Train from the store's reviewed candidates (plus any label files); returns the card.

    ``request`` is a :class:`~geoscreen.vision.task.TrainRequest` (the CLI's knobs);
    ``opts`` the task's own options, which replace those the request gives.

    Refuses (:class:`InputError`) when the reviews give fewer than ``min_positives``
    positives or ``min_negatives`` negatives and no label file is given, when no
    reviewed candidate exists, and when no scene file can be found.
    """
    from geoscreen.review import audit
    from geoscreen.review.store import open_store
    from geoscreen.review.trainlabels import write_review_labels
    from geoscreen.review.users import local_actor
    from geoscreen.vision.modeldir import CARD_FILE, CARD_MARKDOWN, write_card
    from geoscreen.vision.task import TrainRequest, task_for

    say = progress or (lambda _msg: None)
    task = task_for(profile)
    request = request or TrainRequest()
    who = actor or local_actor()
    pos_name, neg_name = _label_names(profile, opts, request)
    with open_store(db) as store, tempfile.TemporaryDirectory(prefix="geoscreen-") as tmp:
        path = Path(tmp) / "review_labels.geojson"
        reviewed = write_review_labels(
            store, profile.name, path, positive_label=pos_name, negative_label=neg_name,
            outlines=task.name == "detect",
        )  # fmt: skip
        _check_counts(reviewed.positives, reviewed.negatives, bool(labels), store.display,
                      min_positives, min_negatives)  # fmt: skip
        say(
            f"review store {store.display}: {reviewed.positives} positive and "
            f"{reviewed.negatives} negative labels from {len(reviewed.by_reviewer)} "
            f"reviewer(s), up to audit entry {reviewed.audit_seq}"
        )
        top, share = reviewed.top_reviewer()
        if share > DOMINANT_SHARE and len(reviewed.by_reviewer) >= 1 and reviewed.total:
            say(
                f"warning: {top} made {reviewed.by_reviewer[top]} of {reviewed.total} review "
                f"labels ({share:.0%}): the model learns one person's judgement; ask a second "
                "reviewer to decide some candidates"
            )
        for scene_id in reviewed.missing_scenes:
            say(f"warning: scene {scene_id}: its file is not where the store recorded it; skipped")
        scenes = _unique([*map(Path, imagery), *reviewed.scene_paths])
        if not scenes:
            raise InputError(
                "no scene file of the reviewed candidates can be found",
                where=store.display,
                fix="Give the scenes with --imagery.",
            )
        # Rejections are hard negatives: the classifier weighs them (hard_negative_weight),
        # the detector cuts a background chip around each one every epoch.
        hard = (str(path),)
        if task.name == "detect" and request.hard_negative_weight is not None:
            say("warning: a detector does not weigh rejections (--hard-negative-weight); "
                "each rejected outline gets a background chip every epoch instead")  # fmt: skip
        request = replace(request, hard_negative_labels=hard)
        if opts is not None:
            opts = opts.model_copy(update={"hard_negative_labels": list(hard)})
        task.train(profile, [*labels, path], scenes, out_dir, request, progress, options=opts)
        out = Path(out_dir)
        card = yaml.safe_load((out / CARD_FILE).read_text(encoding="utf-8"))
        page = (out / CARD_MARKDOWN).read_text(encoding="utf-8")
        card["provenance"] = _provenance(card, path, reviewed.to_dict(), store.display, who)
        for record in card.get("data", {}).get("labels", []):
            if record.get("path") == str(path):
                record["path"] = f"{REVIEW_LABELS} {store.display}"
        options = card.get("training", {}).get("options", {})
        if options.get("hard_negative_labels") == list(hard):  # a temporary file's name
            options["hard_negative_labels"] = [f"{REVIEW_LABELS} {store.display}"]
        entry = audit.log(
            store,
            actor=who,
            action="train_model",
            entity="model",
            entity_id=card["model_sha256"],
            after={"out": str(out), **card["provenance"]},
            profile=profile.name,
            profile_version=profile.version,
            model_sha256=card["model_sha256"],
        )
        card["provenance"]["audit_entry"] = entry.seq
        page = page.replace(str(path), f"{REVIEW_LABELS} {store.display}")
        write_card(out, card, page.rstrip("\n") + "\n" + provenance_markdown(card))
    return dict(card)


def _label_names(profile: Profile, opts: Any, request: Any) -> tuple[str, str]:
    """Class names the review labels carry, so the profile's class rules count them right."""
    rules = profile.labels
    positive = (getattr(opts, "positive_classes", None) or list(request.positive)
                or (rules.positive_classes if rules else None))  # fmt: skip
    negative = (getattr(opts, "negative_classes", None) or list(request.negative)
                or (rules.negative_classes if rules else None))  # fmt: skip
    return (positive[0] if positive else "positive", negative[0] if negative else "negative")


def _check_counts(
    positives: int, negatives: int, with_files: bool, where: str, min_pos: int, min_neg: int
) -> None:
    if positives + negatives == 0:
        raise InputError(
            "no reviewed candidate of this profile (confirmed, escalated or rejected)",
            where=where,
            fix="Review candidates first ('geoscreen review set'), or train from --labels.",
        )
    if with_files:
        return
    if positives < min_pos or negatives < min_neg:
        raise InputError(
            f"too few reviewed labels to train on: {positives} positive (confirmed or "
            f"escalated; need {min_pos}) and {negatives} negative (rejected; need {min_neg})",
            where=where,
            fix="Review more candidates, or add labelled examples with --labels.",
        )


def _unique(paths: Sequence[Path]) -> list[Path]:
    seen: set[Path] = set()
    out = []
    for path in paths:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            out.append(path)
    return out


def _provenance(
    card: dict[str, Any], review_path: Path, reviews: dict[str, Any], store: str, who: str
) -> dict[str, Any]:
    """Labels from files versus reviews; the reviews by person and audit position."""
    records = card.get("data", {}).get("labels", [])
    chipped = {s["id"] for s in card.get("data", {}).get("scenes", [])}  # scenes that gave chips
    files = [r for r in records if r["path"] != str(review_path)]
    used = [r for r in records if r["path"] == str(review_path) and r["scene_id"] in chipped]

    def count(r: dict[str, Any], kind: str) -> int:  # a detector's records count objects
        return int(r.get(kind, r.get("objects", 0) if kind == "positives" else 0))

    return {
        "trained_by": who,
        "store": store,
        "from_files": {
            "files": sorted({r["path"] for r in files}),
            "positives": sum(count(r, "positives") for r in files),
            "negatives": sum(count(r, "negatives") for r in files),
        },
        "from_reviews": {
            **reviews,
            "positives_used": sum(count(r, "positives") for r in used),
            "negatives_used": sum(count(r, "negatives") for r in used),
        },
    }


def provenance_markdown(card: dict[str, Any]) -> str:
    """``## Provenance`` for MODEL_CARD.md."""
    prov = card.get("provenance")
    if not prov:
        return ""
    files, reviews = prov["from_files"], prov["from_reviews"]
    people = ", ".join(f"{k} {v}" for k, v in reviews["by_reviewer"].items()) or "none"
    lines = [
        "",
        "## Provenance",
        f"- from label files: {files['positives']} positive, {files['negatives']} negative "
        f"({len(files['files'])} file(s); counted per scene they fall on)",
        f"- from reviews in {prov['store']}: {reviews['positives']} positive (confirmed or "
        f"escalated), {reviews['negatives']} negative (rejected), up to audit entry "
        f"{reviews['up_to_audit_seq']}; by reviewer: {people}",
        f"- used on the scenes: {reviews['positives_used']} positive, "
        f"{reviews['negatives_used']} negative (a scene without any positive label gives no "
        "chips, so its rejections are not used)",
        f"- trained by {prov['trained_by']}; recorded as audit entry {prov.get('audit_entry')}",
    ]
    hard = card.get("hard_negatives")
    if hard:
        if "weight" in hard:
            share = hard["of_negative_weight"]
            how = (
                f"each weighing {hard['weight']:g} random background chips "
                f"({share:.0%} of the negatives' training weight)"
            )
        else:
            how = "each given a background chip around it every epoch (not weighted)"
        lines.insert(-1, f"- hard negatives (rejected candidates): {hard['chips']}, {how}")
    return "\n".join(lines) + "\n"
