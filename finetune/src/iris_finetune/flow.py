"""The Prefect flow `iris-finetune`: apply the pending feedback rows; at every
IRIS_FINETUNE_EVERY applied rows, fine-tune.

The rows are in the feedback store (`iris_core.feedback`): the API stores each accepted
suggestion there before it answers, then asks Prefect for a run. A run applies every pending
row (in acceptance order, each once, whichever run gets there first), then runs the fine-tunes
owed, in order, one at a time; a crashed or lost run therefore delays rows, never drops them,
and the next run (or the API's catch-up) picks up where it stopped. Started by hand (the
Prefect UI) with the four measurements and the true class, a run stores that row first, once.

Thin wrappers: the work is in the store and in `iris_finetune.tune`; the fine-tune's steps run
as tasks of their own (load_champion, tune, evaluate, register), so the UI shows the step a
failed run stopped in. Parameters are validated by Prefect from these annotations (the
deployment's parameter schema says the same). Deployments: `prefect.yaml` at the repository
root (`local`: a process work pool; `kubernetes`: a pod per run from the finetune image).
"""

from __future__ import annotations

import logging
import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Self

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from pydantic import Field

from iris_core import MEASUREMENT_MAX_CM, ClassName
from iris_core.feedback import (
    SOURCE_FLOW_RUN,
    Added,
    Claim,
    Claimed,
    ClaimLost,
    Feedback,
    FeedbackStore,
    Held,
    Outcome,
    StoreError,
    flow_run_key,
)
from iris_finetune.settings import FinetuneSettings

if TYPE_CHECKING:
    from iris_finetune.tune import Evaluated, Parent, Tuned, TuneOutcome

FLOW_NAME = "iris-finetune"

log = logging.getLogger(__name__)

Cm = Annotated[float, Field(gt=0, le=MEASUREMENT_MAX_CM, description="cm")]


@task(retries=3, retry_delay_seconds=1, cache_policy=NO_CACHE, persist_result=False)
def add_row(store: FeedbackStore, run_id: str, row: Feedback) -> Added:
    """The row this run was started with, stored once (a retry finds it again)."""
    return store.add(row.measurements, row.class_name, flow_run_key(run_id), SOURCE_FLOW_RUN)


@task(retries=3, retry_delay_seconds=1, cache_policy=NO_CACHE, persist_result=False)
def apply_pending(store: FeedbackStore, run_id: str) -> Claimed:
    """Every pending row, in acceptance order, applied by this run (all or none)."""
    return store.claim_pending(run_id)


# The steps of a fine-tune: they hand each other models and arrays in-process, so there is
# nothing to cache (NO_CACHE: no hashing of models either) and nothing to write to result
# storage (persist_result=False: a retried flow run runs them again). Each imports
# `iris_finetune.tune` (scikit-learn, MLflow) when it runs: flow runs that only store a row do
# not pay for the import.


@task(cache_policy=NO_CACHE, persist_result=False)
def load_champion(settings: FinetuneSettings, folder: Path) -> Parent:
    from iris_finetune import tune as steps  # noqa: PLC0415

    return steps.load_champion(settings, folder)


@task(cache_policy=NO_CACHE, persist_result=False)
def tune(settings: FinetuneSettings, parent: Parent, rows: list[Feedback]) -> Tuned:
    from iris_finetune import tune as steps  # noqa: PLC0415

    return steps.tune(settings, parent, rows)


@task(cache_policy=NO_CACHE, persist_result=False)
def evaluate(settings: FinetuneSettings, parent: Parent, tuned: Tuned, run_id: str) -> Evaluated:
    from iris_finetune import tune as steps  # noqa: PLC0415

    return steps.evaluate(settings, parent, tuned, run_id)


@task(cache_policy=NO_CACHE, persist_result=False)
def register(settings: FinetuneSettings, evaluated: Evaluated) -> TuneOutcome:
    from iris_finetune import tune as steps  # noqa: PLC0415

    return steps.register(settings, evaluated)


@task(cache_policy=NO_CACHE, persist_result=False)
def abandon_attempts(settings: FinetuneSettings, rows: int, previous_run_id: str) -> list[str]:
    from iris_finetune import tune as steps  # noqa: PLC0415

    return steps.abandon_attempts(settings, rows, previous_run_id)


