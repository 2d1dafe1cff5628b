"""A fine-tune's checkpoint: what an attempt has made once its MLflow run is complete (the run,
its logged models, whether it is promoted), kept with the claim, so a run that takes the
fine-tune over after the first one died registers that result once instead of tuning again.

Revision ID: 3
Revises: 2
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "3"
down_revision: str | None = "2"


def upgrade() -> None:
    op.add_column("finetunes", sa.Column("checkpoint", sa.Text))
