"""POST /v1/completions and /v1/chat/completions."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse

from loramux.adapters.store.base import not_found

from ..catalog import AdapterCatalog
from ..context import Ctx, RequestContext
from ..errors import sse_error
from ..generation import GenerationService
from ..keys import KeyRecord
from ..quotas import Quotas
from ..openai_protocol import ChatCompletionRequest, CompletionRequest, SamplingFields
from ..responses import DONE
from .deps import Caller, Catalog, QuotasDep, Service

router = APIRouter()
VERSION_HEADER = "x-loramux-adapter-version"  # the first 12 hex digits of the version that answered


async def _guarded(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    try:
        async for line in lines:
            yield line
    except Exception as exc:  # headers are out: report in-band, then end the stream
        yield sse_error(exc)
        yield DONE


def _admit(req: SamplingFields, parts: list[tuple[str, float]] | None, caller: KeyRecord, base_name: str,
           ctx: RequestContext, quotas: Quotas) -> None:
    """A name the key may not use is the 404 of a name that exists nowhere; then its quotas."""
    for name in [n for n, _ in parts] if parts else req.model.split("+"):
        if not caller.may_use(name, base_name):
            raise not_found(name)
    quotas.admit(caller)
    reservation: list = []
    ctx.reserve = lambda tokens: reservation.append(quotas.reserve(caller, tokens))
    ctx.on_close.append(lambda c: quotas.finish(caller, reservation[0] if reservation else None,
                                                c.prompt_tokens + c.completion_tokens if c.generated else None))


async def _answer(req: SamplingFields, ctx: RequestContext, caller: KeyRecord | None, quotas: Quotas,
                  catalog: AdapterCatalog, service: GenerationService):
    # 404 first; unknown names never become labels. The handle is held until the response is done.
    parts = [(a.name, a.weight) for a in req.adapters] if req.adapters else None
    if caller is not None:
        _admit(req, parts, caller, catalog.base_name, ctx, quotas)
    handle = await catalog.acquire(req.model, ctx.routing_key or req.user, parts=parts, merge=req.merge)
    ctx.resolved(handle.name if parts else req.model, handle, release=lambda: catalog.release(handle))
    result = await service.respond(req, ctx)
    headers = {VERSION_HEADER: handle.version[:12]} if handle is not None and handle.version else {}
    if req.stream:
        return StreamingResponse(_guarded(result), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", **headers})
    return JSONResponse(result, headers=headers)


@router.post("/v1/completions")
async def completions(req: CompletionRequest, ctx: Ctx, caller: Caller, quotas: QuotasDep, catalog: Catalog,
                      service: Service):
    return await _answer(req, ctx, caller, quotas, catalog, service)


@router.post("/v1/chat/completions")
async def chat_completions(req: ChatCompletionRequest, ctx: Ctx, caller: Caller, quotas: QuotasDep,
                           catalog: Catalog, service: Service):
    return await _answer(req, ctx, caller, quotas, catalog, service)
