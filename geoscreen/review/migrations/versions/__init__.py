"""Migration scripts, oldest first (alembic revision chain)."""
