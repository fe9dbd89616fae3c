"""What each run applied: the nullable ``runs.threshold`` and ``runs.policy``.

``threshold`` is the decision threshold the run's sites were made with (the review
server orders its queue by it instead of guessing); ``policy`` is JSON of the profile
rules the run applied (threshold and where it came from, the review rules, the
profile's name, version and fingerprint), so the workflow follows the review rules of
the profile version that found a candidate. Runs loaded before this revision keep both
NULL: their candidates follow the strictest rules (a reason for every decision, a
second reviewer to escalate), as before.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``runs.threshold`` and ``runs.policy``."""
    op.add_column("runs", sa.Column("threshold", sa.Float))
    op.add_column("runs", sa.Column("policy", sa.Text))


def downgrade() -> None:
    """Not supported (see revision 0001)."""
    raise NotImplementedError("the review store cannot be downgraded")
