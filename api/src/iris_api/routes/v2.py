"""Open Inference Protocol (KServe V2) subset: health, metadata, infer on an FP32 [N, 4] tensor."""

from __future__ import annotations

from importlib.metadata import version as package_version
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError

from iris_api.deps import FollowerDep, PredictionsDep, PredictorDep, body_schema, parse
from iris_api.errors import JSONBytes
from iris_api.routes.predict import ERRORS
from iris_api.schemas import (
    Live,
    Ready,
    V2InferRequest,
    V2InferResponse,
    V2ModelMetadata,
    V2ServerMetadata,
    V2TensorMetadata,
)
from iris_core import CLASS_NAMES, N_FEATURES

INPUTS = [V2TensorMetadata(name="input", datatype="FP32", shape=[-1, N_FEATURES])]
OUTPUTS = [
    V2TensorMetadata(name="label", datatype="INT64", shape=[-1]),
    V2TensorMetadata(name="probabilities", datatype="FP32", shape=[-1, len(CLASS_NAMES)]),
]


def router(model_name: str, batch_limit: int) -> APIRouter:
    api = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"])

    @api.get("/health/live")
    async def live() -> Live:
        """The process answers (always 200)."""
        return Live(live=True)

    @api.get("/health/ready", response_model=Ready, responses={503: {"model": Ready}})
    async def ready(follower: FollowerDep) -> JSONBytes:
        """200 once a model is loaded; 503 with the reason until then."""
        if follower.current is None:
            return JSONBytes({"ready": False, "reason": follower.reason}, status_code=503)
        return JSONBytes({"ready": True, "reason": None})

    @api.get("")
    async def server_metadata() -> V2ServerMetadata:
        return V2ServerMetadata(name="iris-api", version=package_version("iris-api"), extensions=[])

    @api.get(f"/models/{model_name}", responses={503: ERRORS[503]})
    async def model_metadata(model: PredictorDep) -> V2ModelMetadata:
        return V2ModelMetadata(
            name=model_name,
            versions=[model.version.version],
            platform="onnxruntime_onnx",
            inputs=INPUTS,
            outputs=OUTPUTS,
        )

    @api.get(f"/models/{model_name}/ready", response_model=Ready, responses={503: {"model": Ready}})
    async def model_ready(follower: FollowerDep) -> JSONBytes:
        return await ready(follower)

    @api.post(
        f"/models/{model_name}/infer",
        response_model=V2InferResponse,
        responses=ERRORS,
        openapi_extra=body_schema(V2InferRequest),
    )
    async def infer(http: Request, predictions: PredictionsDep) -> JSONBytes:
        """Rows of 4 measurements (cm) in; `label` (INT64 [N]) and `probabilities` (FP32 [N, 3]) out."""
        request = await parse(http, V2InferRequest)
        model = predictions.model()
        tensor = request.inputs[0]
        n, width = tensor.shape
        problems: list[dict[str, Any]] = []
        if width != N_FEATURES:
            problems.append(_problem("shape", 1, f"must be {N_FEATURES} (the measurements)"))
        if n > batch_limit:
            problems.append(_problem("shape", 0, f"at most {batch_limit} rows"))
        if len(tensor.data) != n * width:
            problems.append(
                _problem("data", None, f"{len(tensor.data)} values for shape [{n}, {width}]")
            )
        if problems:
            raise RequestValidationError(problems)
        x = np.asarray(tensor.data, dtype=np.float32).reshape(n, width)
        outputs = predictions.predict(model, x)
        wanted = (
            {o.name for o in request.outputs} if request.outputs else {"label", "probabilities"}
        )
        tensors = []
        if "label" in wanted:
            tensors.append(
                {
                    "name": "label",
                    "shape": [n],
                    "datatype": "INT64",
                    "data": outputs.labels.tolist(),
                }
            )
        if "probabilities" in wanted:
            tensors.append(
                {
                    "name": "probabilities",
                    "shape": [n, len(CLASS_NAMES)],
                    "datatype": "FP32",
                    "data": outputs.probabilities.ravel().tolist(),
                }
            )
        body = {
            "model_name": model_name,
            "model_version": model.version.version,
            "id": request.id,
            "outputs": tensors,
        }
        return JSONBytes(body)

    return api


def _problem(field: str, index: int | None, message: str) -> dict[str, Any]:
    loc: tuple[str | int, ...] = ("body", "inputs", 0, field)
    if index is not None:
        loc = (*loc, index)
    return {"type": "value_error", "loc": loc, "msg": message, "input": None}
