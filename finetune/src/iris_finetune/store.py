"""The feedback store: one SQLite file, safe under concurrent flow runs, idempotent per run.

Every row gets the next sequence number (1, 2, 3, ... without gaps) inside an immediate
transaction, so concurrent writers are serialised by SQLite's lock and each sequence number
belongs to exactly one flow run. The flow run id is unique: a retried run finds its row and
gets its sequence number back instead of storing the row twice.

A second table records fine-tunes by the row count they were started at, so they apply in
feedback order (the one at 10 rows starts from the model the one at 5 rows produced) and a
retried run does not fine-tune twice.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from iris_core import FEATURES

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS feedback (
    seq INTEGER PRIMARY KEY,
    flow_run_id TEXT NOT NULL UNIQUE,
    {", ".join(f"{name} REAL NOT NULL" for name in FEATURES)},
    class_name TEXT NOT NULL,
    received_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS finetunes (
    rows INTEGER PRIMARY KEY,
    flow_run_id TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    outcome TEXT,
    detail TEXT
);
"""


class StoreError(RuntimeError):
    """The store cannot be opened or written."""


@dataclass(frozen=True, slots=True)
class Feedback:
    measurements: tuple[float, float, float, float]
    class_name: str


@dataclass(frozen=True, slots=True)
class Stored:
    seq: int  # this row's position: the store held `seq` rows once it was written
    new: bool  # False when this flow run had stored it already (a retry)


class Turn(StrEnum):
    GO = "go"  # this fine-tune is claimed by the caller: run it, then `finish` it
    DONE = "done"  # it finished before (a retried flow run): nothing to do


#: The outcome of a fine-tune that raised: its successor may go on, a retry may run it again.
FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Finetune:
    rows: int
    flow_run_id: str
    finished: bool
    outcome: str | None
    detail: str | None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class FeedbackStore:
    def __init__(self, path: Path, busy_timeout_s: float = 60.0) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self._created = False  # WAL mode and tables, once per store (WAL persists in the file)

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One immediate (write-locked) transaction: committed on success, rolled back else."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.rollback()
                raise
            db.commit()

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot open the feedback store {self.path}: {e}") from e
        try:
            if not self._created:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(SCHEMA)
                self._created = True
            db.execute("PRAGMA synchronous=FULL")  # a stored row survives a power cut
            yield db
        except sqlite3.Error as e:
            raise StoreError(f"feedback store {self.path}: {e}") from e
        finally:
            db.close()

    def add(self, flow_run_id: str, row: Feedback) -> Stored:
        """Store `row` once per flow run; its sequence number either way."""
        with self._write() as db:
            found = db.execute(
                "SELECT seq FROM feedback WHERE flow_run_id = ?", (flow_run_id,)
            ).fetchone()
            if found:
                return Stored(int(found[0]), new=False)
            (seq,) = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM feedback").fetchone()
            db.execute(
                f"INSERT INTO feedback VALUES (?, ?, {', '.join('?' * len(FEATURES))}, ?, ?)",  # noqa: S608
                (seq, flow_run_id, *row.measurements, row.class_name, _now()),
            )
            return Stored(int(seq), new=True)

    def count(self) -> int:
        with self._connect() as db:
            (n,) = db.execute("SELECT COUNT(*) FROM feedback").fetchone()
            return int(n)

    def rows(self, upto: int | None = None) -> list[Feedback]:
        """The rows in arrival order, the first `upto` of them (all by default)."""
        with self._connect() as db:
            found = db.execute(
                f"SELECT {', '.join(FEATURES)}, class_name FROM feedback "  # noqa: S608
                "WHERE seq <= ? ORDER BY seq",
                (upto if upto is not None else 2**62,),
            ).fetchall()
        return [Feedback((r[0], r[1], r[2], r[3]), r[4]) for r in found]

    def finetunes(self) -> list[Finetune]:
        with self._connect() as db:
            found = db.execute(
                "SELECT rows, flow_run_id, finished_at, outcome, detail FROM finetunes "
                "ORDER BY rows"
            ).fetchall()
        return [Finetune(r[0], r[1], r[2] is not None, r[3], r[4]) for r in found]

    def claim(self, rows: int, flow_run_id: str, after: int | None) -> Turn | None:
        """Claim the fine-tune at `rows` once the one at `after` has finished (None: no
        predecessor). DONE if it finished before (unless it failed); None if it must wait."""
        with self._write() as db:
            own = db.execute(
                "SELECT finished_at, outcome FROM finetunes WHERE rows = ?", (rows,)
            ).fetchone()
            if own is not None and own[0] is not None and own[1] != FAILED:
                return Turn.DONE
            if after is not None:
                previous = db.execute(
                    "SELECT finished_at FROM finetunes WHERE rows = ?", (after,)
                ).fetchone()
                if previous is None or previous[0] is None:
                    return None
            db.execute(
                "INSERT OR REPLACE INTO finetunes (rows, flow_run_id, started_at) VALUES (?, ?, ?)",
                (rows, flow_run_id, _now()),
            )
            return Turn.GO

    def wait_turn(
        self, rows: int, flow_run_id: str, after: int | None, timeout_s: float
    ) -> tuple[Turn, bool]:
        """`claim` until it answers; after `timeout_s` claim regardless of the one before (it
        may have died without finishing). Returns the turn and whether the wait timed out."""
        deadline = time.monotonic() + timeout_s
        while True:
            timed_out = time.monotonic() >= deadline
            turn = self.claim(rows, flow_run_id, None if timed_out else after)
            if turn is not None:
                return turn, timed_out
            time.sleep(0.5)

    def finish(self, rows: int, outcome: str, detail: str) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE finetunes SET finished_at = ?, outcome = ?, detail = ? WHERE rows = ?",
                (_now(), outcome, detail, rows),
            )
