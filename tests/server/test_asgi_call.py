"""A request run through the app in process, as a Ray replica runs it for its ingress."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from loramux.server.asgi_call import HttpCall, asgi_call


def _app(seen: dict) -> FastAPI:
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> dict:
        seen["scope"] = request.scope.get("loramux.admission")
        return {"body": (await request.body()).decode(), "q": request.url.query}

    @app.get("/stream")
    async def stream(request: Request) -> StreamingResponse:
        async def lines():
            i = 0
            try:
                for i in range(1000):
                    yield f"{i}\n"
                    await asyncio.sleep(0.01)
            finally:
                seen["stopped"] = i
        return StreamingResponse(lines())

    return app


async def _all(app, call, extra=()) -> list[dict]:
    return [m async for m in asgi_call(app, call, list(extra))]


def test_a_request_gets_the_apps_answer_with_extra_headers_and_scope_extensions():
    seen: dict = {}
    call = HttpCall("POST", "/echo", b"a=1", [(b"content-type", b"text/plain")], b"hello",
                    extensions={"loramux.admission": "adm-1"})
    messages = asyncio.run(_all(_app(seen), call, [(b"x-loramux-replica", b"r1")]))
    start, *bodies = messages
    assert start["type"] == "http.response.start" and start["status"] == 200
    assert (b"x-loramux-replica", b"r1") in start["headers"]
    assert b"".join(m.get("body", b"") for m in bodies) == b'{"body":"hello","q":"a=1"}'
    assert seen["scope"] == "adm-1"


def test_a_stream_arrives_in_pieces_and_closing_early_is_a_disconnect():
    seen: dict = {}

    async def read_some():
        got = []
        stream = asgi_call(_app(seen), HttpCall("GET", "/stream"))
        async for message in stream:
            got.append(message)
            if len(got) == 4:
                break
        await stream.aclose()
        return got

    got = asyncio.run(read_some())
    assert got[0]["status"] == 200 and [m["body"] for m in got[1:]] == [b"0\n", b"1\n", b"2\n"]
    assert 2 <= seen["stopped"] < 100  # the app saw the client go and stopped
