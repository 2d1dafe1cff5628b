"""Live evidence for a challenger (gated promotion): each row keeps what the served models
answered when it was accepted (the champion's and, while one is loaded, the challenger's
version and class), and `challengers` holds each challenger from its registration to its
decision (promoted or retired, with the numbers behind it), decided once.

Revision ID: 4
Revises: 3
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from iris_core.feedback.schema import UTCDateTime

revision = "4"
down_revision: str | None = "3"


def upgrade() -> None:
    for column in ("champion_version", "champion_class", "challenger_version", "challenger_class"):
        op.add_column("feedback", sa.Column(column, sa.Text))
    op.create_table(
        "challengers",
        sa.Column("version", sa.Text, nullable=False),
        sa.Column("versions", sa.Text, nullable=False),
        sa.Column("trained_rows", sa.Integer, nullable=False),
        sa.Column("champion_version", sa.Text, nullable=False),
        sa.Column("registered_at", UTCDateTime, nullable=False),
        sa.Column("decided_at", UTCDateTime),
        sa.Column("decision", sa.Text),
        sa.Column("evidence", sa.Text),
        sa.Column("decided_by", sa.Text),
        sa.PrimaryKeyConstraint("version", name="pk_challengers"),
    )
