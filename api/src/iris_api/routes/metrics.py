"""GET /metrics: the app's registry in the Prometheus text format, or OpenMetrics when the
scraper's `Accept` asks for it (Prometheus does, for exemplars and `_created` handling)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client.exposition import choose_encoder

from iris_api.deps import MetricsDep

router = APIRouter(include_in_schema=False)


@router.get("/metrics")
def metrics(request: Request, recorded: MetricsDep) -> Response:
    # A plain function, as the instrumentator's own endpoint was: FastAPI runs it in its
    # thread pool, so a scrape (reading /proc, walking every metric) does not hold the event
    # loop for its whole duration.
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(recorded.registry), media_type=content_type)
