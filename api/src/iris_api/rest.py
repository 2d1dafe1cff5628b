"""The REST binding of the data plane, as a table: each `Endpoint` is a method, a path, a short
function of the data plane and the request's parts (`Call`), and its OpenAPI description.
From the one table come both ways a request is answered, so an endpoint is added in one place
and both get it:

- `FastPath`, ASGI middleware that answers the table's endpoints for the served model straight
  from the scope (a dict look-up for fixed paths, a prefix and suffix for a version), skipping
  routing and FastAPI's request machinery, which cost more than the prediction itself
  (docs/benchmarks.md);
- FastAPI routes (`add_routes`), which document the endpoints in the OpenAPI document, name
  them in the HTTP metrics, answer what the fast path leaves (another model's name: its 404),
  and all of them with IRIS_API_FAST_PATH=false.

Either way the answer is `run`'s: the endpoint's function, or `iris_api.errors.answer` for
whatever it raised.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Path, Request, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from iris_api.bodies import HEADER_LENGTH
from iris_api.dataplane import DataPlane
from iris_api.errors import Answer, answer

_HEADER_LENGTH = HEADER_LENGTH.lower().encode()
_PARAM = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True, slots=True)
class Call:
    """What an endpoint gets of a request: its path parameters, the two headers the data plane's
    bodies depend on, and the body."""

    params: Mapping[str, str]
    content_type: str
    header_length: str | None
    body: bytes


Handler = Callable[[DataPlane, Call], Awaitable[Answer]]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # with {model_name} and {model_version} parameters, as FastAPI writes them
    handler: Handler
    description: str
    tags: tuple[str, ...] = ()
    response_model: Any = None
    responses: dict[int | str, dict[str, Any]] = field(default_factory=dict)
    openapi_extra: dict[str, Any] | None = None
    name: str = ""  # the route's name (its OpenAPI summary, operation id); default: the handler's

    @property
    def params(self) -> list[str]:
        return _PARAM.findall(self.path)


async def run(endpoint: Endpoint, dataplane: DataPlane, call: Call, path: str) -> Answer:
    """The endpoint's answer, or the answer to the error it raised (every one of them)."""
    try:
        return await endpoint.handler(dataplane, call)
    except Exception as exc:  # noqa: BLE001 (every error becomes an answer, logged if unknown)
        return answer(exc, path, endpoint.method)


# --- FastAPI ------------------------------------------------------------------------------


def add_routes(router: APIRouter, endpoints: Sequence[Endpoint], model_name: str) -> None:
    """A FastAPI route per endpoint: its path parameters documented, its answer `run`'s."""
    documented = {
        "model_name": Path(
            description=f"the model served here: `{model_name}`",
            json_schema_extra={"enum": [model_name]},
        ),
        "model_version": Path(description="the version served (`GET /v2/models/{model_name}`)"),
    }
    for endpoint in endpoints:

        async def route(request: Request, _endpoint: Endpoint = endpoint, **_: str) -> Response:
            headers = request.headers
            call = Call(
                request.path_params,
                headers.get("content-type", ""),
                headers.get(HEADER_LENGTH),
                await request.body(),
            )
            dataplane: DataPlane = request.app.state.dataplane
            return (await run(_endpoint, dataplane, call, request.url.path)).response()

        # FastAPI reads the parameters from the signature: the request, and each path
        # parameter as a documented string.
        route.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [
                inspect.Parameter(
                    "request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request
                )
            ]
            + [
                inspect.Parameter(
                    name, inspect.Parameter.KEYWORD_ONLY, annotation=str, default=documented[name]
                )
                for name in endpoint.params
            ]
        )
        router.add_api_route(
            endpoint.path,
            route,
            methods=[endpoint.method],
            name=endpoint.name or endpoint.handler.__name__,
            description=endpoint.description,
            response_model=endpoint.response_model,
            responses=endpoint.responses,
            openapi_extra=endpoint.openapi_extra,
            tags=list(endpoint.tags) or None,
        )


# --- the fast path ------------------------------------------------------------------------


class FastPath:
    """Answers the table's endpoints for the served model from ASGI; everything else (other
    paths, another model's name, other methods) goes on to FastAPI. It sits inside the
    Prometheus instrumentator, so its requests are counted and timed like any other."""

    def __init__(self, app: ASGIApp, dataplane: DataPlane, endpoints: Sequence[Endpoint]) -> None:
        self.app = app
        self.dataplane = dataplane
        name = dataplane.name
        #: (method, path) -> the endpoint and its parameters, for the served model's paths.
        self.fixed: dict[tuple[str, str], tuple[Endpoint, dict[str, str]]] = {}
        #: (method, prefix, suffix) -> the endpoint, for paths with a version between the two.
        self.versioned: list[tuple[str, str, str, Endpoint]] = []
        for endpoint in endpoints:
            path = endpoint.path.replace("{model_name}", name)
            params = {"model_name": name} if "{model_name}" in endpoint.path else {}
            if "{model_version}" in path:
                prefix, _, suffix = path.partition("{model_version}")
                self.versioned.append((endpoint.method, prefix, suffix, endpoint))
            else:
                self.fixed[(endpoint.method, path)] = (endpoint, params)
        self._served = {"model_name": name}

    def _find(self, method: str, path: str) -> tuple[Endpoint, dict[str, str]] | None:
        found = self.fixed.get((method, path))
        if found is not None:
            return found
        for wanted, prefix, suffix, endpoint in self.versioned:
            if method == wanted and path.startswith(prefix) and path.endswith(suffix):
                version = path[len(prefix) : len(path) - len(suffix)]
                if version and "/" not in version:
                    return endpoint, {**self._served, "model_version": version}
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self._find(scope["method"], scope["path"]) if scope["type"] == "http" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        endpoint, params = found
        content_type = ""
        header_length = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == _HEADER_LENGTH:
                header_length = value.decode("latin-1")
        chunks = []
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks) if len(chunks) != 1 else chunks[0]
        call = Call(params, content_type, header_length, body)
        await (await run(endpoint, self.dataplane, call, scope["path"])).send(send)
