"""Which model gave which score, and how much the current model has not yet learned.

The candidate panel shows every run's score of a candidate with the model (short hash)
and profile version that gave it, newest first, so a reviewer sees when a retrained
model changed its mind. Supervisors also see how many decisions on the profile came
after its newest training from the store, and the command that retrains with them;
analysts do not (retraining is a supervisor's call). Counting reads the audit log
incrementally (:class:`ModelWatch`), counting what ``geoscreen review list`` counts.
"""

from __future__ import annotations

import shlex
import threading
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import or_, select

from geoscreen.review.schema import audit_head, audit_log
from geoscreen.review.store import Store
from geoscreen.review.trainlabels import TRAIN_ACTION, label_decision

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


@dataclass
class _Since:
    train_seq: int = 0  # the newest training-from-store entry of the profile (0: none)
    model_sha256: str | None = None
    decisions: int = 0  # status entries of the profile after it


class ModelWatch:
    """Decisions per profile since its newest training from the store, kept up to date.

    Counting anew on every request scans the whole audit log (every evidence view is an
    entry: about 90 ms at 200,000 entries on SQLite), too slow for a review round trip.
    The log only grows, so this reads each entry once: on each call only the entries
    after the head it last saw (a range of the primary key). A head that went back (the
    store was restored) starts over. Counts the same entries as
    :func:`geoscreen.review.trainlabels.decisions_since`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen = 0
        self._by_profile: dict[str, _Since] = {}

    def since_model(self, store: Store, profile: str) -> dict[str, Any]:
        """Decisions on ``profile`` after its newest training from the store (all, if
        none yet), and the command to retrain (the store named without a password)."""
        with self._lock:
            self._catch_up(store)
            found = self._by_profile.get(profile, _Since())
        model = found.model_sha256
        command = (
            f"geoscreen train PROFILE.yaml --from-store {shlex.quote(store.display)} "
            "--out NEW_MODEL_DIR"
        )
        return {
            "profile": profile,
            "decisions": found.decisions,
            "model_audit_seq": found.train_seq or None,
            "model_sha256": model,
            "model_short": model[:SHORT] if model else None,
            "command": command,
        }

    def _catch_up(self, store: Store) -> None:
        with store.read() as conn:
            head = int(conn.execute(select(audit_head.c.seq)).scalar() or 0)
            if head == self._seen:
                return
            seen = self._seen if head > self._seen else 0  # else: restored, start over
            counts = {p: replace(s) for p, s in self._by_profile.items()} if seen else {}
            rows = conn.execute(
                select(
                    audit_log.c.seq, audit_log.c.action, audit_log.c.profile,
                    audit_log.c.model_sha256,
                )
                .where(
                    audit_log.c.seq > seen,
                    audit_log.c.seq <= head,
                    or_(audit_log.c.action == TRAIN_ACTION, label_decision()),
                    audit_log.c.profile.is_not(None),
                )
                .order_by(audit_log.c.seq)
            )  # fmt: skip
            for seq, action, profile, model in rows:
                if action == TRAIN_ACTION:
                    counts[profile] = _Since(int(seq), model)
                else:
                    counts.setdefault(profile, _Since()).decisions += 1
        self._seen, self._by_profile = head, counts  # all or nothing
