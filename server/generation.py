"""The completions service: an OpenAI request -> engine requests -> choices, whole or streamed.

It neither resolves models nor records metrics: the router resolves the model through the
catalog into the request's context, and the context's outcome feeds metrics once the
response is sent. What differs between completions and chat is a registry entry (`ENDPOINTS`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace

from loramux.adapters.errors import InvalidRequest

from .context import RequestContext
from .engine.protocol import Engine, GenerateChunk, GenerateRequest, SamplingOptions
from .fairness import FairShare, tenant_of
from .openai_protocol import ChatCompletionRequest, CompletionRequest, SamplingFields, new_id
from .responses import CHAT, COMPLETION, Chunks, Shape, response
from .slots import LoraSlots


def _completion_prompts(engine: Engine, req: CompletionRequest) -> list[list[int]]:
    p = req.prompt
    if isinstance(p, str):
        return [engine.encode(p)]
    if all(isinstance(x, int) for x in p):
        return [list(p)]
    return [engine.encode(x) if isinstance(x, str) else list(x) for x in p]


def _chat_prompts(engine: Engine, req: ChatCompletionRequest) -> list[list[int]]:
    return [engine.render_chat([{"role": m.role, "content": m.text()} for m in req.messages])]


@dataclass(frozen=True)
class Endpoint:
    """What one OpenAI endpoint does differently: its prompts, its defaults, its shape."""

    shape: Shape
    prompt_param: str
    default_max_tokens: int | None  # OpenAI's: 16 for completions, up to the context for chat
    prompts: Callable[[Engine, SamplingFields], list[list[int]]]


ENDPOINTS: dict[type[SamplingFields], Endpoint] = {
    CompletionRequest: Endpoint(COMPLETION, "prompt", 16, _completion_prompts),
    ChatCompletionRequest: Endpoint(CHAT, "messages", None, _chat_prompts),
}


def fair_share_tenant(ctx: RequestContext) -> str:
    """Whose share a request counts against: its key's tenant; on an open server (no --keys),
    the tenant that owns the adapter it names (`acme/...`), and the base's callers share one."""
    return ctx.tenant or tenant_of(ctx.model or "")


