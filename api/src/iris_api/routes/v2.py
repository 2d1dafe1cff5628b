"""The Open Inference Protocol (KServe V2) over REST for the one served model, as REST endpoints
of the data plane: health, server and model metadata, model readiness, infer (JSON and binary
tensors), and the extensions model configuration, statistics and model repository. Every model
endpoint also answers under `/versions/{model_version}` for the version served (another: 404).
Every answer that is not a 2xx carries the protocol's `{"error": "..."}` (`iris_api.errors`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from iris_api.bodies import BINARY, HEADER_LENGTH, JSON, read_optional
from iris_api.dataplane import DataPlane
from iris_api.errors import Answer, json_answer
from iris_api.oip import decode_rest, encode_rest
from iris_api.rest import Call, Endpoint
from iris_api.schemas import (
    Live,
    Ready,
    V2Error,
    V2InferResponse,
    V2ModelMetadata,
    V2ModelReady,
    V2RepositoryIndexRequest,
    V2RepositoryModel,
    V2ServerMetadata,
    V2Statistics,
)

TAGS = ("open inference protocol (v2)",)


def _error(description: str) -> dict[str, Any]:
    return {"model": V2Error, "description": description}


#: Answers of the model endpoints besides 200.
MODEL_ERRORS: dict[int | str, dict[str, Any]] = {
    404: _error("No such model, or not the version served"),
    503: _error("No model loaded yet (the reason is given)"),
}
NOT_READY: dict[int | str, dict[str, Any]] = {503: _error("Not ready: the reason is given")}
#: Answers of the endpoints with an optional JSON body, besides 200.
BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    413: _error("The body is over the limit"),
    415: _error("The body is not JSON"),
    422: _error("A field is wrong (`detail` lists where)"),
}
LOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    **MODEL_ERRORS,
    **BODY_ERRORS,
    409: _error("Loading from a given configuration or files"),
}
UNLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    404: MODEL_ERRORS[404],
    409: _error("Always: the source decides"),
}
INFER_ERRORS: dict[int | str, dict[str, Any]] = {
    **MODEL_ERRORS,
    413: _error("The body is over the limit"),
    415: _error("The body is neither JSON nor JSON followed by binary tensors"),
    422: _error("A field, a tensor or the binary framing is wrong (`detail` lists where)"),
}
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
            JSON: {"schema": {"$ref": "#/components/schemas/V2InferRequest"}},
            BINARY: {
                "schema": {"type": "string", "format": "binary"},
                "description": "The JSON request (its length in the "
                "`Inference-Header-Content-Length` header), then the input's bytes: FP32 "
                "little-endian, row-major, `parameters.binary_data_size` bytes.",
            },
        },
    },
}
_INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The outputs; with outputs asked for as binary data, the JSON (its length "
        "in the `Inference-Header-Content-Length` header) then their bytes",
        "content": {
            JSON: {"schema": {"$ref": "#/components/schemas/V2InferResponse"}},
            BINARY: {"schema": {"type": "string", "format": "binary"}},
        },
    },
    **INFER_ERRORS,
}


class LoadRequest(BaseModel):
    parameters: dict[str, Any] | None = None


def _model(call: Call) -> tuple[str, str | None]:
    return call.params["model_name"], call.params.get("model_version")


async def infer(dataplane: DataPlane, call: Call) -> Answer:
    name, version = _model(call)
    limit = dataplane.batch_limit
    return encode_rest(
        dataplane.infer(
            name,
            version,
            lambda: decode_rest(call.content_type, call.header_length, call.body, limit),
        )
    )


async def live(dataplane: DataPlane, call: Call) -> Answer:
    return json_answer(dataplane.server_live())


async def ready(dataplane: DataPlane, call: Call) -> Answer:
    return json_answer(dataplane.server_ready())


async def server_metadata(dataplane: DataPlane, call: Call) -> Answer:
    return json_answer(dataplane.server_metadata())


async def all_stats(dataplane: DataPlane, call: Call) -> Answer:
    return json_answer(dataplane.model_stats())


async def model_metadata(dataplane: DataPlane, call: Call) -> Answer:
    return json_answer(dataplane.model_metadata(*_model(call)))


async def model_ready(dataplane: DataPlane, call: Call) -> Answer:
    return json_answer(dataplane.model_ready(*_model(call)))


async def model_config(dataplane: DataPlane, call: Call) -> Answer:
    return json_answer(dataplane.model_config(*_model(call)))


async def model_stats(dataplane: DataPlane, call: Call) -> Answer:
    return json_answer(dataplane.model_stats(*_model(call)))


async def repository_index(dataplane: DataPlane, call: Call) -> Answer:
    asked = read_optional(call.content_type, call.body, V2RepositoryIndexRequest)
    return json_answer(dataplane.repository_index(asked.ready))


async def repository_load(dataplane: DataPlane, call: Call) -> Answer:
    load = read_optional(call.content_type, call.body, LoadRequest)
    return json_answer(await dataplane.repository_load(call.params["model_name"], load.parameters))


async def repository_unload(dataplane: DataPlane, call: Call) -> Answer:
    dataplane.repository_unload(call.params["model_name"])


def endpoints() -> list[Endpoint]:
    """The protocol's endpoints. Infer first: the Prometheus instrumentator looks every
    request's route up in this order, and infer is the one that must be fast."""
    model, versioned = "/v2/models/{model_name}", "/v2/models/{model_name}/versions/{model_version}"
    infer_doc = (
        "Rows of 4 measurements (cm) in (`input`, FP32 [N, 4], as JSON `data` or as binary "
        "data after the JSON); `label` (INT64 [N]) and `probabilities` (FP32 [N, 3]) out, as "
        "JSON or binary (`parameters.binary_data`), or the top classes of each row "
        '(`parameters.classification`: k, BYTES "score:index:label").'
    )
    stats_doc = (
        "Statistics extension: rows and calls, time in the model, refused requests, per "
        "version that answered in this process (and the one served)."
    )
    config_doc = "Model configuration extension: inputs, outputs, batch limit, where it comes from."
    ready_doc = "200 once the model is loaded; 503 with the reason until then."
    metadata_doc = "Versions (the one served), platform, input and output tensors."
    ready_errors: dict[int | str, dict[str, Any]] = {**MODEL_ERRORS, **NOT_READY}
    return [
        Endpoint("POST", f"{model}/infer", infer, infer_doc, TAGS, V2InferResponse,
                 _INFER_RESPONSES, _INFER_OPENAPI),
        Endpoint("POST", f"{versioned}/infer", infer, f"{infer_doc} On the version served.",
                 TAGS, V2InferResponse, _INFER_RESPONSES, _INFER_OPENAPI, "infer_version"),
        Endpoint("GET", "/v2/health/live", live, "The process answers (always 200).", TAGS, Live),
        Endpoint("GET", "/v2/health/ready", ready, ready_doc, TAGS, Ready, NOT_READY),
        Endpoint("GET", "/v2", server_metadata,
                 "Name, version and the protocol extensions implemented.", TAGS,
                 V2ServerMetadata),
        Endpoint("GET", "/v2/models/stats", all_stats,
                 "Statistics of every model (here the one, each version that answered in this "
                 "process and the one served).", TAGS, V2Statistics),
        Endpoint("GET", model, model_metadata, metadata_doc, TAGS, V2ModelMetadata,
                 MODEL_ERRORS),
        Endpoint("GET", versioned, model_metadata, metadata_doc, TAGS, V2ModelMetadata,
                 MODEL_ERRORS, name="model_version_metadata"),
        Endpoint("GET", f"{model}/ready", model_ready, ready_doc, TAGS, V2ModelReady,
                 ready_errors),
        Endpoint("GET", f"{versioned}/ready", model_ready, ready_doc, TAGS, V2ModelReady,
                 ready_errors, name="model_version_ready"),
        Endpoint("GET", f"{model}/config", model_config, config_doc, TAGS, dict[str, Any],
                 MODEL_ERRORS),
        Endpoint("GET", f"{versioned}/config", model_config, config_doc, TAGS, dict[str, Any],
                 MODEL_ERRORS, name="model_version_config"),
        Endpoint("GET", f"{model}/stats", model_stats, stats_doc, TAGS, V2Statistics,
                 MODEL_ERRORS),
        Endpoint("GET", f"{versioned}/stats", model_stats,
                 f"{stats_doc} Any version that answered here, served or not.", TAGS,
                 V2Statistics, MODEL_ERRORS, name="model_version_stats"),
        Endpoint("POST", "/v2/repository/index", repository_index,
                 "Model repository extension: the one model, READY or UNAVAILABLE with the "
                 'reason (`{"ready": true}`: only if ready).', TAGS, list[V2RepositoryModel],
                 BODY_ERRORS),
        Endpoint("POST", "/v2/repository/models/{model_name}/load", repository_load,
                 "Asks the model's source now which version it names, and loads it if it is "
                 "new (rather than at the next poll); 200 once a model is served.", TAGS, None,
                 LOAD_ERRORS),
        Endpoint("POST", "/v2/repository/models/{model_name}/unload", repository_unload,
                 "Refused (409): the served model follows its source (the registry alias) and is "
                 "replaced when it moves, never left without a model.", TAGS, None,
                 UNLOAD_ERRORS),
    ]  # fmt: skip
