"""Domain errors and their one mapping to HTTP answers (`answer`), used by every route."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

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


class NotReady(Exception):
    """No model is loaded yet; the reason says why (MLflow unreachable, no such alias, ...)."""

    def __init__(self, reason: str, retry_after_s: float) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


class UnsupportedMediaType(Exception):
    def __init__(
        self, content_type: str, accepted: str = "JSON (Content-Type: application/json)"
    ) -> None:
        super().__init__(content_type)
        self.content_type = content_type
        self.accepted = accepted


class NotFound(Exception):
    """No such model or version here (404): the detail names what is served instead."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class Upstream(Exception):
    """A service behind this one (the feedback store, Prefect) failed: 503 if it is away, 502 if
    it refused."""

    def __init__(self, detail: str, status: int = 503, retry_after_s: float = 5.0) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.retry_after_s = retry_after_s


class Refused(Exception):
    """The request is refused for who sent it or how often: 401 (no credentials), 403 (wrong
    ones), 409 (an idempotency key reused with another body), 429 (too many)."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}


#: The errors `answer` knows; anything else is a 500.
KNOWN = (RequestValidationError, NotReady, UnsupportedMediaType, Upstream, NotFound, Refused)
Known = RequestValidationError | NotReady | UnsupportedMediaType | Upstream | NotFound | Refused


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


def answer(exc: Known, inference_protocol: bool = False) -> Answer:
    """The answer to a known error. FastAPI's shape (`detail`); with `inference_protocol`, also
    the Open Inference Protocol's `{"error": "..."}`, which its clients read."""
    headers: dict[str, str] = {}
    if isinstance(exc, RequestValidationError):
        status = 422
        # orjson writes a NaN or infinite input as null (the stock handler crashes on it).
        errors = jsonable_encoder([_error(e) for e in exc.errors()])
        body: dict[str, object] = {"detail": errors}
        summary = "; ".join(f"{_where(e['loc'])}: {e['msg']}" for e in errors)
    elif isinstance(exc, NotReady):
        status = 503
        summary = f"no model loaded: {exc.reason}"
        body = {"detail": summary}
        headers["Retry-After"] = str(max(1, round(exc.retry_after_s)))
    elif isinstance(exc, Refused):
        status = exc.status
        summary = exc.detail
        body = {"detail": summary}
        headers |= exc.headers
    elif isinstance(exc, Upstream):
        status = exc.status
        summary = exc.detail
        body = {"detail": summary}
        if status == 503:
            headers["Retry-After"] = str(max(1, round(exc.retry_after_s)))
    elif isinstance(exc, NotFound):
        status = 404
        summary = exc.detail
        body = {"detail": summary}
    else:
        status = 415
        summary = f"send {exc.accepted}, not {exc.content_type!r}"
        body = {"detail": summary}
    if inference_protocol:
        body["error"] = summary
    return Answer(status, orjson.dumps(body), headers)


def _where(loc: list[object]) -> str:
    """`inputs.0.data.3` for ["body", "inputs", 0, "data", 3]."""
    return ".".join(str(part) for part in loc[1:]) or "body"


def _error(error: dict[str, object]) -> dict[str, object]:
    """A validation error as sent: a scalar input is echoed; a list, an object or raw bytes
    (JSON that did not parse, maybe not even UTF-8) are not; an integer JSON cannot carry in
    64 bits (orjson refuses it) is echoed as a string."""
    value = error.get("input")
    if isinstance(value, list | dict | bytes):
        return {k: v for k, v in error.items() if k != "input"}
    if isinstance(value, int) and not -(2**63) <= value < 2**64:
        return {**error, "input": str(value)}
    return error


def install(app: FastAPI) -> None:
    async def known(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, KNOWN)  # noqa: S101 (registered for these types only)
        return answer(exc, inference_protocol(request.url.path)).response()

    for kind in KNOWN:
        app.add_exception_handler(kind, known)

    @app.exception_handler(StarletteHTTPException)
    async def http(request: Request, exc: Exception) -> Response:
        """Starlette's own answers (404 no such path, 405 wrong method) in our shape."""
        assert isinstance(exc, StarletteHTTPException)  # noqa: S101 (registered for it only)
        body: dict[str, object] = {"detail": exc.detail}
        if inference_protocol(request.url.path):
            body["error"] = f"{exc.detail}: {request.method} {request.url.path}"
        return JSONBytes(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        # Logged with its traceback here; the client gets no internals.
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        body = {"detail": "internal error (logged)"}
        if inference_protocol(request.url.path):
            body["error"] = body["detail"]
        return JSONBytes(body, status_code=500)
