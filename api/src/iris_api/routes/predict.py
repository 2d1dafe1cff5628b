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


def predictions(outputs: Outputs) -> list[dict[str, Any]]:
    """Rows of `Prediction`, as plain data for orjson."""
    probabilities = np.round(outputs.probabilities.astype(np.float64), 6).tolist()
    return [
        {
            "class_name": CLASS_NAMES[label],
            "class_index": label,
            "probabilities": dict(zip(CLASS_NAMES, row, strict=True)),
        }
        for label, row in zip(outputs.labels.tolist(), probabilities, strict=True)
    ]


def predict_one(flower: PredictInput, model: Predictor) -> dict[str, Any]:
    """`PredictOutput` for one flower, as plain data (shared with `fastpath`)."""
    x = np.array(
        [[flower.sepal_length, flower.sepal_width, flower.petal_length, flower.petal_width]],
        dtype=np.float32,
    )
    outputs = model.run(x)
    label = int(outputs.labels[0])
    return {
        "class_name": CLASS_NAMES[label],
        "class_index": label,
        "probabilities": {
            name: round(p, 6)
            for name, p in zip(CLASS_NAMES, outputs.probabilities[0].tolist(), strict=True)
        },
        "model_version": model.version.version,
    }


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
        x = np.array(
            [[f.sepal_length, f.sepal_width, f.petal_length, f.petal_width] for f in flowers],
            dtype=np.float32,
        )
        outputs = model.run(x)
        return JSONBytes(
            {"predictions": predictions(outputs), "model_version": model.version.version}
        )

    return api
