"""Open Inference Protocol (KServe V2) REST API for the one served model: health, server and
model metadata, model readiness, infer (JSON and binary tensors, `iris_api.oip`), and the
extensions model configuration, statistics and model repository. Every model endpoint also
answers under `/versions/{version}` for the version served (another version: 404). Every
answer that is not a 2xx carries the protocol's `{"error": "..."}` (`iris_api.errors`).

POST /v2/models/{name}/infer is normally answered by the ASGI fast path (`iris_api.fastpath`);
the route here documents it and serves it with IRIS_API_FAST_PATH=false, through the same
`V2Infer.answer`.
"""

from __future__ import annotations

from importlib.metadata import version as package_version
from typing import Any, TypeVar

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel

from iris_api.deps import FollowerDep, PredictionsDep, V2InferDep, validate_json
from iris_api.errors import JSONBytes, NotFound, NotReady, Refused, UnsupportedMediaType
from iris_api.follower import ModelFollower
from iris_api.model import Predictor
from iris_api.oip import EXTENSIONS, HEADER_LENGTH, check_version, media_type
from iris_api.predicting import Predictions, VersionStats
from iris_api.schemas import (
    Live,
    V2Error,
    V2InferResponse,
    V2ModelMetadata,
    V2ModelReady,
    V2RepositoryIndexRequest,
    V2RepositoryModel,
    V2ServerMetadata,
    V2Statistics,
    V2TensorMetadata,
)
from iris_core import CLASS_NAMES, N_FEATURES

M = TypeVar("M", bound=BaseModel)

INPUTS = [V2TensorMetadata(name="input", datatype="FP32", shape=[-1, N_FEATURES])]
OUTPUTS = [
    V2TensorMetadata(name="label", datatype="INT64", shape=[-1]),
    V2TensorMetadata(name="probabilities", datatype="FP32", shape=[-1, len(CLASS_NAMES)]),
]
PLATFORM = "onnxruntime_onnx"


def _error(description: str) -> dict[str, Any]:
    return {"model": V2Error, "description": description}


#: Answers of the model endpoints besides 200.
MODEL_ERRORS: dict[int | str, dict[str, Any]] = {
    404: _error("No such model, or not the version served"),
    503: _error("No model loaded yet (the reason is given)"),
}
#: Answers of the endpoints with an optional JSON body, besides 200.
BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    415: _error("The body is not JSON"),
    422: _error("A field is wrong (`detail` lists where)"),
}
INFER_ERRORS: dict[int | str, dict[str, Any]] = {
    **MODEL_ERRORS,
    413: _error("The body is over the limit"),
    415: _error("The body is neither JSON nor JSON followed by binary tensors"),
    422: _error("A field, a tensor or the binary framing is wrong (`detail` lists where)"),
}

_BINARY_BODY = (
    "The JSON request (its length in the `Inference-Header-Content-Length` header), then the "
    "input's bytes: FP32 little-endian, row-major, `parameters.binary_data_size` bytes."
)
_INFER_OPENAPI: dict[str, Any] = {
    "parameters": [
        {
            "name": HEADER_LENGTH,
            "in": "header",
            "required": False,
            "description": "binary tensor data extension: bytes of JSON before the tensor data",
            "schema": {"type": "integer", "minimum": 0},
        }
    ],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/V2InferRequest"}},
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary"},
                "description": _BINARY_BODY,
            },
        },
    },
}
_INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The outputs; with outputs asked for as binary data, the JSON (its length "
        "in the `Inference-Header-Content-Length` header) then their bytes",
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/V2InferResponse"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    },
    **INFER_ERRORS,
}


async def parse_optional(request: Request, model: type[M]) -> M:
    """An optional JSON body (none, or no Content-Type, is fine: protocol clients send
    neither); 415 for another media type, 422 naming the fields at fault."""
    content_type = request.headers.get("content-type", "")
    if media_type(content_type) not in ("", "application/json"):
        raise UnsupportedMediaType(content_type, "JSON (Content-Type: application/json or none)")
    body = await request.body()
    if not body.strip():
        return model()
    return validate_json(body, model)


