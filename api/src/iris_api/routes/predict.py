"""POST /predict and /predict/batch."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from iris_api.deps import PredictionsDep, body_schema, parse
from iris_api.errors import JSONBytes
from iris_api.schemas import (
    PREDICT_EXAMPLES,
    BatchOutput,
    ErrorBody,
    PredictInput,
    PredictOutput,
    ValidationErrorBody,
    batch_input,
)

#: Answers every body-taking route may give besides 200.
ERRORS: dict[int | str, dict[str, Any]] = {
    415: {"model": ErrorBody, "description": "The body is not JSON"},
    422: {"model": ValidationErrorBody, "description": "A field is missing or out of range"},
    503: {"model": ErrorBody, "description": "No model loaded yet (the reason is given)"},
}


def router(batch_limit: int) -> APIRouter:
    api = APIRouter(tags=["predict"], responses=ERRORS)
    BatchInput = batch_input(batch_limit)

    @api.post(
        "/predict",
        response_model=PredictOutput,
        openapi_extra=body_schema(PredictInput, PREDICT_EXAMPLES),
    )
    async def predict(request: Request, predictions: PredictionsDep) -> JSONBytes:
        """The class of one flower (`PredictInput`), with the probability of each class."""
        return JSONBytes(predictions.one(await parse(request, PredictInput)))

    @api.post(
        "/predict/batch",
        response_model=BatchOutput,
        openapi_extra=body_schema(BatchInput),
        description=f"Up to {batch_limit} flowers in one call (`IRIS_API_BATCH_LIMIT`).",
    )
    async def predict_batch(request: Request, predictions: PredictionsDep) -> JSONBytes:
        batch = await parse(request, BatchInput)
        flowers: list[PredictInput] = batch.instances  # type: ignore[attr-defined]
        return JSONBytes(predictions.batch(flowers))

    return api
