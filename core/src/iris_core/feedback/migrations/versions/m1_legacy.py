"""The store as the first fine-tune flow kept it: one row per flow run, numbered by `seq`.

Stores that flow created have these tables already (without a version table): they are kept
as they are, like `CREATE TABLE IF NOT EXISTS` would.

Revision ID: 1
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from iris_core.schema import FEATURES

revision = "1"
down_revision: str | None = None


def upgrade() -> None:
    existing = sa.inspect(op.get_bind())
    if not existing.has_table("feedback"):
        op.create_table(
            "feedback",
            sa.Column("seq", sa.Integer, primary_key=True),
            sa.Column("flow_run_id", sa.Text, nullable=False, unique=True),
            *(sa.Column(name, sa.Float(53), nullable=False) for name in FEATURES),
            sa.Column("class_name", sa.Text, nullable=False),
            sa.Column("received_at", sa.Text, nullable=False),
        )
    if not existing.has_table("finetunes"):
        op.create_table(
            "finetunes",
            sa.Column("rows", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("flow_run_id", sa.Text, nullable=False),
            sa.Column("started_at", sa.Text, nullable=False),
            sa.Column("finished_at", sa.Text),
            sa.Column("outcome", sa.Text),
            sa.Column("detail", sa.Text),
        )
