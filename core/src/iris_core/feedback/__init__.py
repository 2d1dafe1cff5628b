"""The feedback store (outbox): accepted feedback is durable at once and applied exactly once,
in acceptance order, by the fine-tuning flow runs. SQLite or PostgreSQL, chosen by one URL.

Needs the `feedback` extra of iris-core (SQLAlchemy, Alembic, psycopg).
"""

from iris_core.feedback.database import STORE_URL, StoreError, StoreUnavailable
from iris_core.feedback.store import (
    SOURCE_API,
    SOURCE_FLOW_RUN,
    Added,
    Answers,
    Backlog,
    Challenger,
    Claim,
    Claimed,
    ClaimLost,
    Evidence,
    Feedback,
    FeedbackStore,
    Finetune,
    Held,
    KeyReused,
    Outcome,
    flow_run_key,
)

__all__ = [
    "SOURCE_API",
    "SOURCE_FLOW_RUN",
    "STORE_URL",
    "Added",
    "Answers",
    "Backlog",
    "Challenger",
    "Claim",
    "ClaimLost",
    "Claimed",
    "Evidence",
    "Feedback",
    "FeedbackStore",
    "Finetune",
    "Held",
    "KeyReused",
    "Outcome",
    "StoreError",
    "StoreUnavailable",
    "flow_run_key",
]
