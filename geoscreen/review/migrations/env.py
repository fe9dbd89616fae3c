"""Alembic environment: migrations run on the connection the store hands over.

The store opens the transaction (``BEGIN IMMEDIATE`` on SQLite), so a migration and
the first writes of a new store are one unit, and two processes creating the same
store one after the other do not step on each other.
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, transactional_ddl=True)
with context.begin_transaction():
    context.run_migrations()
