"""Audit entries keyed with a secret outside the store: the nullable ``audit_log.mac``.

Entries written before a key was configured keep ``mac`` NULL (see
:mod:`geoscreen.review.audit_key`). Adding a column changes no entry, so the triggers
that keep the log append-only stay as they are.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``audit_log.mac``."""
    op.add_column("audit_log", sa.Column("mac", sa.String(64)))


def downgrade() -> None:
    """Not supported (see revision 0001)."""
    raise NotImplementedError("the review store cannot be downgraded")
