"""The app factory: `uvicorn --factory iris_api.app:create_app` (settings from IRIS_API_*)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version as package_version
from typing import Any

from fastapi import APIRouter, FastAPI
from prometheus_client import disable_created_metrics
from pydantic import BaseModel

from iris_api import errors, rest
from iris_api.access import FeedbackAccess
from iris_api.bodies import BodyLimit
from iris_api.dataplane import DataPlane
from iris_api.feedback import FeedbackOutbox
from iris_api.follower import ModelFollower
from iris_api.metrics import Metrics, instrument
from iris_api.predicting import Predictions
from iris_api.prefect import PrefectRuns
from iris_api.routes import docs, metrics, predict, suggest, v2
from iris_api.schemas import PredictInput, SuggestInput, V2InferRequest, batch_input
from iris_api.settings import ApiSettings
from iris_api.sources import ModelSource

DESCRIPTION = """
Classifies Iris flowers from four measurements (cm) with the ONNX model that carries the
registry alias being followed (`{wanted}`). New versions are picked up without a restart;
`GET /model` tells which one answers. `POST /suggest` takes feedback (measurements and the
true class), stores it, and a Prefect flow applies it and fine-tunes the model every few rows.
"""


def create_app(settings: ApiSettings | None = None, source: ModelSource | None = None) -> FastAPI:
    """The app; `source`: where the served model comes from (default: IRIS_API_MODEL_DIR's
    folder when set, else the registry alias)."""
    settings = settings or ApiSettings()
    # `*_created` series double the size of /metrics and no dashboard reads them.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    recorded = Metrics(
        settings.drift_window,
        settings.drift_min_rows,
        settings.input_monitoring,
        feedback_store=settings.feedback_store_url is not None,
    )
    follower = ModelFollower(settings, recorded, source)
    predictions = Predictions(follower, recorded)
    dataplane = DataPlane(predictions, follower, settings.v2_model_name, settings.batch_limit)
    endpoints = [*predict.endpoints(settings.batch_limit), *v2.endpoints()]
    prefect = PrefectRuns(settings)
    outbox = FeedbackOutbox(settings, prefect, recorded)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await follower.start()
        await outbox.start()
        watch = None
        if settings.prefect_poll_s > 0:
            watch = asyncio.create_task(prefect.watch(recorded.flow_runs, settings.prefect_poll_s))
        try:
            yield
        finally:
            if watch is not None:
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch
            await outbox.stop()
            await follower.stop()
            await prefect.close()

    app = FastAPI(
        title="iris-mlops API",
        version=package_version("iris-api"),
        description=DESCRIPTION.format(wanted=follower.wanted),
        lifespan=lifespan,
        docs_url=None,  # routes.docs serves Swagger UI without a CDN
        redoc_url=None,
        # FastAPI's OpenTelemetry bridge acts only when an OpenTelemetry SDK is configured in
        # the process, which this service (Prometheus metrics) never does; left on, it asks
        # the global providers (environment lookups) on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    # Read by the data plane's routes (iris_api.rest) and the others' dependencies
    # (iris_api.deps), not by the routes themselves.
    app.state.dataplane = dataplane
    app.state.follower = follower
    app.state.metrics = recorded
    app.state.outbox = outbox
    app.state.access = FeedbackAccess(settings)
    # The data plane's endpoints first: the instrumentator looks each request's route up in
    # order, and predictions must be fast.
    router = APIRouter()
    rest.add_routes(router, endpoints, settings.v2_model_name)
    app.include_router(router)
    app.include_router(suggest.router)
    app.include_router(metrics.router)
    docs.install(app)  # after the API routes: they are matched first
    _document_bodies(
        app, [PredictInput, batch_input(settings.batch_limit), SuggestInput, V2InferRequest]
    )
    errors.install(app)
    if settings.fast_path:
        # Added before the instrumentator, so it runs inside it: counted and timed as usual.
        app.add_middleware(rest.FastPath, dataplane=dataplane, endpoints=endpoints)
    # A full batch is about 100 bytes a row; anything far larger is refused with 413.
    app.add_middleware(BodyLimit, limit=max(2**20, settings.batch_limit * 1024))
    instrument(app, recorded.registry)
    return app


def _document_bodies(app: FastAPI, models: list[type[BaseModel]]) -> None:
    """Put the bodies the prediction routes parse themselves into the OpenAPI components."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in models:
                body = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(body.pop("$defs", {}))
                components[model.__name__] = body
        return app.openapi_schema or generate()

    app.openapi = openapi  # type: ignore[method-assign]
