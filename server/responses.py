"""OpenAI response shapes: a whole completion or chat response, or its SSE chunks.

Completions and chat differ only in how a choice is shaped; `Shape` holds that difference.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from .engine.protocol import TokenLogprob
from .openai_protocol import Usage, new_id, now

DONE = "data: [DONE]\n\n"


def completion_logprobs(tokens: list[TokenLogprob], offset: int) -> dict:
    """The legacy completions shape (what lm-evaluation-harness reads): parallel lists, and each
    position's alternatives as {text: logprob}, the chosen token among them as vLLM returns it."""
    offsets = []
    for t in tokens:
        offsets.append(offset)
        offset += len(t.text)
    return {"tokens": [t.text for t in tokens], "token_logprobs": [t.logprob for t in tokens],
            "top_logprobs": [None if t.logprob is None else dict(t.top) | {t.text: t.logprob} for t in tokens],
            "text_offset": offsets}


def _chat_token(text: str, logprob: float) -> dict:
    return {"token": text, "logprob": logprob, "bytes": list(text.encode())}


def chat_logprobs(tokens: list[TokenLogprob], offset: int) -> dict:
    return {"content": [_chat_token(t.text, t.logprob) | {"top_logprobs": [_chat_token(*x) for x in t.top]}
                        for t in tokens], "refusal": None}


@dataclass(frozen=True)
class Shape:
    """How one endpoint names and shapes its objects."""

    endpoint: str
    id_prefix: str
    object: str
    chunk_object: str
    choice: Callable[[int, str, str | None, dict | None], dict]  # (index, text, finish, logprobs) -> choice
    delta: Callable[[int, str, str | None, bool, dict | None], dict]  # (..., first, logprobs) -> choice
    logprobs: Callable[[list[TokenLogprob], int], dict]  # (tokens, text offset of the first) -> `logprobs`


COMPLETION = Shape(
    "completions", "cmpl", "text_completion", "text_completion",
    choice=lambda i, t, f, lp: {"index": i, "text": t, "logprobs": lp, "finish_reason": f},
    delta=lambda i, t, f, first, lp: {"index": i, "text": t, "logprobs": lp, "finish_reason": f},
    logprobs=completion_logprobs)
CHAT = Shape(
    "chat", "chatcmpl", "chat.completion", "chat.completion.chunk",
    choice=lambda i, t, f, lp: {"index": i, "message": {"role": "assistant", "content": t},
                                "logprobs": lp, "finish_reason": f},
    delta=lambda i, t, f, first, lp: {"index": i, "delta": ({"role": "assistant", "content": t} if first
                                                            else {"content": t}),
                                      "logprobs": lp, "finish_reason": f},
    logprobs=chat_logprobs)


def _usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                 total_tokens=prompt_tokens + completion_tokens).model_dump()


def response(shape: Shape, model: str, choices: list[dict], prompt_tokens: int, completion_tokens: int) -> dict:
    return {"id": new_id(shape.id_prefix), "object": shape.object, "created": now(), "model": model,
            "choices": choices, "usage": _usage(prompt_tokens, completion_tokens)}


class Chunks:
    """The SSE lines of one streamed response: one id and timestamp throughout."""

    def __init__(self, shape: Shape, model: str, include_usage: bool) -> None:
        self.shape, self.model, self.include_usage = shape, model, include_usage
        self.id, self.created = new_id(shape.id_prefix), now()
        self._offsets: dict[int, int] = {}  # choice -> characters sent so far (legacy text_offset)

    def delta(self, index: int, text: str, finish_reason: str | None,
              logprobs: list[TokenLogprob] | None = None) -> dict:
        first = index not in self._offsets
        offset = self._offsets.get(index, 0)
        self._offsets[index] = offset + len(text)
        return self.shape.delta(index, text, finish_reason, first,
                                None if logprobs is None else self.shape.logprobs(logprobs, offset))

    def message_delta(self, index: int, message: dict, finish_reason: str | None,
                      logprobs: list[TokenLogprob] | None = None) -> dict:
        """A chat choice's delta with its message given whole (tool calls); the role on its first."""
        first = index not in self._offsets
        self._offsets.setdefault(index, 0)
        return {"index": index, "delta": ({"role": "assistant"} if first else {}) | message,
                "logprobs": None if logprobs is None else self.shape.logprobs(logprobs, 0),
                "finish_reason": finish_reason}

    def chunk(self, choices: list[dict]) -> str:
        body = {"id": self.id, "object": self.shape.chunk_object, "created": self.created,
                "model": self.model, "choices": choices}
        if self.include_usage:
            body["usage"] = None
        return f"data: {json.dumps(body)}\n\n"

    def end(self, prompt_tokens: int, completion_tokens: int) -> list[str]:
        """The usage chunk (when asked for) and [DONE]."""
        lines = []
        if self.include_usage:
            lines.append("data: " + json.dumps({
                "id": self.id, "object": self.shape.chunk_object, "created": self.created, "model": self.model,
                "choices": [], "usage": _usage(prompt_tokens, completion_tokens)}) + "\n\n")
        return [*lines, DONE]