class Lease:
    """Keeps this run's claim on a fine-tune alive while it works: renewed every third of the
    lease from a thread of its own, whatever a step is waiting for, so the claim runs out only
    when the run is gone (killed, its pod or machine lost) and another run can take the
    fine-tune over a lease later. `check()` between steps raises ClaimLost once the claim is
    not this run's any more (a renewal could not reach the store for a whole lease)."""

    def __init__(self, store: FeedbackStore, rows: int, run_id: str, lease_s: float) -> None:
        self.store, self.rows, self.run_id, self.lease_s = store, rows, run_id, lease_s
        self.lost: ClaimLost | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="finetune-lease", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def check(self) -> None:
        if self.lost is not None:
            raise self.lost
        self.store.renew_finetune(self.rows, self.run_id, self.lease_s)

    def _renew(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                self.store.renew_finetune(self.rows, self.run_id, self.lease_s)
            except ClaimLost as e:
                self.lost = e
                return
            except StoreError as e:  # unreachable for now: the next renewal may get through
                log.warning("could not renew the claim on the fine-tune at %d rows: %s",
                            self.rows, e)  # fmt: skip


def fine_tune(
    settings: FinetuneSettings,
    store: FeedbackStore,
    claim: Claim,
    run_id: str,
    lease: Lease,
) -> TuneOutcome:
    """The fine-tune `claim` holds: `iris_finetune.tune.fine_tune` with each step a task and the
    lease checked before each. Its checkpoint (kept with the claim once the MLflow run is
    complete) lets a run that takes it over register that result instead of tuning again;
    without one, an earlier attempt's MLflow run left RUNNING is marked KILLED and the
    fine-tune starts over."""
    from iris_finetune import tune as steps  # noqa: PLC0415

    if claim.checkpoint is not None:
        lease.check()
        return register(settings, steps.Evaluated.from_checkpoint(claim.checkpoint))
    if claim.previous_run_id is not None and claim.previous_run_id != run_id:
        abandon_attempts(settings, claim.rows, claim.previous_run_id)

    def checkpoint(evaluated: Evaluated) -> None:
        store.checkpoint_finetune(claim.rows, run_id, evaluated.checkpoint(), settings.lease_s)

    tasks = steps.Steps(load_champion, tune, evaluate, register)
    return steps.fine_tune(settings, store.rows(claim.rows), run_id, tasks, lease.check, checkpoint)


@task(cache_policy=NO_CACHE, persist_result=False)
def fine_tune_at(
    store: FeedbackStore, settings: FinetuneSettings, claim: Claim, run_id: str
) -> dict[str, Any]:
    """The fine-tune on the first `claim.rows` applied rows, claimed by this run; its steps
    run as tasks inside this one, and the store records how it ended (FAILED if a step raised:
    the next fine-tune trains on these rows too; released, for another run, if the run was
    stopped)."""
    logger = get_run_logger()
    rows = claim.rows
    try:
        with Lease(store, rows, run_id, settings.lease_s) as lease:
            outcome = fine_tune(settings, store, claim, run_id, lease)
    except ClaimLost:
        logger.warning("the fine-tune at %d rows was taken over by another run", rows)
        raise
    except Exception as e:
        store.finish_finetune(rows, run_id, Outcome.FAILED, f"{type(e).__name__}: {e}")
        raise
    except BaseException:
        # Stopped, not failed (SIGTERM: a pod evicted, a worker shutting down): the next run
        # takes the fine-tune over at once.
        store.release_finetune(rows, run_id)
        raise
    result = Outcome.REGISTERED if outcome.registered else Outcome.REJECTED
    store.finish_finetune(rows, run_id, result, outcome.reason)
    logger.info(
        "fine-tune at %d rows: %s (%s); test accuracy %.4f (its parent had %.4f); "
        "MLflow run %s; timings %s",
        rows,
        result,
        outcome.reason,
        outcome.test_accuracy,
        outcome.parent_test_accuracy,
        outcome.run_id,
        {k: round(v, 2) for k, v in outcome.timings_s.items()},
    )
    return {
        "rows": rows,
        "result": str(result),
        "reason": outcome.reason,
        "test_accuracy": outcome.test_accuracy,
        "run_id": outcome.run_id,
        "registered": outcome.registered,
        "parent_versions": outcome.parent_versions,
    }


def given_row(
    measurements: tuple[float | None, float | None, float | None, float | None],
    class_name: str | None,
) -> Feedback | None:
    """The row a run was started with: all five parameters, or none (a run the API asked for
    applies what is pending); some but not all is a mistake worth stopping for."""
    if class_name is None and all(m is None for m in measurements):
        return None
    m0, m1, m2, m3 = measurements
    if class_name is None or m0 is None or m1 is None or m2 is None or m3 is None:
        raise ValueError(
            "give all four measurements and class_name (a row of feedback), or none of them"
        )
    return Feedback((m0, m1, m2, m3), class_name)


@flow(name=FLOW_NAME, validate_parameters=True)
def finetune(
    sepal_length: Cm | None = None,
    sepal_width: Cm | None = None,
    petal_length: Cm | None = None,
    petal_width: Cm | None = None,
    class_name: ClassName | None = None,
) -> dict[str, Any]:
    """Apply the pending feedback rows; fine-tune at every multiple of IRIS_FINETUNE_EVERY
    applied rows, in order. Given a flower and its class (a run started by hand), store that
    row first, once."""
    row = given_row((sepal_length, sepal_width, petal_length, petal_width), class_name)
    settings = FinetuneSettings()
    logger = get_run_logger()
    run_id = flow_run.get_id() or f"local-{uuid.uuid4()}"
    with FeedbackStore.open(settings.store_url) as store:
        answer: dict[str, Any] = {}
        if row is not None:
            added = add_row(store, run_id, row)
            answer["added"] = added.id
            logger.info("feedback row %d %s (%s)", added.id,
                        "stored" if added.new else "was stored by an earlier try",
                        row.class_name)  # fmt: skip
        claimed = apply_pending(store, run_id)
        answer["applied"] = [claimed.first_seq, claimed.last_seq] if claimed.count else []
        logger.info(
            "applied %d pending rows (%s); %d applied in all",
            claimed.count,
            f"{claimed.first_seq}..{claimed.last_seq}" if claimed.count else "none",
            claimed.last_seq,
        )
        tuned = []
        while (turn := store.next_finetune(settings.every, run_id, settings.lease_s)) is not None:
            if isinstance(turn, Held):
                logger.info(
                    "the fine-tune at %d rows is %s's until %s: it goes on from there",
                    turn.rows, turn.run_id, turn.until.isoformat(),
                )  # fmt: skip
                break
            if turn.attempt > 1:
                logger.warning(
                    "the fine-tune at %d rows was left by run %s: taking it over (attempt %d, "
                    "%s)", turn.rows, turn.previous_run_id, turn.attempt,
                    "registering its checkpoint" if turn.checkpoint else "from the start",
                )  # fmt: skip
            tuned.append(fine_tune_at(store, settings, turn, run_id))
        answer["finetunes"] = tuned
    return answer
