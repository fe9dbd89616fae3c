"""Profile rules recorded with each run, and the review rules a candidate follows.

A screening run records what its profile said (:func:`run_policy`): the decision
threshold and where it came from, and the ``review`` section. The workflow then
applies the review rules of the run that last saw a candidate (:func:`review_rules`),
so a profile that asks for no second reviewer gets none, and the audit log says which
profile version's rules applied. Candidates of runs that recorded no policy (loaded
from a file, or before store revision 0004) follow the strictest rules.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Connection, select

from geoscreen.profiles import Profile
from geoscreen.review.schema import candidates, runs


@dataclass(frozen=True)
class ReviewRules:
    """What a decision on a candidate needs, and which profile version said so."""

    reason_required: bool = True
    second_reviewer: bool = True
    profile: str | None = None
    profile_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (for the audit log)."""
        return asdict(self)


def run_policy(profile: Profile, threshold: float, threshold_source: str) -> dict[str, Any]:
    """What a run records of its profile's rules (``runs.policy``)."""
    return {
        "profile": profile.name,
        "profile_version": profile.version,
        "profile_fingerprint": profile.fingerprint(),
        "threshold": float(threshold),
        "threshold_source": threshold_source,
        "review": profile.review.model_dump(mode="json"),
        "aoi": profile.aoi,
        "exclusions": list(profile.exclusions),
    }


def review_rules(conn: Connection, candidate_id: int) -> ReviewRules:
    """The review rules of the run that last saw the candidate (strictest without one)."""
    row = conn.execute(
        select(runs.c.policy)
        .join(candidates, candidates.c.last_run_pk == runs.c.id)
        .where(candidates.c.id == candidate_id)
    ).first()
    policy = _parse(row.policy if row is not None else None)
    review = policy.get("review")
    if not isinstance(review, dict):
        return ReviewRules()
    return ReviewRules(
        reason_required=bool(review.get("reason_required", True)),
        second_reviewer=bool(review.get("escalation_requires_second_reviewer", True)),
        profile=policy.get("profile"),
        profile_version=policy.get("profile_version"),
    )


def _parse(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
