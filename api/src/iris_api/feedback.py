"""Feedback in the API: an accepted suggestion is a row in the feedback store (the outbox)
before `/suggest` answers; flow runs that apply the pending rows are asked for afterwards.

`FeedbackOutbox.accept` stores one row (one transaction; the idempotency key is unique), so a
202 means "stored": Prefect busy, down or losing the run afterwards delays the row, never loses
it. A background task (`run`) then asks Prefect for a flow run whenever rows were stored since
the last request (one run covers every row stored before it starts, so a burst of suggestions
needs a few runs, not one each), retrying with backoff while Prefect is away. Every
IRIS_API_FEEDBACK_CHECK_S it also reads the store's backlog: the metrics come from it, and a row
pending (or a fine-tune owed) for longer than IRIS_API_FEEDBACK_STALE_S means its run crashed
or was lost, so it asks for a catch-up run. Several API replicas may each ask: the runs agree
through the store (each row is applied once), and a catch-up's idempotency key is shared by
the replicas for one stale period.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from iris_api.errors import Refused, Upstream
from iris_api.metrics import Metrics
from iris_api.prefect import FINAL, FlowRun, PrefectRuns, RunState
from iris_api.settings import ApiSettings
from iris_core.feedback import (
    SOURCE_API,
    Added,
    Answers,
    Backlog,
    FeedbackStore,
    KeyReused,
    StoreUnavailable,
)

log = logging.getLogger(__name__)

#: First retry delay after Prefect failed to take a run; it doubles up to the check period.
BACKOFF_START_S = 0.5


@dataclass(frozen=True, slots=True)
class Accepted:
    row: Added
    run: FlowRun | None  # the run asked for that will apply it, if Prefect has answered yet


class FeedbackOutbox:
    """One per app: the store (opened, and migrated, off the event loop) and the run requests."""

    def __init__(self, settings: ApiSettings, runs: PrefectRuns, metrics: Metrics) -> None:
        self.settings = settings
        self.runs = runs
        self.metrics = metrics
        self.store: FeedbackStore | None = None
        self.reason = (
            "no feedback store configured (IRIS_FEEDBACK_STORE_URL)"
            if settings.feedback_store_url is None
            else "the feedback store is not open yet"
        )
        self.backlog: Backlog | None = None
        self.last_error: str | None = None
        #: The highest row id this process stored, and the highest a run was asked for.
        self._stored = 0
        self._requested = 0
        self._last_run: FlowRun | None = None
        #: In the key of the runs this process asks for new rows: Prefect keeps a key per flow,
        #: and row ids start again in another store (or after a reset).
        self._instance = uuid.uuid4().hex[:12]
        #: Runs asked for by this process: for new rows, to catch up, to replace a stuck one.
        self.requests = {"new": 0, "catchup": 0, "replace": 0}
        #: The run the rows wait for while it has not started (for the stats), and how many
        #: runs this process gave up on because they did not start in time.
        self.waiting_on: RunState | None = None
        self.superseded = 0
        #: Whether rows left pending by an earlier process were taken on (once, at start).
        self._adopted = False
        self._changed = asyncio.Condition()
        self._opening = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def configured(self) -> bool:
        return self.settings.feedback_store_url is not None

    async def start(self) -> None:
        if self.configured:
            await self._open()
            self._task = asyncio.create_task(self.run(), name="feedback-outbox")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.store is not None:
            await asyncio.to_thread(self.store.close)

    async def _open(self) -> bool:
        """Open (and migrate) the store; False, with the reason kept, while it is unreachable."""
        url = self.settings.feedback_store_url
        assert url is not None  # noqa: S101 (only called when configured)
        async with self._opening:  # one attempt at a time; the others use its store
            if self.store is not None:
                return True
            try:
                self.store = await asyncio.to_thread(FeedbackStore.open, url)
            except StoreUnavailable as e:
                self.reason = str(e)
                self.metrics.feedback_store_up.set(0)
                log.warning("feedback store not open: %s", e)
                return False
        self.metrics.feedback_store_up.set(1)
        log.info("feedback store: %s", self.store.location)
        return True

    async def accept(
        self,
        measurements: tuple[float, ...],
        class_name: str,
        key: str | None,
        answers: Answers | None = None,
    ) -> Accepted:
        """Store the row with what the served models `answers`ed (durable on return), ask for
        a run, and wait a moment for Prefect to say which run will apply it. Upstream(503)
        when the store cannot take it: then nothing is stored."""
        if not self.configured or not await self._open():
            self.metrics.feedback_failures.inc()
            raise Upstream(f"feedback not accepted: {self.reason}", retry_after_s=5)
        assert self.store is not None  # noqa: S101 (opened above)
        try:
            row = await asyncio.to_thread(
                self.store.add,
                measurements,
                class_name,
                f"{SOURCE_API}:{key or uuid.uuid4()}",
                SOURCE_API,
                answers,
            )
        except StoreUnavailable as e:
            self.metrics.feedback_store_up.set(0)
            self.metrics.feedback_failures.inc()
            raise Upstream(f"feedback not accepted: {e}", retry_after_s=5) from e
        except KeyReused as e:
            raise Refused(409, f"Idempotency-Key reused with another body: {e}") from e
        self.metrics.feedback_store_up.set(1)
        if not row.new:  # accepted before under this key: its run was asked for then
            return Accepted(row, None)
        self._stored = max(self._stored, row.id)
        self._wake.set()
        return Accepted(row, await self._run_for(row.id))

    async def _run_for(self, row_id: int) -> FlowRun | None:
        """The run asked for after row `row_id` was stored, if Prefect answers within
        IRIS_API_FEEDBACK_RUN_WAIT_S; None: it will be asked for (the row is stored)."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self._requested >= row_id),
                    self.settings.feedback_run_wait_s,
                )
            return self._last_run if self._requested >= row_id else None

    async def run(self) -> None:
        """Ask for runs while rows wait for one; check the backlog every check period. Never
        raises: the API must go on serving whatever the store or Prefect do."""
        failures = 0
        next_check = time.monotonic()  # at once: the metrics start from the store
        while True:
            self._wake.clear()  # a row stored from here on wakes the next round
            try:
                if self._stored > self._requested:
                    await self._request(self._stored)
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + self.settings.feedback_check_s
                    await self._check()
            except (Upstream, StoreUnavailable) as e:
                failures += 1
                self.last_error = e.detail if isinstance(e, Upstream) else str(e)
                if isinstance(e, Upstream):
                    self.metrics.feedback_run_failures.inc()
                else:
                    self.metrics.feedback_store_up.set(0)
                log.warning("feedback outbox (retry %d): %s", failures, self.last_error)
            except Exception as e:
                failures += 1
                self.last_error = repr(e)
                log.exception("feedback outbox: unexpected error")
            else:
                failures = 0
                self.last_error = None
            if failures:  # back off: new rows do not make a failing Prefect retried sooner
                backoff = BACKOFF_START_S * 2 ** min(failures - 1, 10)
                await asyncio.sleep(min(backoff, self.settings.feedback_check_s))
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_check - time.monotonic()))

    async def _request(self, upto: int) -> None:
        """A run for the rows stored up to id `upto` (its key: retries and replicas asking for
        the same rows get the same run), unless the last run asked for has not started yet
        and is in time: a run applies every row stored before it starts, so it takes these
        too. A burst of suggestions therefore costs a few runs (a process or a pod each), not
        one a row."""
        last = self._last_run
        status = await self._look_at_last_run()
        if status == "waiting" and last is not None:
            run = last
        elif status == "superseded" and last is not None:
            run = await self._ask(f"replace-{last.id}", "replace")
        else:
            run = await self._ask(f"apply-{self._instance}-{upto}", "new")
        async with self._changed:
            self._requested = max(self._requested, upto)
            self._last_run = run
            self._changed.notify_all()

    async def _look_at_last_run(self) -> str:
        """What the last run asked for is doing. "waiting": it has not started and is in
        time (it will apply the rows waiting now); "superseded": it has waited longer than
        IRIS_API_FEEDBACK_START_TIMEOUT_S to start (its worker or Prefect died while it was
        being submitted, a pod that cannot start, no worker polling) and was given up; "none"
        otherwise (no run, started, ended, or Prefect cannot say)."""
        last = self._last_run
        if last is None:
            self._watch(None)
            return "none"
        state = await self.runs.read(last.id)
        self._watch(state)
        if state is None or state.started:
            return "none"
        if state.waiting_s <= self.settings.feedback_start_timeout_s:
            return "waiting"
        await self._supersede(state)
        return "superseded"

    async def _ask(self, key: str, reason: str) -> FlowRun:
        """A run under idempotency `key`. When the key names a run an earlier request made
        (a retry, another replica, the same catch-up period) that can no longer apply the
        rows waiting now (it ended, or is stuck before its start), a run that replaces it,
        under a key derived from it, so replicas replacing the same run share the new one."""
        run = await self.runs.create({}, key)
        if not run.new:
            state = await self.runs.read(run.id)
            stuck = (
                state is not None
                and not state.started
                and state.waiting_s > self.settings.feedback_start_timeout_s
            )
            if state is not None and (stuck or state.type in FINAL):
                if stuck:
                    await self._supersede(state)
                run = await self.runs.create({}, f"replace-{run.id}")
                reason = "replace"
        self.requests[reason] += 1
        self.metrics.feedback_runs.labels(reason).inc()
        return run

    async def _supersede(self, state: RunState) -> None:
        """Give up on a run that did not start in time: CANCELLED ("Superseded") in Prefect,
        with the reason, so no worker starts it late and the UI says why. The rows it was
        asked for stay pending for the run that replaces it."""
        self.superseded += 1
        self.metrics.feedback_superseded.labels(state.type).inc()
        log.warning(
            "flow run %s (%s) has been %s for %.0f s, longer than "
            "IRIS_API_FEEDBACK_START_TIMEOUT_S (%g s): asking for a new run",
            state.name, state.id, state.type, state.waiting_s,
            self.settings.feedback_start_timeout_s,
        )  # fmt: skip
        await self.runs.supersede(
            state,
            f"Did not start within {self.settings.feedback_start_timeout_s:g} s (it was "
            f"{state.type} {state.state_name!r} for {state.waiting_s:.0f} s): the API asked "
            "for a new run; the rows it was for stay pending until a run applies them.",
        )

    def _watch(self, state: RunState | None) -> None:
        """What the run the rows wait for is doing, for /feedback/stats and the metrics."""
        waiting = state if state is not None and not state.started else None
        self.waiting_on = waiting
        self.metrics.feedback_run_waiting.set(waiting.waiting_s if waiting else 0.0)

    async def _check(self) -> None:
        """The backlog into the metrics; a catch-up run when something waits too long."""
        if not await self._open():
            return
        assert self.store is not None  # noqa: S101 (opened above)
        backlog = await asyncio.to_thread(self.store.backlog, self.settings.feedback_every)
        self.backlog = backlog
        self.metrics.feedback_store_up.set(1)
        self._export(backlog)
        if not self._adopted:
            # Rows an earlier process stored and no run applied (it was killed, or the whole
            # stack stopped): ask for a run at once instead of waiting the stale period.
            self._adopted = True
            if backlog.newest_pending_id is not None:
                self._stored = max(self._stored, backlog.newest_pending_id)
                self._wake.set()
        stale = self.settings.feedback_stale_s
        # Owed fine-tunes are a running run's to do while it holds the first of them.
        owed_since = backlog.owed_since if backlog.running == 0 else None
        late = [
            moment
            for moment in (backlog.oldest_pending_at, owed_since)
            if moment is not None and (backlog.now - moment).total_seconds() > stale
        ]
        if not (backlog.pending or backlog.owed):
            self._watch(None)
            return
        last = self._last_run
        status = await self._look_at_last_run()
        if status == "waiting":
            return  # the last run asked for has not started, and is in time: it takes them
        if status == "superseded" and last is not None:
            self._last_run = await self._ask(f"replace-{last.id}", "replace")
        elif late:
            # One key per store, deployment and stale period: replicas (and retries) share
            # the run. (Prefect keys are per flow: the store and deployment keep them apart.)
            period = int(time.time() // stale)
            where = hashlib.sha256(f"{self.store.location} {self.runs.name}".encode()).hexdigest()
            self._last_run = await self._ask(f"catchup-{where[:16]}-{period}", "catchup")
            log.warning(
                "feedback waiting since %s (%d pending rows, %d fine-tunes owed): asked for a "
                "catch-up run",
                min(late).isoformat(),
                backlog.pending,
                backlog.owed,
            )

    def _export(self, backlog: Backlog) -> None:
        m = self.metrics

        def age(moment: datetime | None) -> float:
            return 0.0 if moment is None else (backlog.now - moment).total_seconds()

        m.feedback_pending.set(backlog.pending)
        m.feedback_pending_age.set(age(backlog.oldest_pending_at))
        m.feedback_applied.set(backlog.applied)
        m.feedback_owed.set(backlog.owed)
        m.feedback_owed_age.set(age(backlog.owed_since))

    async def stats(self) -> dict[str, Any]:
        """What `GET /feedback/stats` answers: the backlog now, and the run requests."""
        answer: dict[str, Any] = {
            "store": self.store.location if self.store is not None else None,
            "store_error": None if self.store is not None else self.reason,
            "every": self.settings.feedback_every,
            "deployment": self.runs.name,
            "runs": {
                "requested_upto": self._requested,
                "stored_upto": self._stored,
                **self.requests,
                "superseded": self.superseded,
                "waiting_on": (
                    self.waiting_on.stats(self.settings.feedback_start_timeout_s)
                    if self.waiting_on is not None
                    else None
                ),
                "start_timeout_s": self.settings.feedback_start_timeout_s,
                "last_error": self.last_error,
            },
        }
        if self.store is not None:
            try:
                backlog = await asyncio.to_thread(self.store.backlog, self.settings.feedback_every)
            except StoreUnavailable as e:
                answer["store_error"] = str(e)
            else:
                answer |= backlog.stats()
        answer["now"] = answer.get("now") or datetime.now(UTC).isoformat()
        return answer
