"""What the routes take from a request: the app's parts as `Annotated` dependencies (the
app factory puts them in `app.state`; only this module reads it), and their bodies (`parse`).

The prediction routes read their body themselves (`parse`): pydantic validates the raw bytes in
one Rust call, where FastAPI's body parameters would decode JSON in Python, then validate, then
solve dependencies; on a ~10 us inference that machinery was most of the time per request. The
OpenAPI schema still documents the body (`body_schema`), and errors keep FastAPI's 422 shape.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from iris_api.access import FeedbackAccess
from iris_api.errors import UnsupportedMediaType
from iris_api.feedback import FeedbackOutbox
from iris_api.follower import ModelFollower
from iris_api.metrics import Metrics
from iris_api.model import Predictor
from iris_api.oip import V2Infer
from iris_api.predicting import Predictions

M = TypeVar("M", bound=BaseModel)


def parse_body(content_type: str, body: bytes, model: type[M]) -> M:
    """`body` as `model`: 415 if it is not JSON, 422 naming the fields at fault."""
    if content_type.partition(";")[0].strip().lower() != "application/json":
        raise UnsupportedMediaType(content_type)
    return validate_json(body, model)


def validate_json(body: bytes, model: type[M]) -> M:
    """JSON `body` as `model`, or 422 naming the fields at fault (located in the body)."""
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in e.errors(include_url=False)]
        ) from e


async def parse(request: Request, model: type[M]) -> M:
    return parse_body(request.headers.get("content-type", ""), await request.body(), model)


def body_schema(model: type[BaseModel], examples: dict[str, Any] | None = None) -> dict[str, Any]:
    """`openapi_extra` documenting a JSON body of `model` (`create_app` puts the model's schema
    into the OpenAPI components, since no route parameter brings it there)."""
    media: dict[str, Any] = {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
    if examples:
        media["examples"] = examples
    return {"requestBody": {"required": True, "content": {"application/json": media}}}


# Async, so FastAPI calls them on the event loop (it runs plain functions in a thread pool).
async def _follower(request: Request) -> ModelFollower:
    follower: ModelFollower = request.app.state.follower
    return follower


async def _predictions(request: Request) -> Predictions:
    predictions: Predictions = request.app.state.predictions
    return predictions


async def _predictor(request: Request) -> Predictor:
    predictions: Predictions = request.app.state.predictions
    return predictions.model()


async def _v2_infer(request: Request) -> V2Infer:
    v2: V2Infer = request.app.state.v2_infer
    return v2


async def _metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


async def _outbox(request: Request) -> FeedbackOutbox:
    outbox: FeedbackOutbox = request.app.state.outbox
    return outbox


async def _access(request: Request) -> FeedbackAccess:
    access: FeedbackAccess = request.app.state.access
    return access


FollowerDep = Annotated[ModelFollower, Depends(_follower)]
#: The prediction path (`iris_api.predicting`): what the prediction routes take.
PredictionsDep = Annotated[Predictions, Depends(_predictions)]
#: The served model, or 503 with the reason there is none yet.
PredictorDep = Annotated[Predictor, Depends(_predictor)]
#: Open Inference Protocol infer (`iris_api.oip`): the V2 infer route and the fast path share it.
V2InferDep = Annotated[V2Infer, Depends(_v2_infer)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]
#: The feedback store and the flow runs that apply it (`iris_api.feedback`).
OutboxDep = Annotated[FeedbackOutbox, Depends(_outbox)]
#: Who may send feedback, and how fast (`iris_api.access`).
AccessDep = Annotated[FeedbackAccess, Depends(_access)]
