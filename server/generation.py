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
from .engine.protocol import (ChoiceDelta, Engine, GenerateChunk, GenerateRequest, JsonOutput, SamplingOptions,
                              TokenLogprob)
from .fairness import FairShare, tenant_of
from .openai_protocol import ChatCompletionRequest, CompletionRequest, SamplingFields, new_id
from .responses import CHAT, COMPLETION, Chunks, Shape, response
from .slots import LoraSlots
from .tool_calls import Tools, ToolStream, tools_of


def _completion_prompts(engine: Engine, req: CompletionRequest) -> list[list[int]]:
    p = req.prompt
    if isinstance(p, str):
        return [engine.encode(p)]
    if all(isinstance(x, int) for x in p):
        return [list(p)]
    return [engine.encode(x) if isinstance(x, str) else list(x) for x in p]


def _chat_prompts(engine: Engine, req: ChatCompletionRequest) -> list[list[int]]:
    tools = [t.model_dump(exclude_none=True) for t in req.tools] if req.tools else None
    return [engine.render_chat([m.for_template() for m in req.messages], tools)]


def _completion_echo(engine: Engine, req: CompletionRequest) -> list[str] | None:
    """What `echo` puts before each prompt's completions: the prompt as sent, token ids decoded."""
    if not req.echo:
        return None
    p = req.prompt
    items = [p] if isinstance(p, str) or all(isinstance(x, int) for x in p) else p
    return [x if isinstance(x, str) else engine.decode(list(x)) for x in items]


def _no_echo(engine: Engine, req: SamplingFields) -> None:
    return None


def _no_tools(req: SamplingFields, engine: Engine) -> None:
    return None


@dataclass(frozen=True)
class Endpoint:
    """What one OpenAI endpoint does differently: its prompts, its defaults, its shape."""

    shape: Shape
    prompt_param: str
    default_max_tokens: int | None  # OpenAI's: 16 for completions, up to the context for chat
    prompts: Callable[[Engine, SamplingFields], list[list[int]]]
    echo: Callable[[Engine, SamplingFields], list[str] | None]  # per prompt: text put before its completions
    tools: Callable[[SamplingFields, Engine], Tools | None]  # what the request asked of its tools


ENDPOINTS: dict[type[SamplingFields], Endpoint] = {
    CompletionRequest: Endpoint(COMPLETION, "prompt", 16, _completion_prompts, _completion_echo, _no_tools),
    ChatCompletionRequest: Endpoint(CHAT, "messages", None, _chat_prompts, _no_echo, tools_of),
}


def _json_output(req: SamplingFields, tools: Tools | None) -> JsonOutput | None:
    """The answer's constraint: the tool calls' JSON, or `response_format`'s."""
    f = req.response_format
    wants_json = f is not None and f.type != "text"
    if tools is not None and (calls := tools.constraint()) is not None:
        if wants_json:
            raise InvalidRequest("with tool_choice 'required' or a named function the answer is tool calls; "
                                 "leave response_format unset (or text)", param="response_format")
        return calls
    if not wants_json:
        return None
    return JsonOutput(None if f.json_schema is None else json.dumps(f.json_schema.schema_, sort_keys=True))


def _echoed(echo: list[str] | None, k: int, prompt_lps: list[TokenLogprob] | None, text: str,
            lps: list[TokenLogprob] | None) -> tuple[str, list[TokenLogprob] | None]:
    """A choice's text and logprobs with prompt `k` before them when `echo` asked for it."""
    if echo is None:
        return text, lps
    return echo[k] + text, None if lps is None else [*(prompt_lps or []), *lps]


