"""The outbox: rows accepted once per idempotency key, applied later in acceptance order.

`feedback` gains the key (unique), where a row came from, and when and by whom it was applied
with which `applied_seq` (unique, none while pending). `finetunes` records claims with a
lease, so a fine-tune whose run died can be claimed again.

Rows of an older store were applied by the flow runs that wrote them: they stay applied, in
their `seq` order, keyed `flow-run:<flow_run_id>`. Finished fine-tunes keep their outcome; an
unfinished one becomes a claim whose lease has run out, which the next run takes over.

Revision ID: 2
Revises: 1
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from iris_core.feedback.schema import UTCDateTime
from iris_core.schema import FEATURES

revision = "2"
down_revision: str | None = "1"


def _instant(text: str | None) -> datetime | None:
    """A time the older store wrote (ISO 8601, UTC)."""
    if text is None:
        return None
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def upgrade() -> None:
    op.rename_table("feedback", "feedback_v1")
    op.rename_table("finetunes", "finetunes_v1")
    feedback = op.create_table(
        "feedback",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        *(sa.Column(name, sa.Float(53), nullable=False) for name in FEATURES),
        sa.Column("class_name", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("received_at", UTCDateTime, nullable=False),
        sa.Column("applied_seq", sa.Integer),
        sa.Column("applied_at", UTCDateTime),
        sa.Column("applied_by", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_feedback"),
        sa.UniqueConstraint("key", name="uq_feedback_key"),
        sa.UniqueConstraint("applied_seq", name="uq_feedback_applied_seq"),
        sqlite_autoincrement=True,
    )
    pending = sa.text("applied_seq IS NULL")
    op.create_index(
        "ix_feedback_pending", "feedback", ["id"], sqlite_where=pending, postgresql_where=pending
    )
    finetunes = op.create_table(
        "finetunes",
        sa.Column("rows", sa.Integer, autoincrement=False, nullable=False),
        sa.Column("claimed_by", sa.Text, nullable=False),
        sa.Column("claimed_at", UTCDateTime, nullable=False),
        sa.Column("lease_s", sa.Float(53), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("finished_at", UTCDateTime),
        sa.Column("outcome", sa.Text),
        sa.Column("detail", sa.Text),
        sa.PrimaryKeyConstraint("rows", name="pk_finetunes"),
    )
    # op.create_table returns the table in online mode, the only one these migrations run in
    assert feedback is not None  # noqa: S101
    assert finetunes is not None  # noqa: S101

    bind = op.get_bind()
    old_rows = sa.table(
        "feedback_v1",
        sa.column("seq", sa.Integer),
        sa.column("flow_run_id", sa.Text),
        *(sa.column(name, sa.Float) for name in FEATURES),
        sa.column("class_name", sa.Text),
        sa.column("received_at", sa.Text),
    )
    rows = bind.execute(sa.select(old_rows).order_by(old_rows.c.seq)).mappings().all()
    if rows:
        bind.execute(
            feedback.insert(),
            [
                {
                    "id": row["seq"],
                    "key": f"flow-run:{row['flow_run_id']}",
                    **{name: row[name] for name in FEATURES},
                    "class_name": row["class_name"],
                    "source": "flow-run",
                    "received_at": _instant(row["received_at"]),
                    "applied_seq": applied_seq,
                    "applied_at": _instant(row["received_at"]),
                    "applied_by": row["flow_run_id"],
                }
                for applied_seq, row in enumerate(rows, start=1)
            ],
        )
        if bind.dialect.name == "postgresql":  # ids were given: the next one follows them
            op.execute(
                "SELECT setval(pg_get_serial_sequence('feedback', 'id'), max(id)) FROM feedback"
            )

    old_finetunes = sa.table(
        "finetunes_v1",
        sa.column("rows", sa.Integer),
        sa.column("flow_run_id", sa.Text),
        sa.column("started_at", sa.Text),
        sa.column("finished_at", sa.Text),
        sa.column("outcome", sa.Text),
        sa.column("detail", sa.Text),
    )
    tunes = bind.execute(sa.select(old_finetunes)).mappings().all()
    if tunes:
        bind.execute(
            finetunes.insert(),
            [
                {
                    "rows": tune["rows"],
                    "claimed_by": tune["flow_run_id"],
                    "claimed_at": _instant(tune["started_at"]),
                    "lease_s": 0.0,
                    "attempts": 1,
                    "finished_at": _instant(tune["finished_at"]),
                    "outcome": tune["outcome"],
                    "detail": tune["detail"],
                }
                for tune in tunes
            ],
        )
    op.drop_table("feedback_v1")
    op.drop_table("finetunes_v1")
