"""The feedback store: accepted feedback is durable before it is acknowledged, and applied
exactly once, in acceptance order, by whichever flow run gets to it.

The API `add`s each accepted row in the request (one transaction; the idempotency key is
unique, so a retried request stores nothing twice). Flow runs then `claim_pending` rows: every
unapplied row, in acceptance order, gets the next gapless `applied_seq` (1, 2, 3, ...) in one
transaction, so a run that dies mid-claim leaves them pending for the next run. A fine-tune is
owed at every multiple k of `every` applied rows and trains on the rows with applied_seq <= k;
fine-tunes run in order, one at a time, through `next_finetune` (a claim with a lease) and
`finish_finetune`; the holder may leave a `checkpoint_finetune` (what it has made so far) for a
run that takes the fine-tune over after it died. `backlog` tells the API whether runs are
needed to catch up.

The same code runs on SQLite and PostgreSQL (`iris_core.feedback.database`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Self

from sqlalchemy import Connection, func, select, update
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from iris_core.feedback.database import (
    FINETUNES_LOCK,
    ROWS_LOCK,
    Database,
    Location,
    StoreError,
)
from iris_core.feedback.schema import challengers, feedback, finetunes
from iris_core.schema import CLASS_NAMES, FEATURES, N_FEATURES

#: Where a row came from: a /suggest request, or a flow run started by hand with a flower.
SOURCE_API = "api"
SOURCE_FLOW_RUN = "flow-run"
#: Longest idempotency key, run id and fine-tune detail the store keeps.
MAX_KEY = 200
MAX_DETAIL = 2000


def flow_run_key(flow_run_id: str) -> str:
    """The idempotency key of the row a flow run started by hand adds (once per run)."""
    return f"{SOURCE_FLOW_RUN}:{flow_run_id}"


def utc_now() -> datetime:
    return datetime.now(UTC)


class KeyReused(StoreError):
    """An idempotency key came again with another row: a client bug, not a retry."""


class ClaimLost(StoreError):
    """The fine-tune is no longer this run's: its lease ran out and another run claimed it,
    or it was finished."""


class Outcome(StrEnum):
    """How a fine-tune ended; each is final (a failed one is not retried: the next multiple
    trains on all its rows anyway)."""

    REGISTERED = "registered"
    REJECTED = "rejected"
    FAILED = "failed"
    DEFERRED = "deferred"  # gated promotion: a challenger was under evaluation


@dataclass(frozen=True, slots=True)
class Feedback:
    """One labelled flower: its measurements (cm, in `FEATURES` order) and true class."""

    measurements: tuple[float, float, float, float]
    class_name: str


@dataclass(frozen=True, slots=True)
class Answers:
    """What the served models said of a row when it was accepted: the champion's ONNX version
    and class, and the challenger's while one is loaded (gated promotion's evidence)."""

    champion_version: str
    champion_class: str
    challenger_version: str | None = None
    challenger_class: str | None = None


@dataclass(frozen=True, slots=True)
class Challenger:
    """A challenger of gated promotion (see `register_challenger`)."""

    version: str  # its ONNX model's version: what the API serves, what the rows' answers name
    versions: dict[str, str]  # registered model name -> its version, both models
    trained_rows: int  # it was fine-tuned on the first this many applied rows
    champion_version: str  # the champion's ONNX version it is compared with
    registered_at: datetime
    decided_at: datetime | None = None
    decision: str | None = None  # "promoted" or "retired"
    evidence: dict[str, Any] | None = None  # the numbers behind the decision
    decided_by: str | None = None


@dataclass(frozen=True, slots=True)
class Evidence:
    """A challenger's paired rows: accepted while both it and its champion answered, and not
    among the rows it was trained on. `wins`: only the challenger right; `losses`: only the
    champion right."""

    rows: int
    wins: int
    losses: int
    challenger_right: int
    champion_right: int


@dataclass(frozen=True, slots=True)
class Added:
    id: int  # acceptance order
    new: bool  # False when the key was stored before (a retry)


@dataclass(frozen=True, slots=True)
class Claimed:
    """The rows one `claim_pending` applied: applied_seq first_seq..last_seq (none when
    first_seq > last_seq); last_seq is the number of applied rows afterwards."""

    first_seq: int
    last_seq: int

    @property
    def count(self) -> int:
        return self.last_seq - self.first_seq + 1


@dataclass(frozen=True, slots=True)
class Claim:
    """The caller holds the fine-tune on the first `rows` applied rows: run it, then
    `finish_finetune` (or `renew_finetune` before the lease runs out)."""

    rows: int
    attempt: int  # 1, or more when an earlier claim's lease ran out
    #: What an earlier attempt finished (`checkpoint_finetune`), for this one to go on from.
    checkpoint: dict[str, Any] | None = None
    #: The run that held it before (None on the first attempt).
    previous_run_id: str | None = None


@dataclass(frozen=True, slots=True)
class Held:
    """The next owed fine-tune is another run's until `until`: that run goes on with the ones
    after it, so the caller stops."""

    rows: int
    run_id: str
    until: datetime


@dataclass(frozen=True, slots=True)
class Finetune:
    rows: int
    claimed_by: str
    claimed_at: datetime
    lease_s: float
    attempts: int
    finished_at: datetime | None
    outcome: Outcome | None
    detail: str | None
    checkpoint: dict[str, Any] | None = None

    @property
    def finished(self) -> bool:
        return self.finished_at is not None


@dataclass(frozen=True, slots=True)
class Backlog:
    """What is left to do at `now`, for the API to decide whether to start a catch-up run."""

    now: datetime
    pending: int  # accepted rows no run has applied yet
    oldest_pending_at: datetime | None  # when the oldest of them was received
    applied: int
    owed: int  # fine-tunes owed that no live claim holds
    owed_since: datetime | None  # when the first of those became owed (its k-th row applied)
    running: int  # owed fine-tunes a live claim holds (0 or 1: they run one at a time)
    finetunes: dict[str, int] = field(default_factory=dict)  # finished ones by outcome
    newest_pending_id: int | None = None  # the last pending row's id (None: none pending)

    def stats(self) -> dict[str, Any]:
        """The same as JSON-able values, with ages in seconds."""

        def age(moment: datetime | None) -> float | None:
            return None if moment is None else round((self.now - moment).total_seconds(), 3)

        def iso(moment: datetime | None) -> str | None:
            return None if moment is None else moment.isoformat()

        return {
            "now": iso(self.now),
            "pending": self.pending,
            "oldest_pending_at": iso(self.oldest_pending_at),
            "oldest_pending_age_s": age(self.oldest_pending_at),
            "applied": self.applied,
            "owed": self.owed,
            "owed_since": iso(self.owed_since),
            "owed_age_s": age(self.owed_since),
            "running": self.running,
            "finetunes": {outcome.value: self.finetunes.get(outcome, 0) for outcome in Outcome},
        }


def _check_text(what: str, value: str) -> str:
    if not value or len(value) > MAX_KEY:
        raise ValueError(f"{what} must have 1 to {MAX_KEY} characters, got {len(value)}")
    return value


class FeedbackStore:
    """The feedback store at one URL: `FeedbackStore.open(url)`, then use; `close()` at the
    end (or use it as a context manager). Safe to share between threads, and to use from
    several processes at once."""

    def __init__(
        self, db: Database, migrated: tuple[str, ...], clock: Callable[[], datetime]
    ) -> None:
        self._db = db
        self._clock = clock
        #: Schema revisions this open applied (none when another process had done it).
        self.migrated = migrated

    @classmethod
    def open(
        cls,
        url: str,
        *,
        busy_timeout_s: float = 15.0,
        connect_timeout_s: int = 5,
        clock: Callable[[], datetime] = utc_now,
    ) -> FeedbackStore:
        """Connect and bring the schema up to date. `url`: sqlite:////absolute/path.db or
        postgresql://user:password@host:port/database. A write waits up to `busy_timeout_s`
        for another's lock; a connection attempt up to `connect_timeout_s`; beyond either,
        StoreUnavailable (as when the database cannot be reached). ValueError for a bad URL."""
        db = Database(Location.parse(url), busy_timeout_s, connect_timeout_s)
        try:
            migrated = db.migrate()
        except BaseException:
            db.close()
            raise
        return cls(db, migrated, clock)

    @property
    def location(self) -> str:
        """The backend and where it is, without a password (for logs and messages)."""
        return str(self._db.location)

    @property
    def database(self) -> Database:
        """The backend underneath: its engine and transactions (for tools and tests)."""
        return self._db

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def add(
        self,
        measurements: Sequence[float],
        class_name: str,
        key: str,
        source: str,
        answers: Answers | None = None,
    ) -> Added:
        """Store one accepted row under idempotency `key`, durably (committed) on return, with
        what the served models `answers`ed. The same key again, concurrently or not, stores
        nothing and answers that row (`new=False`); with other measurements or class,
        KeyReused."""
        values = tuple(float(v) for v in measurements)
        if len(values) != N_FEATURES or not all(math.isfinite(v) for v in values):
            raise ValueError(f"measurements: expected {N_FEATURES} finite numbers, got {values}")
        if class_name not in CLASS_NAMES:
            raise ValueError(f"class_name {class_name!r}: expected one of {CLASS_NAMES}")
        _check_text("key", key)
        _check_text("source", source)
        insert = postgres_insert if self._db.location.postgres else sqlite_insert
        statement = (
            insert(feedback)
            .values(
                key=key,
                **dict(zip(FEATURES, values, strict=True)),
                class_name=class_name,
                source=source,
                received_at=self._clock(),
                **(_answers(answers) if answers is not None else {}),
            )
            .on_conflict_do_nothing(index_elements=[feedback.c.key])
            .returning(feedback.c.id)
        )
        with self._db.write(lock=ROWS_LOCK, shared=True) as conn:
            new_id = conn.execute(statement).scalar_one_or_none()
            if new_id is not None:
                return Added(int(new_id), new=True)
            # The key exists (committed: ON CONFLICT waited for a concurrent insert of it).
            found = conn.execute(
                select(feedback.c.id, *(feedback.c[n] for n in FEATURES), feedback.c.class_name)
                .where(feedback.c.key == key)
            ).one()  # fmt: skip
        stored = tuple(found[1 : 1 + N_FEATURES])
        if stored != values or found.class_name != class_name:
            raise KeyReused(
                f"idempotency key {key!r} was stored with {stored} {found.class_name}, "
                f"not {values} {class_name}"
            )
        return Added(int(found.id), new=False)

    def claim_pending(self, run_id: str) -> Claimed:
        """Apply every pending row for run `run_id`: in acceptance order, each gets the next
        applied_seq. All or nothing: a run that dies before the commit leaves them pending."""
        _check_text("run_id", run_id)
        with self._db.read() as conn:  # nothing pending: no lock, no wait for adds
            if not conn.execute(select(_PENDING.exists())).scalar_one():
                applied = _applied(conn)
                return Claimed(applied + 1, applied)
        now = self._clock()
        with self._db.write(lock=ROWS_LOCK) as conn:
            base = _applied(conn)
            order = func.row_number().over(order_by=feedback.c.id)
            pending = (
                select(feedback.c.id, (order + base).label("seq"))
                .where(feedback.c.applied_seq.is_(None))
                .subquery()
            )
            result = conn.execute(
                update(feedback)
                .where(feedback.c.id == pending.c.id)
                .values(applied_seq=pending.c.seq, applied_at=now, applied_by=run_id)
            )
            return Claimed(base + 1, base + result.rowcount)

    def rows(self, upto_seq: int) -> list[Feedback]:
        """The applied rows with applied_seq <= `upto_seq`, in applied order (all of them
        once that many are applied: a fine-tune at k is owed only then)."""
        features = [feedback.c[name] for name in FEATURES]
        with self._db.read() as conn:
            found = conn.execute(
                select(*features, feedback.c.class_name)
                .where(feedback.c.applied_seq <= upto_seq)
                .order_by(feedback.c.applied_seq)
            ).all()
        return [Feedback((r[0], r[1], r[2], r[3]), r[4]) for r in found]

    def next_finetune(self, every: int, run_id: str, lease_s: float) -> Claim | Held | None:
        """Claim the first owed fine-tune for `run_id`, holding it for `lease_s` seconds.

        Owed: each multiple k of `every` up to the applied rows, above the last finished
        fine-tune (it trained on all rows before it). Only the first one can run: Claim it
        when it is free, its claim's lease ran out (its run died) or `run_id` holds it
        already (a retry of that run); Held when another run's live claim holds it; None
        when nothing is owed."""
        if every < 1 or lease_s <= 0:
            raise ValueError(f"every ({every}) must be >= 1 and lease_s ({lease_s}) > 0")
        _check_text("run_id", run_id)
        now = self._clock()
        with self._db.write(lock=FINETUNES_LOCK) as conn:
            k = (_last_finished(conn) // every + 1) * every
            if k > _applied(conn):
                return None
            held = conn.execute(select(finetunes).where(finetunes.c.rows == k)).one_or_none()
            if held is None:
                conn.execute(
                    finetunes.insert().values(
                        rows=k, claimed_by=run_id, claimed_at=now, lease_s=lease_s, attempts=1
                    )
                )
                return Claim(k, attempt=1)
            until = held.claimed_at + timedelta(seconds=held.lease_s)
            if held.claimed_by != run_id and until > now:
                return Held(k, held.claimed_by, until)
            conn.execute(
                update(finetunes)
                .where(finetunes.c.rows == k, finetunes.c.finished_at.is_(None))
                .values(
                    claimed_by=run_id,
                    claimed_at=now,
                    lease_s=lease_s,
                    attempts=finetunes.c.attempts + 1,
                )
            )
            checkpoint = json.loads(held.checkpoint) if held.checkpoint else None
            return Claim(k, held.attempts + 1, checkpoint, held.claimed_by)

    def renew_finetune(self, rows: int, run_id: str, lease_s: float) -> None:
        """Extend this run's claim on the fine-tune at `rows`: `lease_s` from now. ClaimLost
        if it is not this run's any more."""
        if lease_s <= 0:
            raise ValueError(f"lease_s ({lease_s}) must be > 0")
        self._update_claim(rows, run_id, claimed_at=self._clock(), lease_s=lease_s)

    def checkpoint_finetune(
        self, rows: int, run_id: str, checkpoint: dict[str, Any], lease_s: float
    ) -> None:
        """Keep `checkpoint` (JSON-able) with this run's claim on the fine-tune at `rows`, and
        renew the claim: a run that takes the fine-tune over later gets it in its `Claim`.
        ClaimLost if it is not this run's any more."""
        if lease_s <= 0:
            raise ValueError(f"lease_s ({lease_s}) must be > 0")
        text = json.dumps(checkpoint, sort_keys=True)
        if len(text) > MAX_DETAIL:
            raise ValueError(
                f"checkpoint: at most {MAX_DETAIL} characters of JSON, got {len(text)}"
            )
        self._update_claim(rows, run_id, claimed_at=self._clock(), lease_s=lease_s, checkpoint=text)

    def release_finetune(self, rows: int, run_id: str) -> None:
        """Give up this run's claim on the fine-tune at `rows` without an outcome (the run is
        being stopped, not failing): the next run takes it over at once, without waiting for
        the lease. ClaimLost if it is not this run's any more."""
        self._update_claim(rows, run_id, lease_s=0.0)

    def finish_finetune(self, rows: int, run_id: str, outcome: Outcome, detail: str) -> None:
        """Record how this run's fine-tune at `rows` ended; final. ClaimLost if the claim is
        not this run's any more (its lease ran out and another run took it over)."""
        self._update_claim(
            rows,
            run_id,
            finished_at=self._clock(),
            outcome=Outcome(outcome).value,
            detail=detail[:MAX_DETAIL],
        )

    def _update_claim(self, rows: int, run_id: str, **values: Any) -> None:
        with self._db.write(lock=FINETUNES_LOCK) as conn:
            result = conn.execute(
                update(finetunes)
                .where(
                    finetunes.c.rows == rows,
                    finetunes.c.claimed_by == run_id,
                    finetunes.c.finished_at.is_(None),
                )
                .values(**values)
            )
            if result.rowcount == 1:
                return
            held = conn.execute(select(finetunes).where(finetunes.c.rows == rows)).one_or_none()
        if held is None:
            raise ClaimLost(f"no claim on the fine-tune at {rows} rows")
        if held.finished_at is not None:
            raise ClaimLost(
                f"the fine-tune at {rows} rows finished already ({held.outcome}, "
                f"by {held.claimed_by})"
            )
        raise ClaimLost(
            f"the fine-tune at {rows} rows is held by {held.claimed_by} since "
            f"{held.claimed_at.isoformat()}, not by {run_id}"
        )

    def finetunes(self) -> list[Finetune]:
        """Every fine-tune claimed so far, in row order."""
        with self._db.read() as conn:
            found = conn.execute(select(finetunes).order_by(finetunes.c.rows)).all()
        return [
            Finetune(
                rows=r.rows,
                claimed_by=r.claimed_by,
                claimed_at=r.claimed_at,
                lease_s=r.lease_s,
                attempts=r.attempts,
                finished_at=r.finished_at,
                outcome=Outcome(r.outcome) if r.outcome is not None else None,
                detail=r.detail,
                checkpoint=json.loads(r.checkpoint) if r.checkpoint else None,
            )
            for r in found
        ]

    def backlog(self, every: int, now: datetime | None = None) -> Backlog:
        """Pending rows, applied rows and owed fine-tunes at `now` (default: the clock)."""
        if every < 1:
            raise ValueError(f"every ({every}) must be >= 1")
        now = now or self._clock()
        with self._db.read() as conn:
            pending, oldest, newest = conn.execute(
                select(
                    func.count(), func.min(feedback.c.received_at), func.max(feedback.c.id)
                ).where(feedback.c.applied_seq.is_(None))
            ).one()
            applied = _applied(conn)
            first = (_last_finished(conn) // every + 1) * every
            owed = list(range(first, applied + 1, every))
            running = 0
            if owed:
                held = conn.execute(
                    select(finetunes).where(finetunes.c.rows == owed[0])
                ).one_or_none()
                if held is not None and held.claimed_at + timedelta(seconds=held.lease_s) > now:
                    running, owed = 1, owed[1:]
            since = None
            if owed:
                since = conn.execute(
                    select(feedback.c.applied_at).where(feedback.c.applied_seq == owed[0])
                ).scalar_one()
            outcomes = conn.execute(
                select(finetunes.c.outcome, func.count())
                .where(finetunes.c.finished_at.is_not(None))
                .group_by(finetunes.c.outcome)
            ).all()
        return Backlog(
            now=now,
            pending=int(pending),
            oldest_pending_at=oldest,
            applied=applied,
            owed=len(owed),
            owed_since=since,
            running=running,
            finetunes={str(outcome): int(n) for outcome, n in outcomes},
            newest_pending_id=None if newest is None else int(newest),
        )

    # --- gated promotion -----------------------------------------------------------------

    def register_challenger(
        self, versions: dict[str, str], version: str, trained_rows: int, champion_version: str
    ) -> Challenger:
        """Record a new challenger (ONNX `version`, both models' `versions`), fine-tuned on the
        first `trained_rows` applied rows, to be compared with the champion's ONNX version
        `champion_version`; the record, which stays as it was if it exists already."""
        insert = postgres_insert if self._db.location.postgres else sqlite_insert
        with self._db.write(lock=FINETUNES_LOCK) as conn:
            conn.execute(
                insert(challengers)
                .values(
                    version=version,
                    versions=json.dumps(versions, sort_keys=True),
                    trained_rows=trained_rows,
                    champion_version=champion_version,
                    registered_at=self._clock(),
                )
                .on_conflict_do_nothing(index_elements=[challengers.c.version])
            )
            row = conn.execute(select(challengers).where(challengers.c.version == version)).one()
        return _challenger(row)

    def challengers(self) -> list[Challenger]:
        """Every challenger, in the order they were registered."""
        with self._db.read() as conn:
            rows = conn.execute(select(challengers).order_by(challengers.c.registered_at)).all()
        return [_challenger(r) for r in rows]

    def pending_challenger(self) -> Challenger | None:
        """The challenger not decided yet (the latest, if several were)."""
        waiting = [c for c in self.challengers() if c.decided_at is None]
        return waiting[-1] if waiting else None

    def evidence(self, challenger: Challenger) -> Evidence:
        """`challenger`'s paired rows (see `Evidence`); a row it was trained on (applied among
        the first `trained_rows`) never counts for it."""
        c = feedback.c
        with self._db.read() as conn:
            rows = conn.execute(
                select(c.class_name, c.champion_class, c.challenger_class).where(
                    c.challenger_version == challenger.version,
                    c.champion_version == challenger.champion_version,
                    c.challenger_class.is_not(None),
                    c.champion_class.is_not(None),
                    (c.applied_seq.is_(None)) | (c.applied_seq > challenger.trained_rows),
                )
            ).all()
        ours = sum(r.challenger_class == r.class_name for r in rows)
        theirs = sum(r.champion_class == r.class_name for r in rows)
        wins = sum(r.challenger_class == r.class_name != r.champion_class for r in rows)
        losses = sum(r.champion_class == r.class_name != r.challenger_class for r in rows)
        return Evidence(len(rows), wins, losses, ours, theirs)

    def decide(self, version: str, decision: str, evidence: dict[str, Any], by: str) -> bool:
        """Record the decision on challenger `version`, once: True for the caller that
        recorded it (it moves the aliases), False when it was decided already (by another
        run at the same time, say)."""
        with self._db.write(lock=FINETUNES_LOCK) as conn:
            result = conn.execute(
                update(challengers)
                .where(challengers.c.version == version, challengers.c.decided_at.is_(None))
                .values(
                    decided_at=self._clock(),
                    decision=decision,
                    evidence=json.dumps(evidence, sort_keys=True),
                    decided_by=by,
                )
            )
        return result.rowcount == 1


def _answers(answers: Answers) -> dict[str, str | None]:
    return {
        "champion_version": answers.champion_version,
        "champion_class": answers.champion_class,
        "challenger_version": answers.challenger_version,
        "challenger_class": answers.challenger_class,
    }


def _challenger(row: Any) -> Challenger:
    return Challenger(
        version=row.version,
        versions=json.loads(row.versions),
        trained_rows=int(row.trained_rows),
        champion_version=row.champion_version,
        registered_at=row.registered_at,
        decided_at=row.decided_at,
        decision=row.decision,
        evidence=json.loads(row.evidence) if row.evidence else None,
        decided_by=row.decided_by,
    )


_PENDING = select(feedback.c.id).where(feedback.c.applied_seq.is_(None))


def _applied(conn: Connection) -> int:
    """The number of applied rows (= the highest applied_seq: they have no gaps)."""
    return int(
        conn.execute(select(func.coalesce(func.max(feedback.c.applied_seq), 0))).scalar_one()
    )


def _last_finished(conn: Connection) -> int:
    """The rows of the last finished fine-tune, 0 when none finished."""
    return int(
        conn.execute(
            select(func.coalesce(func.max(finetunes.c.rows), 0)).where(
                finetunes.c.finished_at.is_not(None)
            )
        ).scalar_one()
    )
