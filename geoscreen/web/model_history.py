"""Which model gave which score, and how much the current model has not yet learned.

The candidate panel shows every run's score of a candidate with the model (short hash)
and profile version that gave it, newest first, so a reviewer sees when a retrained
model changed its mind. Supervisors also see how many decisions on the profile came
after its newest training from the store, and the command that retrains with them;
analysts do not (retraining is a supervisor's call). Counting reads the audit log
through :mod:`geoscreen.review.trainlabels`, as ``geoscreen review list`` does.
"""

from __future__ import annotations

import shlex
from typing import Any

from geoscreen.review.store import Store
from geoscreen.review.trainlabels import decisions_since, last_training

SHORT = 12  # hex digits of a model hash shown to people (as the CLI does)


def score_history(store: Store, candidate_id: int) -> list[dict[str, Any]]:
    """Every run's score of the candidate, newest first, with the model's short hash."""
    entries = store.score_history(candidate_id)
    return [
        {
            **entry.to_dict(),
            "model_short": entry.model_sha256[:SHORT] if entry.model_sha256 else None,
            "text_line": entry.describe(),
        }
        for entry in reversed(entries)
    ]


def since_model(store: Store, profile: str) -> dict[str, Any]:
    """Decisions on ``profile`` after its newest training from the store (all, if none
    yet), and the command to retrain (the store named without a password)."""
    trained = last_training(store, profile)
    seq = int(trained["seq"]) if trained else 0
    model = trained["model_sha256"] if trained else None
    command = (
        f"geoscreen train PROFILE.yaml --from-store {shlex.quote(store.display)} "
        "--out NEW_MODEL_DIR"
    )
    return {
        "profile": profile,
        "decisions": decisions_since(store, profile, seq),
        "model_audit_seq": seq or None,
        "model_sha256": model,
        "model_short": model[:SHORT] if model else None,
        "command": command,
    }
