"""POST /predict answered straight from ASGI, skipping routing and FastAPI's request machinery.

Same parsing (`parse_body`), same prediction (`Predictions.one`), same errors (`answer`) as the
`/predict` route, which stays for the OpenAPI schema, for the metrics' handler name and for
`IRIS_API_FAST_PATH=false`. It sits inside the Prometheus instrumentator, so the request is
counted and timed like any other. Why: on one uvicorn worker, routing, the exception middleware,
dependency solving and the Request/Response objects took more time than parsing, inference and
serialisation together (numbers in README, "Serving benchmark").
"""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from iris_api.deps import parse_body
from iris_api.errors import KNOWN, Answer, answer
from iris_api.predicting import Predictions
from iris_api.schemas import PredictInput

PATH = "/predict"


class PredictFastPath:
    def __init__(self, app: ASGIApp, predictions: Predictions) -> None:
        self.app = app
        self.predictions = predictions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        content_type = ""
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.decode("latin-1")
                break
        chunks = []
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        try:
            flower = parse_body(content_type, b"".join(chunks), PredictInput)
            out = Answer(200, orjson.dumps(self.predictions.one(flower)))
        except KNOWN as exc:
            out = answer(exc)
        await out.send(send)
