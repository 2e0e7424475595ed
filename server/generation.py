"""The completions service: an OpenAI request -> engine requests -> choices, whole or streamed.

It neither resolves models nor records metrics: the router resolves the model through the
catalog into the request's context, and the context's outcome feeds metrics once the
response is sent. What differs between completions and chat is a registry entry (`ENDPOINTS`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace

from loramux.adapters.errors import InvalidRequest

from .context import RequestContext
from .engine.protocol import Engine, GenerateChunk, GenerateRequest, JsonOutput, SamplingOptions, TokenLogprob
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


def _completion_echo(engine: Engine, req: CompletionRequest) -> list[str] | None:
    """What `echo` puts before each prompt's completions: the prompt as sent, token ids decoded."""
    if not req.echo:
        return None
    p = req.prompt
    items = [p] if isinstance(p, str) or all(isinstance(x, int) for x in p) else p
    return [x if isinstance(x, str) else engine.decode(list(x)) for x in items]


def _no_echo(engine: Engine, req: SamplingFields) -> None:
    return None


@dataclass(frozen=True)
class Endpoint:
    """What one OpenAI endpoint does differently: its prompts, its defaults, its shape."""

    shape: Shape
    prompt_param: str
    default_max_tokens: int | None  # OpenAI's: 16 for completions, up to the context for chat
    prompts: Callable[[Engine, SamplingFields], list[list[int]]]
    echo: Callable[[Engine, SamplingFields], list[str] | None]  # per prompt: text put before its completions


ENDPOINTS: dict[type[SamplingFields], Endpoint] = {
    CompletionRequest: Endpoint(COMPLETION, "prompt", 16, _completion_prompts, _completion_echo),
    ChatCompletionRequest: Endpoint(CHAT, "messages", None, _chat_prompts, _no_echo),
}


def _json_output(req: SamplingFields) -> JsonOutput | None:
    f = req.response_format
    if f is None or f.type == "text":
        return None
    return JsonOutput(None if f.json_schema is None else json.dumps(f.json_schema.schema_, sort_keys=True))