def _best(answers: list[ChoiceDelta], n: int) -> list[ChoiceDelta]:
    """The `n` answers with the highest log-probability per token (OpenAI's `best_of`), best first."""
    if len(answers) <= n:
        return answers
    return sorted(answers, key=lambda c: -sum(t.logprob for t in c.logprobs or []) / max(len(c.logprobs or []), 1))[:n]


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
    def _requests(self, req: SamplingFields, ep: Endpoint, ctx: RequestContext,
                  tools: Tools | None) -> list[GenerateRequest]:
        limit = self.engine.max_model_len
        json_output = _json_output(req, tools)
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
            if req.samples() > req.n and logprobs is None:
                logprobs = 0  # best_of ranks the answers by their tokens' logprobs
            sampling = SamplingOptions(max_tokens=max_tokens, temperature=req.temperature,
                                       top_p=req.top_p, stop=tuple(req.stop), seed=req.seed, n=req.samples(),
                                       presence_penalty=req.presence_penalty,
                                       frequency_penalty=req.frequency_penalty,
                                       logprobs=logprobs, prompt_logprobs=prompt_logprobs,
                                       logit_bias=tuple((req.logit_bias or {}).items()),
                                       stop_token_ids=tuple(req.stop_token_ids or ()), min_tokens=req.min_tokens,
                                       repetition_penalty=req.repetition_penalty, top_k=req.top_k, min_p=req.min_p,
                                       ignore_eos=req.ignore_eos, json=json_output,
                                       skip_special_tokens=tools is None or not tools.mode.special_tokens)
            out.append(GenerateRequest(new_id("req") + f"-{i}", ids, sampling, ctx.adapter, req.stream))
        return out

    async def respond(self, req: SamplingFields, ctx: RequestContext) -> dict | AsyncIterator[str]:
        """A full response dict, or an async iterator of SSE lines when `stream`; runs the
        adapter handle `ctx` resolved, whatever the catalog serves by then."""
        ep = ENDPOINTS[type(req)]
        if bad := req.unsupported():
            raise InvalidRequest(f"not supported by loramux: {', '.join(bad)}; leave it unset "
                                 "(/openapi.json lists the fields loramux takes)", param=bad[0])
        tools = ep.tools(req, self.engine)
        if req.samples() < req.n or (req.samples() > req.n and req.stream):
            raise InvalidRequest(f"best_of={req.samples()} must be at least n={req.n}, and more than n only "
                                 "without stream (the best are known once all are done)", param="best_of")
        requests = self._requests(req, ep, ctx, tools)
        if ctx.reserve is not None:  # the key's token budget: prompt plus what each choice may add
            await ctx.reserve(sum(len(r.prompt_token_ids) + r.sampling.max_tokens * r.sampling.n for r in requests))
        echo = ep.echo(self.engine, req)
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            out = Chunks(ep.shape, req.model, include_usage)
            return self._stream(req.n, out, requests, ctx, echo, tools and ToolStream(tools, self.engine, out))
        return await self._complete(req, ep.shape, requests, ctx, echo, tools)

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

    async def _complete(self, req: SamplingFields, shape: Shape, requests: list[GenerateRequest],
                        ctx: RequestContext, echo: list[str] | None, tools: Tools | None) -> dict:
        results = await asyncio.gather(*(self._collect(r, ctx) for r in requests))
        choices, prompt_tokens, completion_tokens, n = [], 0, 0, req.n
        shows_logprobs = req.logprob_counts()[0] is not None
        for k, (final, ptoks, prompt_lps) in enumerate(results):
            prompt_tokens += ptoks
            completion_tokens += sum(c.new_tokens for c in final.values())
            for i, c in enumerate(_best(sorted(final.values(), key=lambda c: c.index), n)):
                text, lps = _echoed(echo, k, prompt_lps, c.text, c.logprobs if shows_logprobs else None)
                choice = shape.choice(k * n + i, text, c.finish_reason,
                                      None if lps is None else shape.logprobs(lps, 0))
                choices.append(choice if tools is None else tools.choice(choice, text, self.engine))
        ctx.finished(prompt_tokens, completion_tokens)
        return response(shape, req.model, choices, prompt_tokens, completion_tokens)

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

    async def _stream(self, n: int, out: Chunks, requests: list[GenerateRequest], ctx: RequestContext,
                      echo: list[str] | None, tool_stream: ToolStream | None) -> AsyncIterator[str]:
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
                if tool_stream is not None:
                    if (delta := tool_stream.delta(index, text, c.finish_reason, lps)) is not None:
                        deltas.append(delta)
                    continue
                if index not in echoed:
                    echoed.add(index)
                    text, lps = _echoed(echo, k, prompt_lps[k], text, lps)
                deltas.append(out.delta(index, text, c.finish_reason, lps))
            if deltas:
                yield out.chunk(deltas)
        ptotal = sum(prompt_tokens.values())
        for line in out.end(ptotal, completion_tokens):
            yield line
        ctx.finished(ptotal, completion_tokens)
