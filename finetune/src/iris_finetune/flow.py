"""The Prefect flow `iris-finetune`: store one feedback row; every N rows, fine-tune.

Thin wrappers: the work is in `iris_finetune.store` and `iris_finetune.tune`; the fine-tune's
steps run as tasks of their own (load_champion, tune, evaluate, register), so the UI shows
the step a failed run stopped in. Parameters are the 4 measurements and the true class,
validated by Prefect from these annotations (the deployment's parameter schema says the
same). Deployments: `prefect.yaml` at the repository root (`local`: a process work pool;
`kubernetes`: a pod per run from the finetune image).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from pydantic import Field

from iris_core import MEASUREMENT_MAX_CM, ClassName
from iris_finetune.settings import FinetuneSettings
from iris_finetune.store import FAILED, Feedback, FeedbackStore, Stored, Turn

if TYPE_CHECKING:
    from iris_finetune.tune import Evaluated, Parent, Tuned, TuneOutcome

FLOW_NAME = "iris-finetune"

Cm = Annotated[float, Field(gt=0, le=MEASUREMENT_MAX_CM, description="cm")]


@task(retries=3, retry_delay_seconds=1, cache_policy=NO_CACHE)
def store_feedback(store: FeedbackStore, run_id: str, row: Feedback) -> Stored:
    return store.add(run_id, row)


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
def register(
    settings: FinetuneSettings, parent: Parent, tuned: Tuned, evaluated: Evaluated
) -> TuneOutcome:
    from iris_finetune import tune as steps  # noqa: PLC0415

    return steps.register(settings, parent, tuned, evaluated)


def fine_tune(settings: FinetuneSettings, rows: list[Feedback], run_id: str) -> TuneOutcome:
    """`iris_finetune.tune.fine_tune`, each step a task (`rows`: the feedback to tune on)."""
    with tempfile.TemporaryDirectory(prefix="iris-finetune-") as tmp:
        parent = load_champion(settings, Path(tmp))
        tuned = tune(settings, parent, rows)
        evaluated = evaluate(settings, parent, tuned, run_id)
        return register(settings, parent, tuned, evaluated)


@task(cache_policy=NO_CACHE)
def fine_tune_at(
    store: FeedbackStore, settings: FinetuneSettings, rows: int, run_id: str
) -> dict[str, Any]:
    """The fine-tune at `rows` rows, after the one before it (feedback order), once; its
    steps run as tasks inside this one, and the store records how it ended (FAILED if any
    step raised, so a retry or the next fine-tune can go on)."""
    logger = get_run_logger()
    after = rows - settings.every if rows > settings.every else None
    turn, timed_out = store.wait_turn(rows, run_id, after, settings.order_timeout_s)
    if timed_out:
        logger.warning("the fine-tune at %s rows did not finish in time: going ahead", after)
    if turn is Turn.DONE:
        logger.info("the fine-tune at %d rows ran before (a retry): nothing to do", rows)
        return {"rows": rows, "skipped": "done before"}
    try:
        outcome = fine_tune(settings, store.rows(upto=rows), run_id)
    except BaseException as e:
        store.finish(rows, FAILED, f"{type(e).__name__}: {e}")
        raise
    result = "registered" if outcome.registered else "rejected"
    store.finish(rows, result, outcome.reason)
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
        "result": result,
        "reason": outcome.reason,
        "test_accuracy": outcome.test_accuracy,
        "run_id": outcome.run_id,
        "registered": outcome.registered,
        "parent_versions": outcome.parent_versions,
    }


@flow(name=FLOW_NAME, retries=1, retry_delay_seconds=5, validate_parameters=True)
def finetune(
    sepal_length: Cm,
    sepal_width: Cm,
    petal_length: Cm,
    petal_width: Cm,
    class_name: ClassName,
) -> dict[str, Any]:
    """Store one feedback row (once per flow run); fine-tune when the store reaches a
    multiple of IRIS_FINETUNE_EVERY rows."""
    settings = FinetuneSettings()
    store = FeedbackStore(settings.feedback_db)
    run_id = flow_run.get_id() or ""
    row = Feedback((sepal_length, sepal_width, petal_length, petal_width), class_name)
    stored = store_feedback(store, run_id, row)
    logger = get_run_logger()
    logger.info(
        "feedback row %d %s (%s)",
        stored.seq,
        "stored" if stored.new else "was stored by an earlier try",
        class_name,
    )
    answer: dict[str, Any] = {"seq": stored.seq, "new": stored.new}
    if stored.seq % settings.every == 0:
        answer["finetune"] = fine_tune_at(store, settings, stored.seq, run_id)
    return answer
