"""The Prefect flow `iris-finetune`: store one feedback row; every N rows, fine-tune.

Thin wrappers: the work is in `iris_finetune.store` and `iris_finetune.tune`. Parameters are
the 4 measurements and the true class, validated by Prefect from these annotations (the
deployment's parameter schema says the same). Deployments: `prefect.yaml` at the repository
root (`local`: a process work pool; `kubernetes`: a pod per run from the finetune image).
"""

from __future__ import annotations

from typing import Annotated, Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from pydantic import Field

from iris_core import MEASUREMENT_MAX_CM, ClassName
from iris_finetune.settings import FinetuneSettings
from iris_finetune.store import FAILED, Feedback, FeedbackStore, Stored, Turn

FLOW_NAME = "iris-finetune"

Cm = Annotated[float, Field(gt=0, le=MEASUREMENT_MAX_CM, description="cm")]


@task(retries=3, retry_delay_seconds=1, cache_policy=NO_CACHE)
def store_feedback(store: FeedbackStore, run_id: str, row: Feedback) -> Stored:
    return store.add(run_id, row)


@task(cache_policy=NO_CACHE)
def fine_tune_at(
    store: FeedbackStore, settings: FinetuneSettings, rows: int, run_id: str
) -> dict[str, Any]:
    """The fine-tune at `rows` rows, after the one before it (feedback order), once."""
    logger = get_run_logger()
    after = rows - settings.every if rows > settings.every else None
    turn, timed_out = store.wait_turn(rows, run_id, after, settings.order_timeout_s)
    if timed_out:
        logger.warning("the fine-tune at %s rows did not finish in time: going ahead", after)
    if turn is Turn.DONE:
        logger.info("the fine-tune at %d rows ran before (a retry): nothing to do", rows)
        return {"rows": rows, "skipped": "done before"}
    from iris_finetune.tune import fine_tune  # noqa: PLC0415 (sklearn and MLflow: only here)

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
