"""The completions service: OpenAI request -> engine requests -> OpenAI response or SSE.

Completions and chat differ only in how the prompt is built and how a choice is shaped;
everything else (model resolution, length checks, n, streaming, usage, metrics) is here once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from loramux.adapters.errors import InvalidRequest, NotFound

from .engine.protocol import Engine, GenerateChunk, GenerateRequest, SamplingOptions
from .metrics import Metrics
from .openai_protocol import ChatCompletionRequest, CompletionRequest, SamplingFields, Usage, new_id, now


@dataclass(frozen=True)
class Shape:
    """How one endpoint names and shapes its objects."""

    endpoint: str
    id_prefix: str
    object: str
    chunk_object: str
    choice: Callable[[int, str, str | None], dict]  # (index, text, finish_reason) -> choice
    delta: Callable[[int, str, str | None, bool], dict]  # (index, text, finish, first) -> choice


COMPLETION = Shape(
    "completions", "cmpl", "text_completion", "text_completion",
    choice=lambda i, t, f: {"index": i, "text": t, "logprobs": None, "finish_reason": f},
    delta=lambda i, t, f, first: {"index": i, "text": t, "logprobs": None, "finish_reason": f})
CHAT = Shape(
    "chat", "chatcmpl", "chat.completion", "chat.completion.chunk",
    choice=lambda i, t, f: {"index": i, "message": {"role": "assistant", "content": t},
                            "logprobs": None, "finish_reason": f},
    delta=lambda i, t, f, first: {"index": i, "delta": ({"role": "assistant", "content": t} if first
                                                        else {"content": t}),
                                  "logprobs": None, "finish_reason": f})


class GenerationService:
    def __init__(self, engine: Engine, metrics: Metrics) -> None:
        self.engine = engine
        self.metrics = metrics

    # -- request -> engine requests ------------------------------------------------------
    def resolve_model(self, model: str) -> str | None:
        """Served name -> adapter name (None for the base). Unknown -> 404, never a hint."""
        if model == self.engine.base_name:
            return None
        if self.engine.has_adapter(model):
            return model
        raise NotFound(f"The model `{model}` does not exist.", param="model")

    def _prompts(self, req: CompletionRequest | ChatCompletionRequest) -> list[list[int]]:
        if isinstance(req, ChatCompletionRequest):
            return [self.engine.render_chat([{"role": m.role, "content": m.text()} for m in req.messages])]
        p = req.prompt
        if isinstance(p, str):
            return [self.engine.encode(p)]
        if all(isinstance(x, int) for x in p):
            return [list(p)]
        return [self.engine.encode(x) if isinstance(x, str) else list(x) for x in p]

    def _requests(self, req: SamplingFields, prompts: list[list[int]], default_max: int | None,
                  adapter: str | None, stream: bool) -> list[GenerateRequest]:
        limit = self.engine.max_model_len
        param = "messages" if isinstance(req, ChatCompletionRequest) else "prompt"
        asked = req.max_completion_tokens or req.max_tokens
        out = []
        for i, ids in enumerate(prompts):
            if not ids:
                raise InvalidRequest("The prompt is empty.", param=param)
            if len(ids) >= limit:
                raise InvalidRequest(f"The prompt is {len(ids)} tokens long; this model's context "
                                     f"is {limit} tokens. Shorten the prompt.", param=param)
            room = limit - len(ids)
            max_tokens = asked or min(default_max or room, room)  # a default never overflows
            if len(ids) + max_tokens > limit:
                raise InvalidRequest(
                    f"max_tokens={max_tokens} plus the prompt's {len(ids)} tokens exceeds the "
                    f"context of {limit} tokens. Ask for at most {room}.",
                    param="max_completion_tokens" if req.max_completion_tokens else "max_tokens")
            sampling = SamplingOptions(max_tokens=max_tokens, temperature=req.temperature,
                                       top_p=req.top_p, stop=tuple(req.stop), seed=req.seed, n=req.n,
                                       presence_penalty=req.presence_penalty,
                                       frequency_penalty=req.frequency_penalty)
            out.append(GenerateRequest(new_id("req") + f"-{i}", ids, sampling, adapter, stream))
        return out

    # -- responses ------------------------------------------------------------------------
    async def respond(self, req: CompletionRequest | ChatCompletionRequest, adapter: str | None):
        """A full response dict, or an async iterator of SSE lines when `stream`.
        `adapter` is `resolve_model(req.model)`, which callers run first."""
        shape = CHAT if isinstance(req, ChatCompletionRequest) else COMPLETION
        if bad := req.unsupported():
            raise InvalidRequest(f"not supported by loramux yet: {', '.join(bad)}; leave it unset",
                                 param=bad[0])
        default_max = 16 if shape is COMPLETION else None  # OpenAI's defaults
        requests = self._requests(req, self._prompts(req), default_max, adapter, req.stream)
        if req.stream:
            return self._stream(req, shape, requests)
        return await self._complete(req, shape, requests)

    async def _complete(self, req, shape: Shape, requests: list[GenerateRequest]) -> dict:
        started = time.perf_counter()
        results = await asyncio.gather(*(self._collect(r) for r in requests))
        choices, prompt_tokens, completion_tokens = [], 0, 0
        for k, (final, ptoks) in enumerate(results):
            prompt_tokens += ptoks
            for c in sorted(final.values(), key=lambda c: c.index):
                completion_tokens += c.new_tokens
                choices.append(shape.choice(k * req.n + c.index, c.text, c.finish_reason))
        self.metrics.observe(req.model, shape.endpoint, prompt_tokens, completion_tokens,
                             time.perf_counter() - started, ttft=None)
        usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                      total_tokens=prompt_tokens + completion_tokens)
        return {"id": new_id(shape.id_prefix), "object": shape.object, "created": now(),
                "model": req.model, "choices": choices, "usage": usage.model_dump()}

    async def _collect(self, request: GenerateRequest):
        final, ptoks = {}, len(request.prompt_token_ids)
        async for chunk in self.engine.generate(request):
            ptoks = chunk.prompt_tokens
            for c in chunk.choices:
                if c.index in final:
                    final[c.index].text += c.text
                    final[c.index].new_tokens += c.new_tokens
                    final[c.index].finish_reason = c.finish_reason
                else:
                    final[c.index] = c
        return final, ptoks

    async def _merged(self, requests: list[GenerateRequest]) -> AsyncIterator[tuple[int, GenerateChunk]]:
        """Chunks of all requests as they come, tagged with the request's position."""
        if len(requests) == 1:  # the common case: no tasks, no queue
            async for chunk in self.engine.generate(requests[0]):
                yield 0, chunk
            return
        queue: asyncio.Queue[tuple[int, GenerateChunk | BaseException | None]] = asyncio.Queue()

        async def pump(k: int, request: GenerateRequest) -> None:
            try:
                async for chunk in self.engine.generate(request):
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

    async def _stream(self, req, shape: Shape, requests: list[GenerateRequest]) -> AsyncIterator[str]:
        rid, created = new_id(shape.id_prefix), now()
        started, ttft = time.perf_counter(), None
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        prompt_tokens = {k: len(r.prompt_token_ids) for k, r in enumerate(requests)}
        completion_tokens, seen = 0, set()
        async for k, chunk in self._merged(requests):
            prompt_tokens[k] = chunk.prompt_tokens
            choices = []
            for c in chunk.choices:
                index = k * req.n + c.index
                completion_tokens += c.new_tokens
                choices.append(shape.delta(index, c.text, c.finish_reason, index not in seen))
                seen.add(index)
            if ttft is None:
                ttft = time.perf_counter() - started
            body = {"id": rid, "object": shape.chunk_object, "created": created,
                    "model": req.model, "choices": choices}
            if include_usage:
                body["usage"] = None
            yield f"data: {json.dumps(body)}\n\n"
        ptotal = sum(prompt_tokens.values())
        if include_usage:
            usage = Usage(prompt_tokens=ptotal, completion_tokens=completion_tokens,
                          total_tokens=ptotal + completion_tokens)
            yield "data: " + json.dumps({"id": rid, "object": shape.chunk_object, "created": created,
                                         "model": req.model, "choices": [],
                                         "usage": usage.model_dump()}) + "\n\n"
        yield "data: [DONE]\n\n"
        self.metrics.observe(req.model, shape.endpoint, ptotal, completion_tokens,
                             time.perf_counter() - started, ttft=ttft)
