"""The other processes of the feedback store tests: each opens the store at a URL and does one
job, talking to the test over a pipe.

The tests start them from a fork server that has imported this module only (not the tests'
conftest, which loads Prefect and MLflow), so a process costs a fork instead of a new
interpreter. Orders: "go" starts the job once every process is ready (so they really run at
once), "stop" ends a claimer. The `hold-*` jobs stop inside a store transaction, after its
write and before its commit, and wait there to be killed.
"""

from __future__ import annotations

import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

import alembic.command  # noqa: F401 (loaded once in the fork server: opens that migrate need it)
from sqlalchemy import event

from iris_core.feedback import FeedbackStore

ROW = (5.1, 3.5, 1.4, 0.2)
CLASS = "Iris-setosa"


def hold_after(pipe: Connection, store: FeedbackStore, statement_start: str) -> None:
    """Once a statement starting with `statement_start` ran (uncommitted), say so and wait
    to be killed: the transaction, its locks and its writes stay open."""

    @event.listens_for(store.database.engine, "after_cursor_execute")
    def _hold(*args: Any) -> None:
        statement: str = args[2]
        if statement.lstrip().upper().startswith(statement_start):
            pipe.send({"holding": statement.split(maxsplit=1)[0]})
            time.sleep(3600)


def wait_for(pipe: Connection, order: str) -> None:
    got = pipe.recv()
    if got != order:
        raise RuntimeError(f"expected {order!r}, got {got!r}")


def main(pipe: Connection, url: str, job: str, *args: str) -> None:
    """Run `job`; an error goes back to the test as {"error": traceback}."""
    try:
        run(pipe, url, job, *args)
    except BaseException:
        pipe.send({"error": traceback.format_exc()})
        raise


def run(pipe: Connection, url: str, job: str, *args: str) -> None:
    if job == "open":  # concurrent opens of a new database: who migrated
        pipe.send({"ready": True})
        wait_for(pipe, "go")
        with FeedbackStore.open(url) as store:
            pipe.send({"migrated": list(store.migrated)})
        return
    store = FeedbackStore.open(url)
    if job == "add":  # the same key from many processes at once
        (key,) = args
        pipe.send({"ready": True})
        wait_for(pipe, "go")
        added = store.add(ROW, CLASS, key, "api")
        pipe.send({"id": added.id, "new": added.new})
    elif job == "adder":  # n rows, one after the other: their acceptance order is known
        prefix, n = args[0], int(args[1])
        pipe.send({"ready": True})
        wait_for(pipe, "go")
        ids = [store.add(ROW, CLASS, f"{prefix}-{i:04d}", "api").id for i in range(n)]
        pipe.send({"ids": ids})
    elif job == "claimer":  # claims pending rows until told to stop, then once more
        (run_id,) = args
        pipe.send({"ready": True})
        wait_for(pipe, "go")
        claimed = []
        while True:
            last = pipe.poll(0.01)
            c = store.claim_pending(run_id)
            if c.count:
                claimed.append([c.first_seq, c.last_seq])
            if last:
                break
        pipe.send({"claimed": claimed})
    elif job == "hold-claim":
        hold_after(pipe, store, "UPDATE FEEDBACK")
        store.claim_pending(args[0])
    elif job == "hold-add":
        hold_after(pipe, store, "INSERT INTO FEEDBACK")
        store.add(ROW, CLASS, args[0], "api")
    elif job == "hold-finetune":  # claims a fine-tune, then dies before finishing it
        run_id, every, lease_s = args[0], int(args[1]), float(args[2])
        claim = store.next_finetune(every, run_id, lease_s)
        pipe.send({"claim": repr(claim)})
        time.sleep(3600)
    else:
        raise ValueError(f"unknown job {job!r}")
    store.close()
