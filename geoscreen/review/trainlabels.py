"""Reviewed candidates as training labels, and how many decisions a model has not seen.

Analysts' decisions are labels: confirmed and escalated candidates are positives,
rejected ones negatives (the hard negatives the model scored high); ``new``,
``in_review`` and ``needs_imagery`` say nothing yet and are left out. The labels go to
a GeoJSON file (EPSG:4326, a ``label`` column) that the training code reads like any
other label file, so this stage never imports vision. For a classifier each candidate
is a point inside its site (the training chip is centred there); for a detector
(``outlines``) it is the site's outline, whose box the detector learns (rejected ones
are background: no box there). Training from the store is
recorded in the audit log (action :data:`TRAIN_ACTION`); "decisions since the current
model" counts the status changes of the profile after that entry.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import shapely
from sqlalchemy import ColumnElement, and_, func, or_, select

from geoscreen.fileio import atomic_write
from geoscreen.review.schema import audit_head, audit_log, candidates, scenes
from geoscreen.review.store import Store

POSITIVE_STATUSES = ("confirmed", "escalated")
NEGATIVE_STATUSES = ("rejected",)
TRAIN_ACTION = "train_model"
DECISION_ACTION = "status"


def label_decision() -> ColumnElement[bool]:
    """Audit entries of a decision that makes a training label: a status change to
    confirmed, escalated or rejected (claiming a candidate, "in_review", teaches nothing).
    Entries are canonical JSON, so the new status reads ``"status":"<name>"``."""
    statuses = (*POSITIVE_STATUSES, *NEGATIVE_STATUSES)
    return and_(
        audit_log.c.action == DECISION_ACTION,
        or_(*(audit_log.c.after.like(f'%"status":"{s}"%') for s in statuses)),
    )


@dataclass
class ReviewLabels:
    """What :func:`write_review_labels` wrote: counts, reviewers, scenes, audit position."""

    path: Path
    profile: str
    positives: int = 0
    negatives: int = 0
    by_reviewer: dict[str, int] = field(default_factory=dict)
    candidate_ids: list[int] = field(default_factory=list)
    scene_paths: list[Path] = field(default_factory=list)
    missing_scenes: list[str] = field(default_factory=list)
    audit_seq: int = 0

    @property
    def total(self) -> int:
        return self.positives + self.negatives

    def top_reviewer(self) -> tuple[str, float]:
        """The reviewer who made the most labels and their share (``("", 0.0)`` if none)."""
        if not self.by_reviewer:
            return "", 0.0
        name, count = Counter(self.by_reviewer).most_common(1)[0]
        return name, count / max(self.total, 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML-ready (for the model card and the audit entry)."""
        return {
            "profile": self.profile,
            "positives": self.positives,
            "negatives": self.negatives,
            "by_reviewer": dict(sorted(self.by_reviewer.items())),
            "candidates": len(self.candidate_ids),
            "scenes": len(self.scene_paths),
            "scenes_missing": list(self.missing_scenes),
            "up_to_audit_seq": self.audit_seq,
        }


def write_review_labels(
    store: Store,
    profile: str,
    out_path: str | Path,
    *,
    positive_label: str = "positive",
    negative_label: str = "negative",
    scene_roots: tuple[Path, ...] = (),
    outlines: bool = False,
) -> ReviewLabels:
    """Write the reviewed candidates of ``profile`` as a label GeoJSON; return what was used.

    One read transaction, so the labels and the audit position they are "up to" agree.
    Scene files are found from the paths the store recorded when runs were loaded.
    With ``outlines`` each label is the site's outline instead of a point inside it.
    """
    import geopandas as gpd

    out = Path(out_path)
    result = ReviewLabels(path=out, profile=profile)
    wanted = (*POSITIVE_STATUSES, *NEGATIVE_STATUSES)
    query = (
        select(
            candidates.c.id,
            candidates.c.status,
            candidates.c.status_changed_by,
            candidates.c.scene_id,
            candidates.c.geom_wkb,
        )
        .where(candidates.c.profile == profile, candidates.c.status.in_(wanted))
        .order_by(candidates.c.id)
    )
    with store.read() as conn:
        rows = conn.execute(query).all()
        result.audit_seq = int(conn.execute(select(audit_head.c.seq)).scalar() or 0)
        scene_ids = sorted({r.scene_id for r in rows if r.scene_id})
        uris = dict(
            conn.execute(
                select(scenes.c.scene_id, scenes.c.uri).where(scenes.c.scene_id.in_(scene_ids))
            ).all()
        )
    labels, geoms, reviewers, ids = [], [], [], []
    for row in rows:
        positive = row.status in POSITIVE_STATUSES
        labels.append(positive_label if positive else negative_label)
        # A classifier gets a point inside the site, not its outline: an outline touching
        # the edge of its scene would also be read, clipped, onto the neighbouring scene.
        # A detector needs the outline (its box); the part on a neighbour is an object there.
        outline = shapely.from_wkb(row.geom_wkb)
        geoms.append(outline if outlines else shapely.point_on_surface(outline))
        reviewers.append(row.status_changed_by or "unknown")
        ids.append(int(row.id))
        result.positives += positive
        result.negatives += not positive
    result.by_reviewer = dict(Counter(reviewers))
    result.candidate_ids = ids
    for scene_id in scene_ids:
        found = store.locate(uris.get(scene_id), scene_roots)
        if found is None:
            result.missing_scenes.append(scene_id)
        else:
            result.scene_paths.append(found)
    frame = gpd.GeoDataFrame(
        {"label": labels, "candidate_id": ids, "reviewer": reviewers},
        geometry=geoms,
        crs="EPSG:4326",
    )
    atomic_write(out, lambda tmp: frame.to_file(tmp, driver="GeoJSON"))
    return result


def last_training(store: Store, profile: str) -> dict[str, Any] | None:
    """The newest training-from-store audit entry of ``profile`` (seq, at, actor, model)."""
    query = (
        select(audit_log.c.seq, audit_log.c.at, audit_log.c.actor, audit_log.c.model_sha256)
        .where(audit_log.c.action == TRAIN_ACTION, audit_log.c.profile == profile)
        .order_by(audit_log.c.seq.desc())
        .limit(1)
    )
    with store.read() as conn:
        row = conn.execute(query).first()
    return dict(row._mapping) if row is not None else None


def decisions_since(store: Store, profile: str, seq: int = 0) -> int:
    """How many label-making decisions (:func:`label_decision`) on ``profile``'s
    candidates came after audit entry ``seq``."""
    query = select(func.count()).where(
        label_decision(),
        audit_log.c.profile == profile,
        audit_log.c.seq > seq,
    )
    with store.read() as conn:
        return int(conn.execute(query).scalar_one())