def router(model_name: str, batch_limit: int) -> APIRouter:  # noqa: PLR0915 (a route each)
    api = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"])
    name_param = Path(
        description=f"the model served here: `{model_name}`",
        json_schema_extra={"enum": [model_name]},
    )
    version_param = Path(description="the version served (`GET /v2/models/{model_name}`)")
    # As defaults, not `Annotated` aliases: the aliases would be local names, which the
    # postponed annotations of this module cannot resolve.

    def check_name(name: str) -> None:
        if name != model_name:
            raise NotFound(f"no model {name!r} here: this server serves {model_name!r}")

    def served(predictions: Predictions, name: str, version: str | None) -> Predictor:
        """The served model as `name` (and `version`): 404 for another, 503 for none yet."""
        check_name(name)
        return check_version(name, predictions.model(), version)

    # The infer routes first: the Prometheus instrumentator looks every request's route up in
    # this order, and infer is the one that must be fast.
    @api.post(
        "/models/{model_name}/infer",
        response_model=V2InferResponse,
        responses=_INFER_RESPONSES,
        openapi_extra=_INFER_OPENAPI,
    )
    async def infer(request: Request, v2: V2InferDep, model_name: str = name_param) -> Response:
        """Rows of 4 measurements (cm) in (`input`, FP32 [N, 4], as JSON `data` or as binary
        data after the JSON); `label` (INT64 [N]) and `probabilities` (FP32 [N, 3]) out, as
        JSON or binary (`parameters.binary_data`), or the top classes of each row
        (`parameters.classification`: k, BYTES "score:index:label")."""
        return await _infer(request, v2, model_name, None)

    @api.post(
        "/models/{model_name}/versions/{model_version}/infer",
        response_model=V2InferResponse,
        responses=_INFER_RESPONSES,
        openapi_extra=_INFER_OPENAPI,
    )
    async def infer_version(
        request: Request,
        v2: V2InferDep,
        model_name: str = name_param,
        model_version: str = version_param,
    ) -> Response:
        """Infer on the version served (another version: 404)."""
        return await _infer(request, v2, model_name, model_version)

    async def _infer(request: Request, v2: V2InferDep, name: str, version: str | None) -> Response:
        check_name(name)
        headers = request.headers
        out = v2.answer(
            headers.get("content-type", ""),
            headers.get(HEADER_LENGTH),
            await request.body(),
            version,
        )
        return out.response()

    @api.get("/health/live")
    async def live() -> Live:
        """The process answers (always 200)."""
        return Live(live=True)

    @api.get("/health/ready", responses={503: _error("Not ready: the reason is given")})
    async def ready(follower: FollowerDep) -> JSONBytes:
        """200 once a model is loaded; 503 with the reason until then."""
        if follower.current is None:
            return _not_ready(follower)
        return JSONBytes({"ready": True})

    @api.get("")
    async def server_metadata() -> V2ServerMetadata:
        """Name, version and the protocol extensions implemented."""
        return V2ServerMetadata(
            name="iris-api", version=package_version("iris-api"), extensions=EXTENSIONS
        )

    @api.get("/models/stats", response_model=V2Statistics)
    async def all_stats(predictions: PredictionsDep) -> JSONBytes:
        """Statistics of every model (here the one, each version that answered in this
        process and the one served)."""
        return JSONBytes(_stats(predictions, model_name, None))

    def metadata(model: Predictor) -> V2ModelMetadata:
        return V2ModelMetadata(
            name=model_name,
            versions=[model.version.version],
            platform=PLATFORM,
            inputs=INPUTS,
            outputs=OUTPUTS,
        )

    @api.get("/models/{model_name}", responses=MODEL_ERRORS)
    async def model_metadata(
        predictions: PredictionsDep, model_name: str = name_param
    ) -> V2ModelMetadata:
        """Versions (the one served), platform, input and output tensors."""
        return metadata(served(predictions, model_name, None))

    @api.get("/models/{model_name}/versions/{model_version}", responses=MODEL_ERRORS)
    async def model_version_metadata(
        predictions: PredictionsDep,
        model_name: str = name_param,
        model_version: str = version_param,
    ) -> V2ModelMetadata:
        return metadata(served(predictions, model_name, model_version))

    def model_ready_answer(follower: ModelFollower, name: str, version: str | None) -> JSONBytes:
        check_name(name)
        model = follower.current
        if model is None:
            return _not_ready(follower, name)
        check_version(name, model, version)
        return JSONBytes({"name": name, "ready": True})

    ready_errors = {**MODEL_ERRORS, 503: _error("Not ready: the reason is given")}

    @api.get("/models/{model_name}/ready", response_model=V2ModelReady, responses=ready_errors)
    async def model_ready(follower: FollowerDep, model_name: str = name_param) -> JSONBytes:
        """200 once the model is loaded; 503 with the reason until then."""
        return model_ready_answer(follower, model_name, None)

    @api.get(
        "/models/{model_name}/versions/{model_version}/ready",
        response_model=V2ModelReady,
        responses=ready_errors,
    )
    async def model_version_ready(
        follower: FollowerDep, model_name: str = name_param, model_version: str = version_param
    ) -> JSONBytes:
        return model_ready_answer(follower, model_name, model_version)

    def config(follower: ModelFollower, model: Predictor) -> dict[str, Any]:
        """Triton's model configuration shape: what standard tooling reads."""
        v = model.version
        return {
            "name": model_name,
            "platform": PLATFORM,
            "backend": "onnxruntime",
            "version_policy": {"specific": {"versions": [v.version]}},
            "max_batch_size": batch_limit,
            "input": [
                {"name": "input", "data_type": "TYPE_FP32", "format": "FORMAT_NONE",
                 "dims": [N_FEATURES]},
            ],
            "output": [
                {"name": "label", "data_type": "TYPE_INT64", "dims": [1],
                 "reshape": {"shape": []}},
                {"name": "probabilities", "data_type": "TYPE_FP32", "dims": [len(CLASS_NAMES)]},
            ],
            "parameters": {
                "registry_model": {"string_value": follower.wanted},
                "registered_name": {"string_value": v.name},
                "run_id": {"string_value": v.run_id},
                "class_names": {"string_value": ",".join(CLASS_NAMES)},
            },
        }  # fmt: skip

    @api.get("/models/{model_name}/config", responses=MODEL_ERRORS)
    async def model_config(
        predictions: PredictionsDep, follower: FollowerDep, model_name: str = name_param
    ) -> dict[str, Any]:
        """Model configuration extension: inputs, outputs, batch limit, where it comes from."""
        return config(follower, served(predictions, model_name, None))

    @api.get("/models/{model_name}/versions/{model_version}/config", responses=MODEL_ERRORS)
    async def model_version_config(
        predictions: PredictionsDep,
        follower: FollowerDep,
        model_name: str = name_param,
        model_version: str = version_param,
    ) -> dict[str, Any]:
        return config(follower, served(predictions, model_name, model_version))

    @api.get("/models/{model_name}/stats", response_model=V2Statistics, responses=MODEL_ERRORS)
    async def model_stats(predictions: PredictionsDep, model_name: str = name_param) -> JSONBytes:
        """Statistics extension: rows and calls, time in the model, refused requests, per
        version that answered in this process (and the one served)."""
        check_name(model_name)
        return JSONBytes(_stats(predictions, model_name, None))

    @api.get(
        "/models/{model_name}/versions/{model_version}/stats",
        response_model=V2Statistics,
        responses=MODEL_ERRORS,
    )
    async def model_version_stats(
        predictions: PredictionsDep,
        model_name: str = name_param,
        model_version: str = version_param,
    ) -> JSONBytes:
        served(predictions, model_name, model_version)
        return JSONBytes(_stats(predictions, model_name, model_version))

    @api.post("/repository/index", response_model=list[V2RepositoryModel], responses=BODY_ERRORS)
    async def repository_index(request: Request, follower: FollowerDep) -> JSONBytes:
        """Model repository extension: the one model, READY or UNAVAILABLE with the reason
        (`{"ready": true}`: only if ready)."""
        only_ready = (await parse_optional(request, V2RepositoryIndexRequest)).ready
        model = follower.current
        if model is None:
            entry = {"name": model_name, "state": "UNAVAILABLE", "reason": follower.reason}
            return JSONBytes([] if only_ready else [entry])
        return JSONBytes(
            [{"name": model_name, "version": model.version.version, "state": "READY", "reason": ""}]
        )

    @api.post(
        "/repository/models/{model_name}/load",
        responses={
            **MODEL_ERRORS,
            **BODY_ERRORS,
            409: _error("Loading from a given configuration or files"),
        },
    )
    async def repository_load(
        request: Request, follower: FollowerDep, model_name: str = name_param
    ) -> JSONBytes:
        """Asks the registry now which version the alias names, and loads it if it is new
        (rather than at the next poll); 200 once a model is served."""
        check_name(model_name)
        load = await parse_optional(request, _LoadRequest)
        if load.parameters:
            raise Refused(
                409,
                f"{model_name!r} is loaded from {follower.wanted}: a configuration or files "
                "given with the request are not used; move the registry alias instead",
            )
        await follower.check_now()
        if follower.current is None:
            raise NotReady(follower.reason, follower.settings.poll_interval_s)
        return JSONBytes({})

    @api.post(
        "/repository/models/{model_name}/unload",
        responses={404: MODEL_ERRORS[404], 409: _error("Always: the registry decides")},
    )
    async def repository_unload(follower: FollowerDep, model_name: str = name_param) -> JSONBytes:
        """Refused (409): the served model follows the registry alias and is replaced when the
        alias moves, never left without a model."""
        check_name(model_name)
        raise Refused(
            409,
            f"{model_name!r} follows {follower.wanted} and is not unloaded on request: move or "
            "delete the registry alias instead",
        )

    return api


