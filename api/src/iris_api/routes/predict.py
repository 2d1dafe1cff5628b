"""POST /predict, /predict/batch and GET /model, as REST endpoints of the data plane."""

from __future__ import annotations

from typing import Any

from iris_api.bodies import JSON_ONLY, body_schema, read_json, require
from iris_api.dataplane import DataPlane
from iris_api.errors import Answer, json_answer
from iris_api.rest import Call, Endpoint
from iris_api.schemas import (
    PREDICT_EXAMPLES,
    BatchOutput,
    ErrorBody,
    ModelInfo,
    PredictInput,
    PredictOutput,
    ValidationErrorBody,
    batch_input,
)

JSON_BODY = "JSON (Content-Type: application/json)"
#: Answers every body-taking endpoint may give besides 200.
ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorBody, "description": "The body is over the limit"},
    415: {"model": ErrorBody, "description": "The body is not JSON"},
    422: {"model": ValidationErrorBody, "description": "A field is missing or out of range"},
    503: {"model": ErrorBody, "description": "No model loaded yet (the reason is given)"},
}


async def predict(dataplane: DataPlane, call: Call) -> Answer:
    require(call.content_type, JSON_ONLY, JSON_BODY)
    return json_answer(dataplane.predict(read_json(call.body, PredictInput)))


async def model_info(dataplane: DataPlane, call: Call) -> Answer:
    return json_answer(dataplane.model_info())


def endpoints(batch_limit: int) -> list[Endpoint]:
    batch = batch_input(batch_limit)

    async def predict_batch(dataplane: DataPlane, call: Call) -> Answer:
        require(call.content_type, JSON_ONLY, JSON_BODY)
        flowers: list[PredictInput] = read_json(call.body, batch).instances  # type: ignore[attr-defined]
        return json_answer(dataplane.predict_batch(flowers))

    tags = ("predict",)
    return [
        Endpoint(
            "POST", "/predict", predict,
            "The class of one flower (`PredictInput`), with the probability of each class.",
            tags, PredictOutput, ERRORS, body_schema(PredictInput, PREDICT_EXAMPLES),
        ),
        Endpoint(
            "POST", "/predict/batch", predict_batch,
            f"Up to {batch_limit} flowers in one call (`IRIS_API_BATCH_LIMIT`).",
            tags, BatchOutput, ERRORS, body_schema(batch),
        ),
        Endpoint(
            "GET", "/model", model_info,
            "Name, version, alias, run and test accuracy of the served model, and when it was "
            "loaded.",
            ("model",), ModelInfo, {503: ERRORS[503]},
        ),
    ]  # fmt: skip
