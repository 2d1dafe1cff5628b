"""POST /suggest: feedback (measurements + true class) becomes a Prefect flow run."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Header, Request

from iris_api.deps import FollowerDep, MetricsDep, PrefectDep, body_schema, parse
from iris_api.errors import JSONBytes, Upstream
from iris_api.routes.predict import ERRORS
from iris_api.schemas import SUGGEST_EXAMPLES, ErrorBody, SuggestInput, SuggestOutput
from iris_core import CLASS_NAMES

router = APIRouter(tags=["feedback"])


@router.post(
    "/suggest",
    status_code=202,
    response_model=SuggestOutput,
    openapi_extra=body_schema(SuggestInput, SUGGEST_EXAMPLES),
    responses={
        **{k: v for k, v in ERRORS.items() if k != 503},
        502: {"model": ErrorBody, "description": "Prefect refused the run"},
        503: {"model": ErrorBody, "description": "Prefect is unreachable or busy: not accepted"},
    },
)
async def suggest(
    request: Request,
    follower: FollowerDep,
    runs: PrefectDep,
    metrics: MetricsDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            max_length=200,
            description="Retries with the same key create no second run (nor a second row)",
        ),
    ] = None,
) -> JSONBytes:
    """Feedback: a flower's measurements and its true class. A Prefect flow run stores it;
    every few rows (5 by default) it fine-tunes the model. 202 with the flow run id once
    Prefect has the run; 503 if it cannot be reached (nothing is stored then)."""
    feedback = await parse(request, SuggestInput)
    model = follower.current
    predicted: str | None = None
    if model is not None:
        # The model's opinion, not a prediction: `infer` leaves the prediction metrics alone.
        outputs = model.infer(np.array([feedback.row()], dtype=np.float32))
        predicted = CLASS_NAMES[int(outputs.labels[0])]
    parameters: dict[str, Any] = feedback.model_dump()
    try:
        run = await runs.create(
            parameters, f"suggest-{idempotency_key}" if idempotency_key else None
        )
    except Upstream:
        metrics.feedback_failures.inc()
        raise
    agreed = None if predicted is None else predicted == feedback.class_name
    if run.new:
        metrics.feedback.labels(
            feedback.class_name, str(agreed).lower() if agreed is not None else "unknown"
        ).inc()
    return JSONBytes(
        SuggestOutput(
            flow_run_id=run.id,
            flow_run_name=run.name,
            deployment=runs.name,
            state=run.state,
            predicted_class_name=predicted,
            model_version=model.version.version if model is not None else None,
            model_agreed=agreed,
            new=run.new,
        ).model_dump(),
        status_code=202,
    )
