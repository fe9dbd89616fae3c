"""Scene file locations, and evidence paths relative to a SQLite store's folder.

Adds the nullable ``scenes.uri``. On SQLite, evidence paths stored absolute under the
store's folder become relative to it (see :meth:`geoscreen.review.store.Store.portable_path`),
so the store and its outputs can move together; other paths stay as they are.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import op

from geoscreen.review.store import relative_to

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``scenes.uri``; make evidence paths under a SQLite store's folder relative."""
    op.add_column("scenes", sa.Column("uri", sa.Text))
    bind = op.get_bind()
    if bind.dialect.name != "sqlite" or not bind.engine.url.database:
        return
    folder = Path(bind.engine.url.database).parent
    for name in ("candidates", "detections"):
        table = sa.table(name, sa.column("id"), sa.column("evidence_path"))
        rows = bind.execute(
            sa.select(table.c.id, table.c.evidence_path).where(table.c.evidence_path.is_not(None))
        ).all()
        changed = [
            {"pk": pk, "path": relative_to(path, folder)}
            for pk, path in rows
            if relative_to(path, folder) != path
        ]
        if changed:
            bind.execute(
                table.update()
                .where(table.c.id == sa.bindparam("pk"))
                .values(evidence_path=sa.bindparam("path")),
                changed,
            )


def downgrade() -> None:
    """Not supported (see revision 0001)."""
    raise NotImplementedError("the review store cannot be downgraded")
