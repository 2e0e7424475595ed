"""OpenAI response shapes: a whole completion or chat response, or its SSE chunks.

Completions and chat differ only in how a choice is shaped; `Shape` holds that difference.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from .openai_protocol import Usage, new_id, now

DONE = "data: [DONE]\n\n"


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
        self._started: set[int] = set()

    def delta(self, index: int, text: str, finish_reason: str | None) -> dict:
        first = index not in self._started
        self._started.add(index)
        return self.shape.delta(index, text, finish_reason, first)

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