class _LoadRequest(BaseModel):
    parameters: dict[str, Any] | None = None


def _not_ready(follower: ModelFollower, name: str | None = None) -> JSONBytes:
    reason = f"no model loaded: {follower.reason}"
    body: dict[str, Any] = {"ready": False, "reason": follower.reason, "error": reason}
    if name is not None:
        body = {"name": name, **body}
    retry = str(max(1, round(follower.settings.poll_interval_s)))
    return JSONBytes(body, status_code=503, headers={"Retry-After": retry})


def _stats(predictions: Predictions, name: str, version: str | None) -> dict[str, Any]:
    """The statistics extension's answer: the versions that answered, and the one served."""
    versions = dict(predictions.stats.versions)
    model = predictions.follower.current
    if model is not None:
        versions.setdefault(model.version.version, VersionStats())
    if version is not None:
        versions = {version: versions.get(version, VersionStats())}
    return {
        "model_stats": [
            _version_stats(name, v, s)
            for v, s in sorted(versions.items(), key=lambda item: _order(item[0]))
        ]
    }


def _order(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (0, version)


def _version_stats(name: str, version: str, s: VersionStats) -> dict[str, Any]:
    def duration(count: int, ns: int = 0) -> dict[str, int]:
        return {"count": count, "ns": ns}

    return {
        "name": name,
        "version": version,
        "last_inference": s.last_inference_ms,
        "inference_count": s.inference_count,
        "execution_count": s.execution_count,
        "inference_stats": {
            "success": duration(s.execution_count, s.success_ns),
            "fail": duration(s.fail_count),
            "queue": duration(0),  # no queue: one model call at a time on the event loop
            "compute_input": duration(0),
            "compute_infer": duration(s.execution_count, s.infer_ns),
            "compute_output": duration(0),
        },
        "batch_stats": [],
    }
