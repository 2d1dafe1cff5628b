"""The API's errors and the one place every answer that is not a 2xx is built (`answer`).

Each domain error carries its HTTP status (and the Retry-After or WWW-Authenticate it needs);
the data plane and the feedback path raise them, knowing nothing of requests. `answer` turns any
of them, FastAPI's own validation errors, Starlette's routing errors (404, 405) and anything
unexpected (500, logged) into one shape: FastAPI's `{"detail": ...}`, plus the Open Inference
Protocol's `{"error": "..."}` under `/v2`, whose clients read it. The ASGI layers (fast path,
body limit) and FastAPI's exception handlers (`install`) all answer through it; a gRPC entry
maps the same errors to status codes by their `status`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

log = logging.getLogger(__name__)


class JSONBytes(Response):
    """JSON rendered by orjson: the response models document the shape, this writes it fast."""

    media_type = "application/json"

    def render(self, content: object) -> bytes:
        return orjson.dumps(content)


class ApiError(Exception):
    """An answer that is not a 2xx, said as what went wrong; `status` says which answer."""

    status = 500

    def __init__(
        self,
        detail: str,
        headers: Mapping[str, str] | None = None,
        fields: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = dict(headers or {})
        #: More members of the JSON body (a readiness answer's `ready` and `reason`).
        self.fields = dict(fields or {})

    @property
    def summary(self) -> str:
        """One line saying what went wrong (the protocol's `error` string)."""
        return self.detail


class InvalidInput(ApiError):
    """Input that breaks the rules (422): `problems` in pydantic's shape, each located
    (`loc`: body, header, then field names and indexes), so every 422 reads alike."""

    status = 422

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        self.problems: list[dict[str, Any]] = jsonable_encoder([_shown(p) for p in problems])
        super().__init__("; ".join(f"{_where(p['loc'])}: {p['msg']}" for p in self.problems))


class UnsupportedMediaType(ApiError):
    status = 415

    def __init__(
        self, content_type: str, accepted: str = "JSON (Content-Type: application/json)"
    ) -> None:
        super().__init__(f"send {accepted}, not {content_type!r}")
        self.content_type = content_type


class TooLarge(ApiError):
    status = 413

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body over {limit} bytes")


class NotFound(ApiError):
    """No such model or version here (404): the detail names what is served instead."""

    status = 404


class NotReady(ApiError):
    """No model is loaded yet (503); the reason says why (MLflow unreachable, no such alias)."""

    status = 503

    def __init__(
        self, reason: str, retry_after_s: float, fields: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(
            f"no model loaded: {reason}",
            {"Retry-After": str(max(1, round(retry_after_s)))},
            fields,
        )
        self.reason = reason


class Refused(ApiError):
    """The request is refused for who sent it or how often: 401 (no credentials), 403 (wrong
    ones), 409 (an idempotency key reused with another body, or an operation this server does
    not do), 429 (too many)."""

    def __init__(self, status: int, detail: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail, headers)
        self.status = status


class Upstream(ApiError):
    """A service behind this one (the feedback store, Prefect) failed: 503 if it is away, 502 if
    it refused."""

    def __init__(self, detail: str, status: int = 503, retry_after_s: float = 5.0) -> None:
        headers = {"Retry-After": str(max(1, round(retry_after_s)))} if status == 503 else {}
        super().__init__(detail, headers)
        self.status = status
        self.retry_after_s = retry_after_s


def inference_protocol(path: str) -> bool:
    """Whether `path` is under the Open Inference Protocol's `/v2`, whose clients read an
    `error` string from every answer that is not a 2xx."""
    return path.startswith("/v2/") or path == "/v2"


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"

    def response(self) -> Response:
        return Response(self.body, self.status, self.headers, media_type=self.content_type)

    async def send(self, send: Send) -> None:
        """Straight to ASGI, for the layers that answer before FastAPI (fast path, body limit)."""
        headers = [
            (b"content-type", self.content_type.encode()),
            (b"content-length", str(len(self.body)).encode()),
        ]
        if self.headers:
            headers += [(k.lower().encode(), v.encode()) for k, v in self.headers.items()]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


def json_answer(content: object, status: int = 200) -> Answer:
    return Answer(status, orjson.dumps(content))


def known(exc: BaseException) -> ApiError | None:
    """`exc` as one of ours, when it is (FastAPI's validation errors become InvalidInput)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, RequestValidationError):
        return InvalidInput(list(exc.errors()))
    return None


def answer(exc: BaseException, path: str = "", method: str = "") -> Answer:
    """The answer to `exc` on a request for `path`: every non-2xx of this API is made here."""
    protocol = inference_protocol(path)
    error = known(exc)
    body: dict[str, object]
    if error is not None:
        body = {"detail": error.problems if isinstance(error, InvalidInput) else error.detail}
        body |= error.fields
        status, summary, headers = error.status, error.summary, error.headers
    elif isinstance(exc, StarletteHTTPException):  # routing: no such path, wrong method
        status, headers = exc.status_code, dict(exc.headers or {})
        body = {"detail": exc.detail}
        summary = f"{exc.detail}: {method} {path}"
    else:
        log.error("unexpected error on %s %s", method, path, exc_info=exc)
        status, headers, summary = 500, {}, "internal error (logged)"
        body = {"detail": summary}
    if protocol:
        body["error"] = summary
    return Answer(status, orjson.dumps(body), headers)


def _where(loc: list[object]) -> str:
    """`inputs.0.data.3` for ["body", "inputs", 0, "data", 3]."""
    return ".".join(str(part) for part in loc[1:]) or str(loc[0] if loc else "body")


def _shown(problem: dict[str, Any]) -> dict[str, Any]:
    """A problem as sent: a scalar input is echoed; a list, an object or raw bytes (JSON that
    did not parse, maybe not even UTF-8) are not; an integer JSON cannot carry in 64 bits
    (orjson refuses it) is echoed as a string."""
    value = problem.get("input")
    if isinstance(value, list | dict | bytes):
        return {k: v for k, v in problem.items() if k != "input"}
    if isinstance(value, int) and not -(2**63) <= value < 2**64:
        return {**problem, "input": str(value)}
    return problem


def install(app: FastAPI) -> None:
    """FastAPI's exception handlers, answering through `answer`."""

    async def handle(request: Request, exc: Exception) -> Response:
        return answer(exc, request.url.path, request.method).response()

    for kind in (ApiError, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(kind, handle)
