"""The prediction requests answered straight from ASGI, skipping routing and FastAPI's request
machinery: POST /predict and the Open Inference Protocol's infer for the served model
(`/v2/models/{name}/infer`, and under `/versions/{version}`).

Same parsing, same prediction (`Predictions.one`, `V2Infer.answer`), same errors (`answer`) as
the routes, which stay for the OpenAPI document, for the metrics' handler names and for
`IRIS_API_FAST_PATH=false`. Any other request (another model's infer included: its 404 comes
from the routes) goes on to FastAPI. It sits inside the Prometheus instrumentator, so the
request is counted and timed like any other. Why: on one uvicorn worker, routing, the exception
middleware, dependency solving and the Request/Response objects took more time than parsing,
inference and serialisation together (docs/benchmarks.md).
"""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from iris_api.deps import parse_body
from iris_api.errors import KNOWN, Answer, answer
from iris_api.oip import V2Infer
from iris_api.predicting import Predictions
from iris_api.schemas import PredictInput

PATH = "/predict"
_HEADER_LENGTH = b"inference-header-content-length"


class PredictFastPath:
    def __init__(self, app: ASGIApp, predictions: Predictions, v2: V2Infer) -> None:
        self.app = app
        self.predictions = predictions
        self.v2 = v2
        self.infer = f"/v2/models/{v2.name}/infer"
        self.versions = f"/v2/models/{v2.name}/versions/"

    def _version(self, path: str) -> str | None:
        """The version in `/v2/models/{name}/versions/{version}/infer`, else None."""
        if path.startswith(self.versions) and path.endswith("/infer"):
            version = path[len(self.versions) : -len("/infer")]
            if version and "/" not in version:
                return version
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        version = None
        if path not in (PATH, self.infer):
            version = self._version(path)
            if version is None:
                await self.app(scope, receive, send)
                return
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
        try:
            if path == PATH:
                flower = parse_body(content_type, body, PredictInput)
                out = Answer(200, orjson.dumps(self.predictions.one(flower)))
            else:
                out = self.v2.answer(content_type, header_length, body, version)
        except KNOWN as exc:
            out = answer(exc, inference_protocol=path != PATH)
        await out.send(send)
