"""The feedback store (outbox) on both backends: a SQLite file, and a real PostgreSQL server
started for the session (a new database per test). Concurrency and crashes use real
processes (`tests.core.feedback_worker`), killed with SIGKILL where a crash is the point."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select, text

from iris_core.feedback import (
    Added,
    Claim,
    Claimed,
    ClaimLost,
    Feedback,
    FeedbackStore,
    Held,
    KeyReused,
    Outcome,
    StoreUnavailable,
)
from iris_core.feedback.database import HEAD, Database, Location, migration_scripts
from iris_core.feedback.schema import VERSION_TABLE, feedback, metadata
from iris_stack.postgres import Postgres
from iris_stack.process import ServiceError
from iris_testing.ports import free_port
from iris_testing.postgres import PASSWORD, THROWAWAY, new_database, postgres_cluster
from tests.core import feedback_worker

ROW = (5.1, 3.5, 1.4, 0.2)
SETOSA = "Iris-setosa"


def flower(i: int) -> tuple[float, float, float, float]:
    """A distinct flower per i, so order checks can tell rows apart."""
    return (4.0 + i / 100, 3.0, 1.4, 0.2)


# --- backends -------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty store on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'feedback.db'}"
    return new_database(request.getfixturevalue("postgres"))


@pytest.fixture
def store(url: str) -> Iterator[FeedbackStore]:
    with FeedbackStore.open(url) as opened:
        yield opened


class Clock:
    """A clock the test moves by hand (leases expire without sleeping)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def applied_rows(store: FeedbackStore) -> list[tuple[int, str, int | None, str | None]]:
    """(id, key, applied_seq, applied_by) of every row, by id."""
    with store.database.read() as conn:
        found = conn.execute(
            select(feedback.c.id, feedback.c.key, feedback.c.applied_seq, feedback.c.applied_by)
            .order_by(feedback.c.id)
        ).all()  # fmt: skip
    return [(r[0], r[1], r[2], r[3]) for r in found]


# --- processes ------------------------------------------------------------------------------


#: Worker processes fork from a server that imported the store and nothing else: a few
#: milliseconds each, instead of a new interpreter importing SQLAlchemy.
PROCESSES = multiprocessing.get_context("forkserver")
PROCESSES.set_forkserver_preload(["tests.core.feedback_worker"])


