"""Alembic migrations of the feedback store, run by `FeedbackStore.open` (no alembic.ini)."""
