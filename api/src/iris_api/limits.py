"""413 for request bodies over a limit: by Content-Length up front (the common case costs one
header scan), else by counting the chunks as they arrive.

(FastAPI 0.165 has `max_body_size`, but the version uv picks next to Prefect, 0.150, does not.)
"""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from iris_api.errors import Answer, inference_protocol


class _TooLarge(Exception):
    pass


class BodyLimit:
    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        detail = f"request body over {limit} bytes"
        self.answer = Answer(413, orjson.dumps({"detail": detail}))
        #: Under /v2, with the Open Inference Protocol's `error` too.
        self.v2_answer = Answer(413, orjson.dumps({"detail": detail, "error": detail}))

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
        refusal = self.v2_answer if inference_protocol(scope["path"]) else self.answer
        await refusal.send(send)