def _echoed(echo: list[str] | None, k: int, prompt_lps: list[TokenLogprob] | None, text: str,
            lps: list[TokenLogprob] | None) -> tuple[str, list[TokenLogprob] | None]:
    """A choice's text and logprobs with prompt `k` before them when `echo` asked for it."""
    if echo is None:
        return text, lps
    return echo[k] + text, None if lps is None else [*(prompt_lps or []), *lps]


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
            if not ids and self.engine.bos_token_id is not None:  # "" as OpenAI takes it: from the start
                ids = [self.engine.bos_token_id]
            if not ids:
                raise InvalidRequest("The prompt is empty and this model has no start token.", param=ep.prompt_param)
            if any(not 0 <= t < self.engine.vocab_size for t in ids):
                raise InvalidRequest(f"The prompt holds token ids outside this model's vocabulary "
                                     f"[0, {self.engine.vocab_size}).", param=ep.prompt_param)
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
            if req.min_tokens > max_tokens:
                raise InvalidRequest(f"min_tokens={req.min_tokens} exceeds max_tokens={max_tokens}; "
                                     "ask for at most as many as max_tokens", param="min_tokens")
            logprobs, prompt_logprobs = req.logprob_counts()
            sampling = SamplingOptions(max_tokens=max_tokens, temperature=req.temperature,
                                       top_p=req.top_p, stop=tuple(req.stop), seed=req.seed, n=req.n,
                                       presence_penalty=req.presence_penalty,
                                       frequency_penalty=req.frequency_penalty,
                                       logprobs=logprobs, prompt_logprobs=prompt_logprobs,
                                       logit_bias=tuple((req.logit_bias or {}).items()),
                                       stop_token_ids=tuple(req.stop_token_ids or ()), min_tokens=req.min_tokens,
                                       repetition_penalty=req.repetition_penalty, top_k=req.top_k, min_p=req.min_p,
                                       ignore_eos=req.ignore_eos, json=_json_output(req))
            out.append(GenerateRequest(new_id("req") + f"-{i}", ids, sampling, ctx.adapter, req.stream))
        return out

    async def respond(self, req: SamplingFields, ctx: RequestContext) -> dict | AsyncIterator[str]:
        """A full response dict, or an async iterator of SSE lines when `stream`; runs the
        adapter handle `ctx` resolved, whatever the catalog serves by then."""
        ep = ENDPOINTS[type(req)]
        if bad := req.unsupported():
            raise InvalidRequest(f"not supported by loramux: {', '.join(bad)}; leave it unset "
                                 "(/openapi.json lists the fields loramux takes)", param=bad[0])
        requests = self._requests(req, ep, ctx)
        if ctx.reserve is not None:  # the key's token budget: prompt plus what each choice may add
            ctx.reserve(sum(len(r.prompt_token_ids) + r.sampling.max_tokens * r.sampling.n for r in requests))
        echo = ep.echo(self.engine, req)
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return self._stream(req.n, Chunks(ep.shape, req.model, include_usage), requests, ctx, echo)
        return await self._complete(req.n, ep.shape, req.model, requests, ctx, echo)

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
                        ctx: RequestContext, echo: list[str] | None) -> dict:
        results = await asyncio.gather(*(self._collect(r, ctx) for r in requests))
        choices, prompt_tokens, completion_tokens = [], 0, 0
        for k, (final, ptoks, prompt_lps) in enumerate(results):
            prompt_tokens += ptoks
            for c in sorted(final.values(), key=lambda c: c.index):
                completion_tokens += c.new_tokens
                text, lps = _echoed(echo, k, prompt_lps, c.text, c.logprobs)
                choices.append(shape.choice(k * n + c.index, text, c.finish_reason,
                                            None if lps is None else shape.logprobs(lps, 0)))
        ctx.finished(prompt_tokens, completion_tokens)
        return response(shape, model, choices, prompt_tokens, completion_tokens)

    async def _collect(self, request: GenerateRequest, ctx: RequestContext):
        final, ptoks, prompt_lps = {}, len(request.prompt_token_ids), None
        async for chunk in self._generate(request, ctx):
            ctx.engine_timing(chunk.queue_s, chunk.first_token_s)
            ptoks = chunk.prompt_tokens
            prompt_lps = chunk.prompt_logprobs or prompt_lps
            for c in chunk.choices:
                if c.index in final:
                    final[c.index].text += c.text
                    final[c.index].new_tokens += c.new_tokens
                    final[c.index].finish_reason = c.finish_reason
                    if c.logprobs is not None:
                        final[c.index].logprobs = (final[c.index].logprobs or []) + c.logprobs
                else:
                    final[c.index] = c
        return final, ptoks, prompt_lps

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
                      ctx: RequestContext, echo: list[str] | None) -> AsyncIterator[str]:
        prompt_tokens = {k: len(r.prompt_token_ids) for k, r in enumerate(requests)}
        prompt_lps: dict[int, list[TokenLogprob] | None] = {}
        echoed: set[int] = set()  # choices whose first delta carried the prompt
        completion_tokens = 0
        async for k, chunk in self._merged(requests, ctx):
            ctx.engine_timing(chunk.queue_s, chunk.first_token_s)
            prompt_tokens[k] = chunk.prompt_tokens
            prompt_lps[k] = chunk.prompt_logprobs or prompt_lps.get(k)
            completion_tokens += sum(c.new_tokens for c in chunk.choices)
            ctx.first_token()
            deltas = []
            for c in chunk.choices:
                index = k * n + c.index
                text, lps = c.text, c.logprobs
                if index not in echoed:
                    echoed.add(index)
                    text, lps = _echoed(echo, k, prompt_lps[k], text, lps)
                deltas.append(out.delta(index, text, c.finish_reason, lps))
            yield out.chunk(deltas)
        ptotal = sum(prompt_tokens.values())
        for line in out.end(ptotal, completion_tokens):
            yield line
        ctx.finished(ptotal, completion_tokens)