@dataclass
class Worker:
    """A `tests.core.feedback_worker` process and our end of its pipe."""

    process: BaseProcess
    pipe: Connection

    @classmethod
    def start(cls, url: str, job: str, *args: str) -> Worker:
        ours, theirs = PROCESSES.Pipe()
        process = PROCESSES.Process(
            target=feedback_worker.main, args=(theirs, url, job, *args), daemon=True
        )
        process.start()
        theirs.close()
        return cls(process, ours)

    def read(self, timeout_s: float = 60) -> dict[str, Any]:
        """Its next message; AssertionError if it failed or ended instead."""
        if not self.pipe.poll(timeout_s):
            raise AssertionError(f"no message from the worker within {timeout_s:g} s")
        try:
            message: dict[str, Any] = self.pipe.recv()
        except EOFError:
            self.process.join(10)
            raise AssertionError(f"worker exited ({self.process.exitcode})") from None
        if "error" in message:
            raise AssertionError(f"worker failed:\n{message['error']}")
        return message

    def tell(self, order: str) -> None:
        self.pipe.send(order)

    def finish(self) -> dict[str, Any]:
        """Its last message, once it has exited with status 0."""
        message = self.read()
        self.process.join(60)
        assert self.process.exitcode == 0
        self.pipe.close()
        return message

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind runs in it."""
        self.process.kill()
        self.process.join(10)
        self.pipe.close()


@contextlib.contextmanager
def workers(url: str, jobs: Sequence[tuple[str, ...]]) -> Iterator[list[Worker]]:
    """Processes for `jobs`, started together and told "go" once all are ready; any still
    running at the end are killed."""
    started = [Worker.start(url, *job) for job in jobs]
    try:
        for w in started:
            assert w.read() == {"ready": True}
        for w in started:
            w.tell("go")
        yield started
    finally:
        for w in started:
            if w.process.is_alive():
                w.kill()


# --- order and idempotency ------------------------------------------------------------------


def test_rows_are_applied_in_acceptance_order_without_gaps(store: FeedbackStore) -> None:
    for i in range(7):
        store.add(flower(i), SETOSA, f"k{i}", "api")
    assert store.claim_pending("run-1") == Claimed(1, 7)
    for i in range(7, 10):
        store.add(flower(i), SETOSA, f"k{i}", "api")
    assert store.claim_pending("run-2") == Claimed(8, 10)
    nothing = store.claim_pending("run-3")
    assert (nothing.count, nothing.last_seq) == (0, 10)
    assert store.rows(10) == [Feedback(flower(i), SETOSA) for i in range(10)]
    assert store.rows(4) == [Feedback(flower(i), SETOSA) for i in range(4)]
    assert [r[2:] for r in applied_rows(store)] == [
        (i, "run-1" if i <= 7 else "run-2") for i in range(1, 11)
    ]


def test_a_key_stores_one_row(store: FeedbackStore) -> None:
    first = store.add(ROW, SETOSA, "req-1", "api")
    assert first.new
    assert store.add(list(ROW), SETOSA, "req-1", "api") == Added(first.id, new=False)
    with pytest.raises(KeyReused, match="req-1"):
        store.add(ROW, "Iris-virginica", "req-1", "api")
    store.claim_pending("run-1")
    assert not store.add(ROW, SETOSA, "req-1", "api").new  # applied: not pending again
    assert store.backlog(every=5).pending == 0
    assert len(applied_rows(store)) == 1


@pytest.mark.parametrize(
    ("measurements", "class_name", "key"),
    [
        ((5.1, 3.5, 1.4), SETOSA, "k"),
        ((5.1, 3.5, 1.4, float("nan")), SETOSA, "k"),
        (ROW, "Iris-unknown", "k"),
        (ROW, SETOSA, ""),
    ],
)
def test_a_row_that_could_never_train_is_refused(
    store: FeedbackStore, measurements: tuple[float, ...], class_name: str, key: str
) -> None:
    with pytest.raises(ValueError, match=r"measurements|class_name|key"):
        store.add(measurements, class_name, key, "api")
    assert applied_rows(store) == []


def test_the_same_key_at_once_from_threads_and_processes_is_one_row(
    store: FeedbackStore, url: str
) -> None:
    barrier = threading.Barrier(20)

    def add(_: int) -> tuple[int, bool]:
        barrier.wait()
        added = store.add(ROW, SETOSA, "same", "api")
        return added.id, added.new

    with workers(url, [("add", "same")] * 4) as procs, ThreadPoolExecutor(20) as pool:
        in_threads = list(pool.map(add, range(20)))
        in_processes = [(m["id"], m["new"]) for m in (w.finish() for w in procs)]
    answers = in_threads + in_processes
    assert len({i for i, _ in answers}) == 1
    assert sum(new for _, new in answers) == 1
    assert len(applied_rows(store)) == 1


def test_concurrent_claimers_apply_every_row_once_in_acceptance_order(
    store: FeedbackStore, url: str
) -> None:
    n = 40
    jobs = [("adder", f"a{k}", str(n)) for k in range(2)] + [
        ("claimer", f"run-{k}") for k in range(3)
    ]
    with workers(url, jobs) as procs:
        adders, claimers = procs[:2], procs[2:]
        added = [w.finish()["ids"] for w in adders]
        for w in claimers:
            w.tell("stop")
        claimed = {f"run-{k}": w.finish()["claimed"] for k, w in enumerate(claimers)}
    rows = applied_rows(store)
    assert len(rows) == 2 * n
    assert sorted(r[2] for r in rows if r[2] is not None) == list(range(1, 2 * n + 1))
    # applied_seq follows the id, which follows acceptance: each adder's rows stay in order
    assert [r[2] for r in rows] == list(range(1, 2 * n + 1))
    assert all(ids == sorted(ids) for ids in added)
    # each claim's range is the rows that claimer applied, and the ranges do not overlap
    by_seq = {r[2]: r[3] for r in rows}
    seen: list[int] = []
    for run_id, ranges in claimed.items():
        for first, last in ranges:
            assert {by_seq[s] for s in range(first, last + 1)} == {run_id}
            seen += range(first, last + 1)
    assert sorted(seen) == list(range(1, 2 * n + 1))
    assert sum(len(ranges) for ranges in claimed.values()) > 1  # claims went on with adds


# --- fine-tunes -----------------------------------------------------------------------------


def test_finetunes_run_in_order_under_leases(url: str) -> None:
    clock = Clock()
    with FeedbackStore.open(url, clock=clock) as store:
        assert store.next_finetune(5, "a", lease_s=60) is None  # nothing owed yet
        for i in range(12):
            store.add(flower(i), SETOSA, f"k{i}", "api")
        store.claim_pending("a")
        assert store.next_finetune(5, "a", lease_s=60) == Claim(5, attempt=1)
        held = store.next_finetune(5, "b", lease_s=60)
        assert held == Held(5, "a", clock.now + timedelta(seconds=60))  # b stops
        store.finish_finetune(5, "a", Outcome.REGISTERED, "above the threshold")
        assert store.next_finetune(5, "b", lease_s=60) == Claim(10, attempt=1)
        assert isinstance(store.next_finetune(5, "a", lease_s=60), Held)
        clock.advance(61)  # b died: its lease ran out
        assert store.next_finetune(5, "a", lease_s=60) == Claim(10, 2, previous_run_id="b")
        with pytest.raises(ClaimLost, match="held by a"):
            store.finish_finetune(10, "b", Outcome.REGISTERED, "too late")
        store.renew_finetune(10, "a", lease_s=120)
        store.finish_finetune(10, "a", Outcome.FAILED, "RuntimeError: MLflow went away")
        with pytest.raises(ClaimLost, match="finished already"):
            store.finish_finetune(10, "a", Outcome.REGISTERED, "twice")
        assert store.next_finetune(5, "a", lease_s=60) is None  # failed is final; 15 not owed
        for i in range(12, 16):
            store.add(flower(i), SETOSA, f"k{i}", "api")
        store.claim_pending("c")
        assert store.next_finetune(5, "c", lease_s=60) == Claim(15, attempt=1)
        assert store.next_finetune(5, "c", lease_s=60) == Claim(15, 2, previous_run_id="c")
        store.finish_finetune(15, "c", Outcome.REJECTED, "not above the threshold")
        assert store.next_finetune(5, "d", lease_s=60) is None  # finished: never again
        assert [(t.rows, t.claimed_by, t.attempts, t.outcome) for t in store.finetunes()] == [
            (5, "a", 1, Outcome.REGISTERED),
            (10, "a", 2, Outcome.FAILED),
            (15, "c", 2, Outcome.REJECTED),
        ]
        assert len(store.rows(15)) == 15


def test_backlog_tells_what_is_owed_and_since_when(url: str) -> None:
    clock = Clock()
    with FeedbackStore.open(url, clock=clock) as store:
        start = clock.now
        for i in range(3):
            store.add(flower(i), SETOSA, f"k{i}", "api")
            clock.advance(1)
        backlog = store.backlog(every=5)
        assert (backlog.pending, backlog.oldest_pending_at, backlog.applied) == (3, start, 0)
        assert (backlog.owed, backlog.owed_since, backlog.running) == (0, None, 0)
        for i in range(3, 11):
            store.add(flower(i), SETOSA, f"k{i}", "api")
        applied_at = clock.now
        store.claim_pending("a")
        clock.advance(30)
        backlog = store.backlog(every=5)
        assert (backlog.pending, backlog.applied, backlog.owed) == (0, 11, 2)
        assert backlog.owed_since == applied_at  # row 5 was applied then
        claim = store.next_finetune(5, "a", lease_s=60)
        assert claim == Claim(5, attempt=1)
        backlog = store.backlog(every=5)
        assert (backlog.owed, backlog.running, backlog.owed_since) == (1, 1, applied_at)
        store.finish_finetune(5, "a", Outcome.REJECTED, "")
        clock.advance(100)
        stats = store.backlog(every=5).stats()
        assert json.loads(json.dumps(stats)) == stats
        assert stats["owed"] == 1
        assert stats["owed_age_s"] == 130.0
        assert stats["finetunes"] == {"registered": 0, "rejected": 1, "failed": 0, "deferred": 0}


# --- crashes --------------------------------------------------------------------------------


def test_a_claimer_killed_inside_its_transaction_applies_nothing(
    store: FeedbackStore, url: str
) -> None:
    for i in range(6):
        store.add(flower(i), SETOSA, f"k{i}", "api")
    holder = Worker.start(url, "hold-claim", "doomed")
    try:
        assert holder.read() == {"holding": "UPDATE"}  # seqs written, not committed, locked
    finally:
        holder.kill()
    assert store.backlog(every=5).pending == 6
    started = time.monotonic()
    assert store.claim_pending("survivor") == Claimed(1, 6)  # the lock went with the process
    assert time.monotonic() - started < 5
    assert {r[3] for r in applied_rows(store)} == {"survivor"}
    assert store.rows(6) == [Feedback(flower(i), SETOSA) for i in range(6)]


def test_an_adder_killed_inside_its_transaction_stores_nothing(
    store: FeedbackStore, url: str
) -> None:
    holder = Worker.start(url, "hold-add", "req-1")
    try:
        assert holder.read() == {"holding": "INSERT"}
    finally:
        holder.kill()
    assert store.add(ROW, SETOSA, "req-1", "api").new  # the client's retry stores it
    assert store.claim_pending("run") == Claimed(1, 1)


def test_a_finetune_whose_run_was_killed_is_taken_over_after_its_lease(
    store: FeedbackStore, url: str
) -> None:
    for i in range(5):
        store.add(flower(i), SETOSA, f"k{i}", "api")
    store.claim_pending("run")
    lease_s = 0.5
    holder = Worker.start(url, "hold-finetune", "doomed", "5", str(lease_s))
    try:
        assert holder.read() == {"claim": repr(Claim(5, attempt=1))}
    finally:
        holder.kill()  # between its claim and its finish
    held = store.next_finetune(5, "next", lease_s=60)
    assert isinstance(held, Held)
    assert held.run_id == "doomed"
    assert store.backlog(every=5).running == 1
    time.sleep(max(0.0, (held.until - datetime.now(UTC)).total_seconds()) + 0.05)
    assert store.backlog(every=5).owed == 1  # lease over: owed, and nobody on it
    assert store.next_finetune(5, "next", lease_s=60) == Claim(5, 2, previous_run_id="doomed")
    store.finish_finetune(5, "next", Outcome.REGISTERED, "")
    assert [(t.rows, t.claimed_by, t.outcome) for t in store.finetunes()] == [
        (5, "next", Outcome.REGISTERED)
    ]


def test_a_released_finetune_is_taken_over_at_once(store: FeedbackStore) -> None:
    """A run being stopped (not failing) releases its claim: no outcome, no lease to wait."""
    for i in range(5):
        store.add(flower(i), SETOSA, f"k{i}", "api")
    store.claim_pending("run")
    assert store.next_finetune(5, "stopped", lease_s=600) == Claim(5, attempt=1)
    with pytest.raises(ClaimLost):
        store.release_finetune(5, "another")
    store.release_finetune(5, "stopped")
    assert store.backlog(every=5).owed == 1
    assert store.next_finetune(5, "next", lease_s=600) == Claim(5, 2, previous_run_id="stopped")
    with pytest.raises(ClaimLost):
        store.finish_finetune(5, "stopped", Outcome.FAILED, "too late")


def test_a_checkpoint_goes_to_the_run_that_takes_the_finetune_over(store: FeedbackStore) -> None:
    """What an attempt finished (its MLflow run, say) is kept with its claim and handed to the
    run that takes the fine-tune over; only the holder may leave one, and it renews the claim."""
    for i in range(5):
        store.add(flower(i), SETOSA, f"k{i}", "api")
    store.claim_pending("run")
    assert store.next_finetune(5, "first", lease_s=600) == Claim(5, attempt=1)
    with pytest.raises(ClaimLost):
        store.checkpoint_finetune(5, "another", {"run_id": "r"}, lease_s=600)
    store.checkpoint_finetune(5, "first", {"run_id": "mlflow-run", "promoted": True}, 600)
    with pytest.raises(ValueError, match="at most"):
        store.checkpoint_finetune(5, "first", {"big": "x" * 3000}, 600)
    assert isinstance(store.next_finetune(5, "second", lease_s=600), Held)
    store.release_finetune(5, "first")  # (as a lease that ran out)
    claim = store.next_finetune(5, "second", lease_s=600)
    assert claim == Claim(
        5, 2, checkpoint={"run_id": "mlflow-run", "promoted": True}, previous_run_id="first"
    )
    [tune] = store.finetunes()
    assert tune.checkpoint == {"run_id": "mlflow-run", "promoted": True}


# --- schema ---------------------------------------------------------------------------------


def test_a_store_of_the_first_flow_becomes_applied_rows(tmp_path: Path) -> None:
    """A store in the first schema (one row per flow run, numbered as stored; a finished and
    an unfinished fine-tune): its rows become applied, in their order, keyed by their run."""
    url = f"sqlite:///{tmp_path / 'feedback.db'}"
    db = Database(Location.parse(url))
    assert db.migrate("1") == ("1",)
    with db.write() as conn:
        for i in range(7):
            conn.execute(
                text(
                    "INSERT INTO feedback VALUES "
                    "(:seq, :run, :a, :b, :c, :d, :cls, '2026-01-01T12:00:00+00:00')"
                ),
                dict(zip("abcd", flower(i), strict=True))
                | {"seq": i + 1, "run": f"flow-{i}", "cls": SETOSA},
            )
        conn.execute(
            text(
                "INSERT INTO finetunes (rows, flow_run_id, started_at, finished_at, outcome) "
                "VALUES (5, 'flow-4', '2026-01-01T12:00:00+00:00', "
                "'2026-01-01T12:01:00+00:00', 'registered')"
            )
        )
        conn.execute(  # a run that died in its fine-tune
            text(
                "INSERT INTO finetunes (rows, flow_run_id, started_at) "
                "VALUES (10, 'flow-9', '2026-01-01T12:02:00+00:00')"
            )
        )
    db.close()
    with FeedbackStore.open(url) as store:
        assert store.migrated == ("2", "3", "4")
        assert store.rows(7) == [Feedback(flower(i), SETOSA) for i in range(7)]
        assert [r[1:] for r in applied_rows(store)] == [
            (f"flow-run:flow-{i}", i + 1, f"flow-{i}") for i in range(7)
        ]
        assert not store.add(flower(2), SETOSA, "flow-run:flow-2", "flow-run").new
        assert store.add(flower(7), SETOSA, "req-1", "api").id > 7  # ids may skip, seqs not
        assert store.claim_pending("run") == Claimed(8, 8)
        tunes = store.finetunes()
        assert [(t.rows, t.outcome, t.finished) for t in tunes] == [
            (5, Outcome.REGISTERED, True),
            (10, None, False),
        ]
        assert store.backlog(every=5).pending == 0


@pytest.mark.integration  # a real PostgreSQL
def test_a_postgres_store_at_the_first_revision_migrates_its_rows(postgres: Postgres) -> None:
    """The same data path on PostgreSQL: rows written in the first schema become applied, and
    new rows get ids after theirs."""
    url = new_database(postgres)
    db = Database(Location.parse(url))
    assert db.migrate("1") == ("1",)
    with db.write() as conn:
        for i in range(1, 4):
            conn.execute(
                text(
                    "INSERT INTO feedback VALUES "
                    "(:seq, :run, :a, :b, :c, :d, :cls, '2026-01-01T12:00:00+00:00')"
                ),
                dict(zip("abcd", flower(i), strict=True))
                | {"seq": i, "run": f"f{i}", "cls": SETOSA},
            )
        conn.execute(
            text(
                "INSERT INTO finetunes (rows, flow_run_id, started_at, finished_at, outcome) "
                "VALUES (5, 'f5', '2026-01-01T12:00:00+00:00', '2026-01-01T12:01:00+00:00', :o)"
            ),
            {"o": Outcome.FAILED.value},
        )
    db.close()
    with FeedbackStore.open(url) as store:
        assert store.migrated == ("2", "3", "4")
        assert [r[1:] for r in applied_rows(store)] == [
            (f"flow-run:f{i}", i, f"f{i}") for i in range(1, 4)
        ]
        assert store.add(ROW, SETOSA, "req-1", "api").id == 4
        assert [(t.rows, t.outcome) for t in store.finetunes()] == [(5, Outcome.FAILED)]


def test_the_migrated_schema_is_the_one_the_code_uses(store: FeedbackStore) -> None:
    assert migration_scripts().get_current_head() == HEAD
    with store.database.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    # Alembic's own version table is the only one the code does not describe.
    assert [
        d for d in differences if not (d[0] == "remove_table" and d[1].name == VERSION_TABLE)
    ] == []


def test_processes_opening_a_new_store_at_once_migrate_it_once(url: str) -> None:
    with workers(url, [("open",)] * 4) as procs:
        migrated = sorted(tuple(w.finish()["migrated"]) for w in procs)
    assert migrated == [(), (), (), ("1", "2", "3", "4")]


@pytest.mark.integration  # initdb
@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the folder to another user")
def test_a_cluster_folder_the_server_user_cannot_reach_is_refused_clearly(tmp_path: Path) -> None:
    cluster = Postgres(tmp_path / "postgres", free_port())  # pytest's folders are root's only
    with pytest.raises(ServiceError, match="the postgres user cannot reach"):
        cluster.init()


def test_store_urls_are_checked() -> None:
    for bad in (
        "sqlite:///relative.db",
        "sqlite://",
        "sqlite:///:memory:",
        "mysql://u:p@h/db",
        "postgresql://u:p@h:5432",
        "not a url",
    ):
        with pytest.raises(ValueError, match="feedback store URL"):
            FeedbackStore.open(bad)


# --- availability ---------------------------------------------------------------------------


@pytest.mark.integration  # a real PostgreSQL
def test_a_stopped_postgres_fails_fast_and_clearly_then_works_again() -> None:
    with postgres_cluster() as cluster:
        url = new_database(cluster)
        store = FeedbackStore.open(url)
        store.add(ROW, SETOSA, "before", "api")
        cluster.stop()
        for call in (
            lambda: store.add(ROW, SETOSA, "during", "api"),
            lambda: store.backlog(every=5),
            lambda: FeedbackStore.open(url),
        ):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable) as caught:
                call()
            assert time.monotonic() - started < 2
            message = str(caught.value)
            assert f"PostgreSQL 127.0.0.1:{cluster.port}/" in message
            assert "unavailable" in message
            assert PASSWORD not in message
        service = cluster.service(THROWAWAY)
        service.start()
        try:
            service.wait_healthy(30)
            assert store.add(ROW, SETOSA, "after", "api").new  # the same store object
            assert store.claim_pending("run") == Claimed(1, 2)
        finally:
            store.close()
            service.stop()


def test_a_store_busy_beyond_its_timeout_is_unavailable_then_works_again(url: str) -> None:
    """A claim that stalls inside its transaction (here: stopped in it) holds the write lock;
    an add waits `busy_timeout_s`, then fails like a store that is down."""
    store = FeedbackStore.open(url, busy_timeout_s=0.3)
    store.add(ROW, SETOSA, "before", "api")
    holder = Worker.start(url, "hold-claim", "slow")
    try:
        assert holder.read() == {"holding": "UPDATE"}
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as caught:
            store.add(ROW, SETOSA, "during", "api")
        assert time.monotonic() - started < 2
        assert re.search(
            r"\((SQLite|PostgreSQL) .*\) unavailable: .*lock.* \(busy for more than 0.3 s\)$",
            str(caught.value),
        ), caught.value
    finally:
        holder.kill()
    assert store.add(ROW, SETOSA, "after", "api").new
    assert store.claim_pending("run") == Claimed(1, 2)
    store.close()


def test_an_unreachable_sqlite_folder_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreUnavailable, match="SQLite"):
        FeedbackStore.open(f"sqlite:///{blocker / 'feedback.db'}")
