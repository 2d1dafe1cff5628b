"""The tables of the feedback store as the code reads and writes them (SQLAlchemy Core).

The migrations create them (`migrations/versions`); a test compares a migrated database with
these definitions, so the two cannot drift apart.

`feedback` is the outbox: a row is accepted once (its idempotency `key` is unique) and later
applied by one flow run, which gives it the next `applied_seq` (1, 2, 3, ... without gaps).
`finetunes` has one row per fine-tune, keyed by the number of applied rows it trains on; a
claim holds it for `lease_s` seconds after `claimed_at`, until it is finished; `checkpoint`
keeps what an attempt finished (JSON), for a run that takes it over.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    TypeDecorator,
)

from iris_core.schema import FEATURES

#: Alembic's version table: a name of its own, so the store can share a database with MLflow
#: and Prefect, which keep their own `alembic_version`.
VERSION_TABLE = "feedback_schema_version"


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime in and out: `timestamptz` on PostgreSQL; on SQLite, which has no
    time type, UTC text in one fixed format (so it also sorts)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"a naive datetime ({value}) has no defined instant: pass UTC")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)  # noqa: S101 (the DateTime type returns datetimes)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData(
    naming_convention={
        "pk": "pk_%(table_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ix": "ix_%(table_name)s_%(column_0_name)s",
    }
)

feedback = Table(
    "feedback",
    metadata,
    # Acceptance order. SQLite's AUTOINCREMENT wants exactly INTEGER; it never reuses an id.
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("key", Text, nullable=False, unique=True),
    *(Column(name, Float(53), nullable=False) for name in FEATURES),
    Column("class_name", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Column("applied_seq", Integer, unique=True),
    Column("applied_at", UTCDateTime),
    Column("applied_by", Text),
    # What the served models answered when the row was accepted (the evidence of gated
    # promotion): the champion's ONNX version and class, and the challenger's while one is loaded
    Column("champion_version", Text),
    Column("champion_class", Text),
    Column("challenger_version", Text),
    Column("challenger_class", Text),
    sqlite_autoincrement=True,
)
# The rows a claim takes: only the pending ones are indexed.
Index(
    "ix_feedback_pending",
    feedback.c.id,
    sqlite_where=feedback.c.applied_seq.is_(None),
    postgresql_where=feedback.c.applied_seq.is_(None),
)

finetunes = Table(
    "finetunes",
    metadata,
    Column("rows", Integer, primary_key=True, autoincrement=False),
    Column("claimed_by", Text, nullable=False),
    Column("claimed_at", UTCDateTime, nullable=False),
    Column("lease_s", Float(53), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("finished_at", UTCDateTime),
    Column("outcome", Text),
    Column("detail", Text),
    # JSON the claim's holder left for whoever takes the fine-tune over (see `checkpoint_finetune`)
    Column("checkpoint", Text),
)

#: Each challenger of gated promotion, by its ONNX model version (the one the API serves and the
#: rows' answers name): its versions of both models (JSON), the feedback rows it was trained on
#: (never its evidence), the champion it is compared with, and once decided, how (`promoted`,
#: `retired`), with the numbers behind it (JSON) and the run that decided. Decided once.
challengers = Table(
    "challengers",
    metadata,
    Column("version", Text, primary_key=True),
    Column("versions", Text, nullable=False),
    Column("trained_rows", Integer, nullable=False),
    Column("champion_version", Text, nullable=False),
    Column("registered_at", UTCDateTime, nullable=False),
    Column("decided_at", UTCDateTime),
    Column("decision", Text),
    Column("evidence", Text),
    Column("decided_by", Text),
)
