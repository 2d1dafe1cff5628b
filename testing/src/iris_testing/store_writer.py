"""A feedback-store writer for tests that run real processes writing at once.

A spawned process imports the module of its target: this one imports only the store, so each
writer starts in a fraction of a second (a test module that pulls in Prefect costs ~9 s each).
"""

from __future__ import annotations

from pathlib import Path

from iris_finetune.store import Feedback, FeedbackStore

ROW = Feedback((5.1, 3.5, 1.4, 0.2), "Iris-setosa")


def write_twice(path: str, prefix: str, n: int) -> None:
    """Rows for flow runs `prefix-0` ... `prefix-{n-1}`, each added twice (a retried run must
    not store a second row)."""
    store = FeedbackStore(Path(path))
    for i in range(n):
        store.add(f"{prefix}-{i}", ROW)
        store.add(f"{prefix}-{i}", ROW)
