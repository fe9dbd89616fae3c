"""Candidates a newer model no longer finds: ``candidates.below_run_pk`` and
``candidates.below_model_sha256``.

When a run re-screens a scene and does not find a candidate that an earlier run found
in that scene (its model, or the profile's threshold, no longer puts the place at or
above the threshold), the candidate is flagged with that run and its model hash instead
of being deleted; its decisions and score history (``detections``) stay. A later run
that finds it again clears the flag. Candidates loaded before this revision keep both
NULL (not flagged).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the two nullable flag columns."""
    op.add_column("candidates", sa.Column("below_run_pk", sa.Integer))
    op.add_column("candidates", sa.Column("below_model_sha256", sa.String(64)))


def downgrade() -> None:
    """Not supported (see revision 0001)."""
    raise NotImplementedError("the review store cannot be downgraded")
