"""POST /predict and /predict/batch."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Request

from iris_api.deps import body_schema, parse, predictor
from iris_api.errors import JSONBytes
from iris_api.model import Outputs, Predictor
from iris_api.schemas import (
    PREDICT_EXAMPLES,
    BatchOutput,
    ErrorBody,
    PredictInput,
    PredictOutput,
    ValidationErrorBody,
    batch_input,
)
from iris_core import CLASS_NAMES

#: Answers every body-taking route may give besides 200.
ERRORS: dict[int | str, dict[str, Any]] = {
    415: {"model": ErrorBody, "description": "The body is not JSON"},
    422: {"model": ValidationErrorBody, "description": "A field is missing or out of range"},
    503: {"model": ErrorBody, "description": "No model loaded yet (the reason is given)"},
}


def _prediction(label: int, probabilities: list[float]) -> dict[str, Any]:
    """One `Prediction` as plain data for orjson (probabilities already rounded)."""
    return {
        "class_name": CLASS_NAMES[label],
        "class_index": label,
        "probabilities": dict(zip(CLASS_NAMES, probabilities, strict=True)),
    }


def predictions(outputs: Outputs) -> list[dict[str, Any]]:
    """Every row's `Prediction` (numpy rounds a whole batch at once)."""
    probabilities = np.round(outputs.probabilities.astype(np.float64), 6).tolist()
    return [
        _prediction(label, row)
        for label, row in zip(outputs.labels.tolist(), probabilities, strict=True)
    ]


def predict_one(flower: PredictInput, model: Predictor) -> dict[str, Any]:
    """`PredictOutput` for one flower (shared with `fastpath`; no numpy calls for one row)."""
    outputs = model.run(np.array([flower.row()], dtype=np.float32))
    rounded = [round(p, 6) for p in outputs.probabilities[0].tolist()]
    answer = _prediction(int(outputs.labels[0]), rounded)
    answer["model_version"] = model.version.version
    return answer


def router(batch_limit: int) -> APIRouter:
    api = APIRouter(tags=["predict"], responses=ERRORS)
    BatchInput = batch_input(batch_limit)

    @api.post(
        "/predict",
        response_model=PredictOutput,
        openapi_extra=body_schema(PredictInput, PREDICT_EXAMPLES),
    )
    async def predict(request: Request) -> JSONBytes:
        """The class of one flower (`PredictInput`), with the probability of each class."""
        return JSONBytes(predict_one(await parse(request, PredictInput), predictor(request)))

    @api.post(
        "/predict/batch",
        response_model=BatchOutput,
        openapi_extra=body_schema(BatchInput),
        description=f"Up to {batch_limit} flowers in one call (`IRIS_API_BATCH_LIMIT`).",
    )
    async def predict_batch(request: Request) -> JSONBytes:
        batch = await parse(request, BatchInput)
        model = predictor(request)
        flowers: list[PredictInput] = batch.instances  # type: ignore[attr-defined]
        outputs = model.run(np.array([f.row() for f in flowers], dtype=np.float32))
        return JSONBytes(
            {"predictions": predictions(outputs), "model_version": model.version.version}
        )

    return api
