"""The ceiling of the serving stack: a bare ASGI app that reads the request body and answers a
constant JSON, run by the same uvicorn, uvloop and httptools as `iris-api` (one worker, no
access log). What no app on this stack can beat on this machine; the serving benchmark prints
the API's throughput as a share of it."""

from __future__ import annotations

from starlette.types import Receive, Scope, Send

BODY = b'{"class_name":"Iris-setosa","class_index":0}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
