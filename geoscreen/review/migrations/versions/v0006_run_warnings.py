"""Warnings a run recorded about its scene: ``runs.warnings``.

A scan whose scene lies far from where the model was trained, or whose band
statistics are far from the training data's (:mod:`geoscreen.imagery.region`),
records those warnings (a JSON list of lines) with the run, and the review page marks
the candidates that run found. Runs loaded before this revision, and runs without
warnings, keep NULL.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the nullable column."""
    op.add_column("runs", sa.Column("warnings", sa.Text))


def downgrade() -> None:
    """Not supported (see revision 0001)."""
    raise NotImplementedError("the review store cannot be downgraded")