class GenerationService:
    def __init__(self, engine: Engine, fair: FairShare | None = None, slots: LoraSlots | None = None) -> None:
        self.engine = engine
        self.fair = fair  # None: every request has priority 0, first come, first served
        self.slots = slots  # None: vLLM decides which adapters get its batch slots

    # -- request -> engine requests ------------------------------------------------------
    def _requests(self, req: SamplingFields, ep: Endpoint, ctx: RequestContext) -> list[GenerateRequest]:
        limit = self.engine.max_model_len
        asked = req.max_completion_tokens or req.max_tokens
        out = []
        for i, ids in enumerate(ep.prompts(self.engine, req)):
            if not ids:
                raise InvalidRequest("The prompt is empty.", param=ep.prompt_param)
            if len(ids) >= limit:
                raise InvalidRequest(f"The prompt is {len(ids)} tokens long; this model's context "
                                     f"is {limit} tokens. Shorten the prompt.", param=ep.prompt_param)
            room = limit - len(ids)
            max_tokens = asked or min(ep.default_max_tokens or room, room)  # a default never overflows
            if len(ids) + max_tokens > limit:
                raise InvalidRequest(
                    f"max_tokens={max_tokens} plus the prompt's {len(ids)} tokens exceeds the "
                    f"context of {limit} tokens. Ask for at most {room}.",
                    param="max_completion_tokens" if req.max_completion_tokens else "max_tokens")
            sampling = SamplingOptions(max_tokens=max_tokens, temperature=req.temperature,
                                       top_p=req.top_p, stop=tuple(req.stop), seed=req.seed, n=req.n,
                                       presence_penalty=req.presence_penalty,
                                       frequency_penalty=req.frequency_penalty)
            out.append(GenerateRequest(new_id("req") + f"-{i}", ids, sampling, ctx.adapter, req.stream))
        return out

    async def respond(self, req: SamplingFields, ctx: RequestContext) -> dict | AsyncIterator[str]:
        """A full response dict, or an async iterator of SSE lines when `stream`; runs the
        adapter handle `ctx` resolved, whatever the catalog serves by then."""
        ep = ENDPOINTS[type(req)]
        if bad := req.unsupported():
            raise InvalidRequest(f"not supported by loramux yet: {', '.join(bad)}; leave it unset",
                                 param=bad[0])
        requests = self._requests(req, ep, ctx)
        if ctx.reserve is not None:  # the key's token budget: prompt plus what each choice may add
            ctx.reserve(sum(len(r.prompt_token_ids) + r.sampling.max_tokens * r.sampling.n for r in requests))
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return self._stream(req.n, Chunks(ep.shape, req.model, include_usage), requests, ctx)
        return await self._complete(req.n, ep.shape, req.model, requests, ctx)

    # -- running them ---------------------------------------------------------------------
    async def _generate(self, request: GenerateRequest, ctx: RequestContext) -> AsyncIterator[GenerateChunk]:
        """The engine's chunks, the request queued at its tenant's fair-share place (for a
        batch slot for its adapter, then in the engine) while it runs."""
        if self.fair is None:
            async for chunk in self.engine.generate(request):
                yield chunk
            return
        tenant = fair_share_tenant(ctx)
        with self.fair.turn(tenant, request.sampling.n) as priority:
            async with self._slot(request, tenant, priority, ctx):
                async for chunk in self.engine.generate(replace(request, priority=priority)):
                    yield chunk

    @contextlib.asynccontextmanager
    async def _slot(self, request: GenerateRequest, tenant: str, priority: int, ctx: RequestContext):
        """Its adapter's batch slot (slots.py), the wait counted in the request's queue time."""
        if self.slots is None or request.adapter is None:
            yield
            return
        waited = time.perf_counter()
        async with self.slots.slot(request.adapter.id, tenant, priority):
            ctx.waited_for_slot(time.perf_counter() - waited)
            yield

    async def _complete(self, n: int, shape: Shape, model: str, requests: list[GenerateRequest],
                        ctx: RequestContext) -> dict:
        results = await asyncio.gather(*(self._collect(r, ctx) for r in requests))
        choices, prompt_tokens, completion_tokens = [], 0, 0
        for k, (final, ptoks) in enumerate(results):
            prompt_tokens += ptoks
            for c in sorted(final.values(), key=lambda c: c.index):
                completion_tokens += c.new_tokens
                choices.append(shape.choice(k * n + c.index, c.text, c.finish_reason))
        ctx.finished(prompt_tokens, completion_tokens)
        return response(shape, model, choices, prompt_tokens, completion_tokens)

    async def _collect(self, request: GenerateRequest, ctx: RequestContext):
        final, ptoks = {}, len(request.prompt_token_ids)
        async for chunk in self._generate(request, ctx):
            ctx.engine_timing(chunk.queue_s, chunk.first_token_s)
            ptoks = chunk.prompt_tokens
            for c in chunk.choices:
                if c.index in final:
                    final[c.index].text += c.text
                    final[c.index].new_tokens += c.new_tokens
                    final[c.index].finish_reason = c.finish_reason
                else:
                    final[c.index] = c
        return final, ptoks

    async def _merged(self, requests: list[GenerateRequest],
                      ctx: RequestContext) -> AsyncIterator[tuple[int, GenerateChunk]]:
        """Chunks of all requests as they come, tagged with the request's position."""
        if len(requests) == 1:  # the common case: no tasks, no queue
            async for chunk in self._generate(requests[0], ctx):
                yield 0, chunk
            return
        queue: asyncio.Queue[tuple[int, GenerateChunk | BaseException | None]] = asyncio.Queue()

        async def pump(k: int, request: GenerateRequest) -> None:
            try:
                async for chunk in self._generate(request, ctx):
                    await queue.put((k, chunk))
                await queue.put((k, None))
            except BaseException as exc:  # re-raised in the consumer
                await queue.put((k, exc))

        tasks = [asyncio.create_task(pump(k, r)) for k, r in enumerate(requests)]
        try:
            open_streams = len(tasks)
            while open_streams:
                k, item = await queue.get()
                if item is None:
                    open_streams -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield k, item
        finally:
            for t in tasks:  # client went away or an error: stop generating for it
                t.cancel()

    async def _stream(self, n: int, out: Chunks, requests: list[GenerateRequest],
                      ctx: RequestContext) -> AsyncIterator[str]:
        prompt_tokens = {k: len(r.prompt_token_ids) for k, r in enumerate(requests)}
        completion_tokens = 0
        async for k, chunk in self._merged(requests, ctx):
            ctx.engine_timing(chunk.queue_s, chunk.first_token_s)
            prompt_tokens[k] = chunk.prompt_tokens
            completion_tokens += sum(c.new_tokens for c in chunk.choices)
            ctx.first_token()
            yield out.chunk([out.delta(k * n + c.index, c.text, c.finish_reason) for c in chunk.choices])
        ptotal = sum(prompt_tokens.values())
        for line in out.end(ptotal, completion_tokens):
            yield line
        ctx.finished(ptotal, completion_tokens)
