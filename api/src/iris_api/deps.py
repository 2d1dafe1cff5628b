"""The app's parts as `Annotated` dependencies of the FastAPI routes that are not the data
plane's (`/suggest`, `/feedback/stats`, `/metrics`): `create_app` puts them in `app.state`, and
only this module reads it."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request

from iris_api.access import FeedbackAccess
from iris_api.feedback import FeedbackOutbox
from iris_api.follower import ModelFollower
from iris_api.metrics import Metrics


def _state(name: str) -> Callable[[Request], Coroutine[Any, Any, Any]]:
    """A dependency giving `app.state.<name>` (async: FastAPI calls it on the event loop; it
    runs plain functions in its thread pool)."""

    async def part(request: Request) -> Any:
        return getattr(request.app.state, name)

    return part


FollowerDep = Annotated[ModelFollower, Depends(_state("follower"))]
MetricsDep = Annotated[Metrics, Depends(_state("metrics"))]
#: The feedback store and the flow runs that apply it (`iris_api.feedback`).
OutboxDep = Annotated[FeedbackOutbox, Depends(_state("outbox"))]
#: Who may send feedback, and how fast (`iris_api.access`).
AccessDep = Annotated[FeedbackAccess, Depends(_state("access"))]
