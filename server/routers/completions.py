"""POST /v1/completions and /v1/chat/completions."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from loramux.adapters.store.base import not_found

from ..catalog import AdapterCatalog
from ..context import Ctx, RequestContext
from ..engine.protocol import AdapterHandle
from ..errors import error_responses, sse_error
from ..generation import GenerationService
from ..keys import KeyRecord
from ..openai_protocol import ChatCompletionRequest, CompletionRequest, SamplingFields
from ..quotas import QuotaBook
from ..responses import DONE
from .deps import Caller, Catalog, QuotasDep, Service

# 200: JSON, or with `stream` server-sent events (`data: {chunk}` lines, then `data: [DONE]`)
_EVENT = {"type": "object", "properties": {"data": {"type": "string"}}, "required": ["data"]}
router = APIRouter(responses={200: {"content": {"text/event-stream": {"schema": _EVENT}}},
                              **error_responses(400, 401, 404, 429, 503)})
CLIENT_CLOSED = 499  # nginx's "client closed request": in metrics and logs, never sent
VERSION_HEADER = "x-loramux-adapter-version"  # the first 12 hex digits of the version that answered


async def _guarded(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    try:
        async for line in lines:
            yield line
    except Exception as exc:  # headers are out: report in-band, then end the stream
        yield sse_error(exc)
        yield DONE


async def _admit(req: SamplingFields, parts: list[tuple[str, float]] | None, caller: KeyRecord, base_name: str,
                 ctx: RequestContext, quotas: QuotaBook) -> None:
    """A name the key may not use is the 404 of a name that exists nowhere; then its quotas."""
    for name in [n for n, _ in parts] if parts else req.model.split("+"):
        if not caller.may_use(name, base_name):
            raise not_found(name)
    await quotas.admit(caller, ctx.admission)
    ctx.reserve = lambda tokens: quotas.reserve(caller, ctx.admission, tokens)
    ctx.on_close.append(lambda c: quotas.finish(caller, c.admission,
                                                c.prompt_tokens + c.completion_tokens if c.generated else None))


async def _answer(request: Request, req: SamplingFields, ctx: RequestContext, caller: KeyRecord | None,
                  quotas: QuotaBook, catalog: AdapterCatalog, service: GenerationService):
    # 404 first; unknown names never become labels. The handle is held until the response is done.
    parts = [(a.name, a.weight) for a in req.adapters] if req.adapters else None
    if caller is not None:
        await _admit(req, parts, caller, catalog.base_name, ctx, quotas)
    started = time.perf_counter()
    handle = await catalog.acquire(req.model, ctx.routing_key or req.user, parts=parts, merge=req.merge,
                                   phases=ctx.phases)
    ctx.phases = {"resolve": time.perf_counter() - started - ctx.phases.get("load", 0.0), **ctx.phases}
    ctx.resolved(handle.name if handle is not None else req.model, handle, release=lambda: catalog.release(handle))
    return await _unless_disconnected(request, _respond(req, ctx, service, handle))


async def _respond(req: SamplingFields, ctx: RequestContext, service: GenerationService,
                   handle: AdapterHandle | None) -> Response:
    """Headers go out with the first token, so they carry its timing and an error before it is
    an HTTP error, not an event in a 200 stream."""
    result = await service.respond(req, ctx)
    if not req.stream:
        return JSONResponse(result, headers=_headers(handle, ctx))
    first = await anext(result, None)
    return StreamingResponse(_guarded(_chain(first, result)), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", **_headers(handle, ctx)})


async def _chain(first: str | None, rest: AsyncIterator[str]) -> AsyncIterator[str]:
    if first is not None:
        yield first
    async for line in rest:
        yield line


def _headers(handle: AdapterHandle | None, ctx: RequestContext) -> dict[str, str]:
    version = {VERSION_HEADER: handle.version[:12]} if handle is not None and handle.version else {}
    return {**version, "server-timing": ctx.server_timing()}


async def _unless_disconnected(request: Request, work: Awaitable[Response]) -> Response:
    """The response, or 499 once the client has gone: cancelling the work makes vLLM abort the
    request, so its batch slot frees at once instead of generating for nobody (as vLLM's own
    server does for non-streamed requests; a stream that has started is cancelled by Starlette)."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # the server is going away: so is the work
        task.cancel()
        raise
    finally:
        gone.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return Response(status_code=CLIENT_CLOSED)


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":  # the body was read: only this can come
        pass


@router.post("/v1/completions")
async def completions(request: Request, req: CompletionRequest, ctx: Ctx, caller: Caller, quotas: QuotasDep,
                      catalog: Catalog, service: Service):
    return await _answer(request, req, ctx, caller, quotas, catalog, service)


@router.post("/v1/chat/completions")
async def chat_completions(request: Request, req: ChatCompletionRequest, ctx: Ctx, caller: Caller,
                           quotas: QuotasDep, catalog: Catalog, service: Service):
    return await _answer(request, req, ctx, caller, quotas, catalog, service)
