"""One HTTP request through an ASGI app, in process: what a Ray replica runs for its ingress.

The ingress holds the client's connection; the replica gets the request as plain data and
sends back the app's ASGI messages one by one, so a streamed answer streams through Ray.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass(frozen=True)
class HttpCall:
    """A request as the ingress read it; `extensions` go into the ASGI scope (never headers, so
    a client cannot set them)."""

    method: str
    path: str
    query_string: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    client: tuple[str, int] | None = None
    extensions: dict[str, str] = field(default_factory=dict)


async def asgi_call(app, call: HttpCall, extra_headers: list[tuple[bytes, bytes]] = ()) -> AsyncIterator[dict]:
    """The app's `http.response.*` messages for `call`, `extra_headers` added to the start.
    Closing the iterator early (the client went away) tells the app `http.disconnect`."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "scheme": "http",
             "method": call.method, "path": call.path, "raw_path": call.path.encode(), "root_path": "",
             "query_string": call.query_string, "headers": list(call.headers), "client": call.client,
             "server": None, **call.extensions}
    sent: asyncio.Queue[dict | None] = asyncio.Queue()
    gone = asyncio.Event()
    body_given = False

    async def receive() -> dict:
        nonlocal body_given
        if not body_given:
            body_given = True
            return {"type": "http.request", "body": call.body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *extra_headers]}
        await sent.put(message)

    async def run() -> None:
        try:
            await app(scope, receive, send)
        finally:
            await sent.put(None)

    task = asyncio.create_task(run())
    try:
        while (message := await sent.get()) is not None:
            yield message
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                break
        await task  # an exception the app let out reaches the caller
    finally:
        gone.set()  # the app sees the client leave, and ends within a few seconds or is cancelled
        if not task.done() and not (await asyncio.wait({task}, timeout=5))[0]:
            task.cancel()
