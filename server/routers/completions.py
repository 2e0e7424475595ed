"""POST /v1/completions and /v1/chat/completions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse

from ..errors import sse_error
from ..generation import GenerationService
from ..openai_protocol import ChatCompletionRequest, CompletionRequest

router = APIRouter()


def get_service(request: Request) -> GenerationService:
    return request.app.state.service


Service = Annotated[GenerationService, Depends(get_service)]


async def _guarded(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    try:
        async for line in lines:
            yield line
    except Exception as exc:  # headers are out: report in-band, then end the stream
        yield sse_error(exc)
        yield "data: [DONE]\n\n"


async def _answer(request: Request, service: GenerationService, req):
    adapter = service.resolve_model(req.model)  # 404 first; unknown names never become labels
    request.state.model = req.model  # the metrics middleware labels the response with it
    result = await service.respond(req, adapter)
    if req.stream:
        return StreamingResponse(_guarded(result), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})
    return JSONResponse(result)


@router.post("/v1/completions")
async def completions(req: CompletionRequest, request: Request, service: Service):
    return await _answer(request, service, req)


@router.post("/v1/chat/completions")
async def chat_completions(req: ChatCompletionRequest, request: Request, service: Service):
    return await _answer(request, service, req)
