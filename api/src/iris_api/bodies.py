"""Request bodies, for every entry of the API: their media type, their size (`BodyLimit`), JSON
read into a model (`read_json`), the binary tensor data extension's framing (`split_binary`),
and the one check every measurement passes once it is float32, the models' input type, however
it came (`check_rows`). Problems are reported in pydantic's shape (`problem`), so every 422
reads alike.

The prediction endpoints read their body themselves: pydantic validates the raw bytes in one
Rust call, where FastAPI's body parameters would decode JSON in Python, then validate, then
solve dependencies (docs/benchmarks.md has what each costs). The OpenAPI document still
describes each body (`body_schema`).
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from iris_api.errors import InvalidInput, TooLarge, UnsupportedMediaType, answer
from iris_core import MEASUREMENT_MAX_CM

M = TypeVar("M", bound=BaseModel)

JSON = "application/json"
BINARY = "application/octet-stream"
#: The JSON bodies the prediction routes take (415 otherwise).
JSON_ONLY = frozenset({JSON})
#: Bodies the Open Inference Protocol's endpoints take: JSON, with no Content-Type too (the
#: protocol does not require one, and its clients send none).
JSON_OR_NONE = frozenset({"", JSON})
#: An infer body: JSON, with or without binary tensors after it.
INFER_BODY = frozenset({"", JSON, BINARY})
HEADER_LENGTH = "Inference-Header-Content-Length"
_DIGITS = re.compile(r"[0-9]{1,12}")
#: At most this many bad values are named in one answer.
MAX_PROBLEMS = 10
#: A float64 at or below this is 0 as float32 (round to nearest even): the lowest positive
#: measurement the models can tell from 0 is just above it.
FLOAT32_ZERO = 2.0**-150

Loc = tuple[str | int, ...]


def problem(loc: Loc, message: str, kind: str = "value_error", value: Any = None) -> dict[str, Any]:
    """One validation problem in pydantic's shape."""
    return {"type": kind, "loc": loc, "msg": message, "input": value}


def media_type(content_type: str) -> str:
    """`application/json` for `Application/JSON; charset=utf-8`."""
    return content_type.partition(";")[0].strip().lower()


def require(content_type: str, accepted: frozenset[str], description: str) -> None:
    """415 unless the body's media type is one of `accepted`."""
    if media_type(content_type) not in accepted:
        raise UnsupportedMediaType(content_type, description)


def read_json(body: bytes, model: type[M]) -> M:
    """JSON `body` as `model`, or 422 naming the fields at fault (located in the body)."""
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        raise InvalidInput(
            [{**error, "loc": ("body", *error["loc"])} for error in e.errors(include_url=False)]
        ) from e


def read_optional(content_type: str, body: bytes, model: type[M]) -> M:
    """An optional JSON body (none at all is `model()`), with or without a Content-Type."""
    require(content_type, JSON_OR_NONE, "JSON (Content-Type: application/json or none)")
    return model() if not body.strip() else read_json(body, model)


def split_binary(header_length: str | None, body: bytes) -> tuple[bytes, bytes]:
    """The JSON and the binary tensor data after it (none without the header)."""
    if header_length is None:
        return body, b""
    where = ("header", HEADER_LENGTH)
    if not _DIGITS.fullmatch(header_length):
        raise InvalidInput(
            [problem(where, "must be the JSON's length in bytes", value=header_length)]
        )
    length = int(header_length)
    if length > len(body):
        raise InvalidInput(
            [problem(where, f"{length} bytes of JSON, but the body has {len(body)}", value=length)]
        )
    return body[:length], body[length:]


def check_rows(x: npt.NDArray[np.float32], where: Any) -> npt.NDArray[np.float32]:
    """`x` (float32 rows of measurements) when every value is finite, greater than 0 and at
    most the bound, as float32 has it: a JSON 1e-300 passes the schema's float64 check but is
    0 in float32, and is refused here as a binary 0 is. Else 422 naming each bad value by
    `where(index)` (the flat index into `x`), with pydantic's types and messages."""
    bad = np.flatnonzero(~((x > 0) & (x <= MEASUREMENT_MAX_CM)))
    if not len(bad):
        return x
    flat = x.ravel()
    problems = []
    for index in bad[:MAX_PROBLEMS].tolist():
        value = float(flat[index])
        loc = where(index)
        if not np.isfinite(value):
            found = problem(loc, "Input should be a finite number", "finite_number")
        elif value <= 0:
            found = problem(loc, "Input should be greater than 0", "greater_than", value)
            found["ctx"] = {"gt": 0.0}
        else:
            found = problem(
                loc, f"Input should be less than or equal to {MEASUREMENT_MAX_CM:g}",
                "less_than_equal", value,
            )  # fmt: skip
            found["ctx"] = {"le": MEASUREMENT_MAX_CM}
        problems.append(found)
    raise InvalidInput(problems)


def body_schema(model: type[BaseModel], examples: dict[str, Any] | None = None) -> dict[str, Any]:
    """`openapi_extra` documenting a JSON body of `model` (`create_app` puts the model's schema
    into the OpenAPI components, since no route parameter brings it there)."""
    media: dict[str, Any] = {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
    if examples:
        media["examples"] = examples
    return {"requestBody": {"required": True, "content": {JSON: media}}}


class _TooLarge(Exception):
    pass


class BodyLimit:
    """413 for request bodies over `limit` bytes: by Content-Length up front (the common case
    costs one header scan), else by counting the chunks as they arrive."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit():
                if int(value) > self.limit:
                    await self._refuse(scope, send)
                else:  # the HTTP parser delivers no more than Content-Length: nothing to count
                    await self.app(scope, receive, send)
                return
        # No (usable) Content-Length, e.g. a chunked body: count as it arrives.
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise _TooLarge
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _TooLarge:
            if not started:
                await self._refuse(scope, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        await answer(TooLarge(self.limit), scope["path"], scope["method"]).send(send)
