"""Alembic's environment for the feedback store.

Migrations run on the connection `FeedbackStore.open` passes in `config.attributes`, inside the
transaction it holds (a write lock on SQLite, an advisory lock on PostgreSQL), so concurrent
openers migrate once. There is no offline (SQL script) mode.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from iris_core.feedback.schema import VERSION_TABLE

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise TypeError("the feedback store's migrations run from FeedbackStore.open only")
# SQLite's DDL is transactional too: one migration is all or nothing on both backends.
context.configure(connection=connection, version_table=VERSION_TABLE, transactional_ddl=True)
with context.begin_transaction():
    context.run_migrations()
