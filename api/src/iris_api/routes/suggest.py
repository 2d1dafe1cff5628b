"""POST /suggest: feedback (measurements + true class) is stored, then applied by a flow run;
GET /feedback/stats: what is pending, applied and owed."""

from __future__ import annotations

import contextlib
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Header, Request

from iris_api.bodies import JSON_ONLY, body_schema, read_json, require
from iris_api.deps import AccessDep, FollowerDep, MetricsDep, OutboxDep
from iris_api.errors import JSONBytes
from iris_api.metrics import Metrics
from iris_api.routes.predict import ERRORS, JSON_BODY
from iris_api.schemas import SUGGEST_EXAMPLES, ErrorBody, SuggestInput, SuggestOutput
from iris_core import CLASS_NAMES
from iris_core.feedback import Answers

router = APIRouter(tags=["feedback"])


@router.post(
    "/suggest",
    status_code=202,
    response_model=SuggestOutput,
    openapi_extra=body_schema(SuggestInput, SUGGEST_EXAMPLES),
    responses={
        **{k: v for k, v in ERRORS.items() if k != 503},
        401: {"model": ErrorBody, "description": "A feedback token is required"},
        403: {"model": ErrorBody, "description": "The feedback token is wrong"},
        409: {"model": ErrorBody, "description": "The Idempotency-Key came with another body"},
        429: {"model": ErrorBody, "description": "Too many suggestions (see Retry-After)"},
        503: {"model": ErrorBody, "description": "The feedback store cannot take it: not stored"},
    },
)
async def suggest(
    request: Request,
    follower: FollowerDep,
    outbox: OutboxDep,
    access: AccessDep,
    metrics: MetricsDep,
    authorization: Annotated[
        str | None, Header(description="`Bearer <token>` when the API requires a token")
    ] = None,
    idempotency_key: Annotated[
        str | None,
        Header(
            max_length=190,
            description="Retries with the same key store nothing twice (one row per key)",
        ),
    ] = None,
) -> JSONBytes:
    """Feedback: a flower's measurements and its true class. 202 once the row is stored (a
    restart or a busy Prefect afterwards may delay it, never lose it); a flow run applies it,
    and every few rows (5 by default) fine-tunes the model. 503 if the store cannot take the
    row (nothing is stored then)."""
    access.check(authorization, request.client.host if request.client else "unknown")
    require(request.headers.get("content-type", ""), JSON_ONLY, JSON_BODY)
    feedback = read_json(await request.body(), SuggestInput)
    model, shadow = follower.current, follower.challenger
    x = np.array([feedback.row()], dtype=np.float32)
    predicted: str | None = None
    answers = None
    if model is not None:
        # The models' opinions, not predictions: `infer` leaves the prediction metrics alone.
        predicted = CLASS_NAMES[int(model.infer(x).labels[0])]
        answers = Answers(model.version.version, predicted)
        if shadow is not None and shadow.version.version != model.version.version:
            with contextlib.suppress(Exception):  # a challenger's failure is not the client's
                theirs = CLASS_NAMES[int(shadow.infer(x).labels[0])]
                answers = Answers(model.version.version, predicted, shadow.version.version, theirs)
    accepted = await outbox.accept(feedback.row(), feedback.class_name, idempotency_key, answers)
    agreed = None if predicted is None else predicted == feedback.class_name
    if accepted.row.new:
        metrics.feedback.labels(
            feedback.class_name, str(agreed).lower() if agreed is not None else "unknown"
        ).inc()
        if answers is not None:
            live(metrics, answers, feedback.class_name)
    run = accepted.run
    return JSONBytes(
        SuggestOutput(
            id=accepted.row.id,
            new=accepted.row.new,
            run="earlier" if not accepted.row.new else "created" if run else "pending",
            flow_run_id=run.id if run else None,
            flow_run_name=run.name if run else None,
            deployment=outbox.runs.name,
            predicted_class_name=predicted,
            model_version=model.version.version if model is not None else None,
            model_agreed=agreed,
        ).model_dump(),
        status_code=202,
    )


def live(metrics: Metrics, answers: Answers, truth: str) -> None:
    """Each role's answer on a labelled row: its live accuracy and its n."""
    roles: list[tuple[str, str, str | None]] = [
        ("served", answers.champion_version, answers.champion_class)
    ]
    if answers.challenger_version is not None:
        roles.append(("shadow", answers.challenger_version, answers.challenger_class))
    for role, version, said in roles:
        metrics.live_rows.labels(role, version).inc()
        if said == truth:
            metrics.live_correct.labels(role, version).inc()


@router.get("/feedback/stats")
async def feedback_stats(outbox: OutboxDep) -> dict[str, Any]:
    """Rows pending and applied, the age of the oldest pending one, fine-tunes owed and done,
    runs asked for (for new rows and to catch up): what the `iris_feedback_*` metrics say."""
    return await outbox.stats()
