"""Chat `tools` + `tool_choice`: how the answer is constrained, and how its text becomes `tool_calls`.

`required` and a named function work on any base, with no tool parser: the answer is constrained
to JSON (structured output) that *is* the calls, so the arguments always follow the function's
schema. `auto` leaves the model free and needs the engine's tool parser (`--tool-call-parser`) to
find calls in its text, as vLLM's server does. What differs between the three is a `Mode` entry.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loramux.adapters.errors import InvalidRequest

from .engine.protocol import Engine, JsonOutput, ParsedToolCall, TokenLogprob
from .openai_protocol import ChatCompletionRequest, NamedToolChoice
from .responses import Chunks


def _params(parameters: dict | None) -> dict:
    return parameters or {"type": "object", "properties": {}}  # no schema: still an object


@dataclass(frozen=True)
class Tools:
    """One request's tools and what it asked of them."""

    tools: list[dict]  # OpenAI's tool objects, as the chat template and the tool parser read them
    mode: Mode
    name: str | None  # the function a named tool_choice forces
    parallel: bool

    def constraint(self) -> JsonOutput | None:
        schema = self.mode.schema(self)
        return None if schema is None else JsonOutput(json.dumps(schema, sort_keys=True))

    def parameters(self, name: str) -> dict:
        return next(_params(t["function"].get("parameters")) for t in self.tools if t["function"]["name"] == name)

    def calls(self, text: str, engine: Engine) -> tuple[str | None, list[dict]] | None:
        """(content, tool calls) of a finished answer; None: it holds no call (or one cut short
        by max_tokens), and stays plain content."""
        try:
            found = self.mode.calls(self, text, engine)
        except (ValueError, KeyError, TypeError):  # not the JSON the constraint allows: cut short
            return None
        if found is None or not found[1]:
            return None
        content, calls = found
        return content, [tool_call(c.name, c.arguments) for c in calls]

    def finish(self, finish_reason: str | None) -> str | None:
        """Why an answer that made calls ended: the mode's reason, unless max_tokens cut it."""
        return self.mode.finish_reason if finish_reason not in (None, "length") else finish_reason

    def choice(self, choice: dict, text: str, engine: Engine) -> dict:
        """A whole answer's choice with its calls in the message."""
        found = self.calls(text, engine)
        if found is None:
            return choice
        content, calls = found
        return {**choice, "message": {"role": "assistant", "content": content, "tool_calls": calls},
                "finish_reason": self.finish(choice["finish_reason"])}


def tool_call(name: str, arguments: str) -> dict:
    return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
            "function": {"name": name, "arguments": arguments}}


@dataclass(frozen=True)
class Mode:
    schema: Callable[[Tools], dict | None]  # the answer's JSON Schema; None: free text
    calls: Callable[[Tools, str, Engine], tuple[str | None, list[ParsedToolCall]] | None]
    finish_reason: str  # OpenAI's: "stop" when one function was forced, else "tool_calls"
    streams_arguments: bool  # True: a stream sends the arguments as they come; False: each call once, whole
    special_tokens: bool = False  # keep special tokens in the text: some models' call markers are special


def _required_schema(t: Tools) -> dict:
    """An array of {name, parameters}, one branch per function (vLLM's own shape for `required`)."""
    branches = [{"properties": {"name": {"type": "string", "enum": [f["function"]["name"]]},
                                "parameters": _params(f["function"].get("parameters"))},
                 "required": ["name", "parameters"]} for f in t.tools]
    schema: dict[str, Any] = {"type": "array", "minItems": 1, "items": {"type": "object", "anyOf": branches}}
    if not t.parallel:
        schema["maxItems"] = 1
    return schema


def _required_calls(t: Tools, text: str, engine: Engine) -> tuple[None, list[ParsedToolCall]]:
    return None, [ParsedToolCall(c["name"], json.dumps(c["parameters"], ensure_ascii=False))
                  for c in json.loads(text)]


def _named_calls(t: Tools, text: str, engine: Engine) -> tuple[None, list[ParsedToolCall]]:
    json.loads(text)  # whole, not cut short
    return None, [ParsedToolCall(t.name or "", text)]


def _auto_calls(t: Tools, text: str, engine: Engine) -> tuple[str | None, list[ParsedToolCall]] | None:
    return engine.parse_tool_calls(text, t.tools)


MODES: dict[str, Mode] = {
    "required": Mode(_required_schema, _required_calls, "tool_calls", streams_arguments=False),
    "named": Mode(lambda t: t.parameters(t.name or ""), _named_calls, "stop", streams_arguments=True),
    "auto": Mode(lambda t: None, _auto_calls, "tool_calls", streams_arguments=False, special_tokens=True),
}


def tools_of(req: ChatCompletionRequest, engine: Engine) -> Tools | None:
    """The request's tool calling, checked; None when the answer is plain text (no tools, or `none`)."""
    names = [t.function.name for t in req.tools or []]
    choice = req.tool_choice if req.tool_choice is not None else ("auto" if names else "none")
    if choice != "none" and not names:
        raise InvalidRequest("tool_choice needs tools: pass the functions the model may call in `tools`",
                             param="tool_choice")
    if len(set(names)) != len(names):
        raise InvalidRequest("two functions in tools share a name; names must be unique", param="tools")
    if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
        raise InvalidRequest(f"tool_choice names the function {choice.function.name!r}, which is not in "
                             f"tools ({', '.join(names)})", param="tool_choice")
    if choice == "none":
        return None
    if choice == "auto" and not engine.tool_parser:
        raise InvalidRequest(
            "tool_choice 'auto' (the default with tools) needs a tool parser for this base, and the server "
            "has none: start it with --tool-call-parser NAME, or send tool_choice 'required' or "
            '{"type": "function", "function": {"name": ...}}, which work on any base', param="tool_choice")
    named = isinstance(choice, NamedToolChoice)
    return Tools([t.model_dump(exclude_none=True) for t in req.tools or []],
                 MODES["named" if named else choice], choice.function.name if named else None,
                 req.parallel_tool_calls)


class ToolStream:
    """A streamed answer's deltas as tool calls. A named function's arguments stream as they come
    (the constraint makes the whole answer the arguments); `required` and `auto` answers are held
    until they finish, as only the whole text tells what the calls are."""

    def __init__(self, tools: Tools, engine: Engine, chunks: Chunks) -> None:
        self.tools, self.engine, self.chunks = tools, engine, chunks
        self._held: dict[int, tuple[str, list[TokenLogprob] | None]] = {}

    def delta(self, index: int, text: str, finish_reason: str | None,
              logprobs: list[TokenLogprob] | None) -> dict | None:
        """The choice's next delta; None while it is held."""
        if self.tools.mode.streams_arguments:
            if index in self._held:
                message = {"tool_calls": [{"index": 0, "function": {"arguments": text}}]}
            else:
                self._held[index] = ("", None)
                call = tool_call(self.tools.name or "", text)
                message = {"content": None, "tool_calls": [{"index": 0, **call}]}
            return self.chunks.message_delta(index, message, self.tools.finish(finish_reason), logprobs)
        held, held_lps = self._held.get(index, ("", None))
        text, logprobs = held + text, None if logprobs is None else [*(held_lps or []), *logprobs]
        if finish_reason is None:
            self._held[index] = (text, logprobs)
            return None
        found = self.tools.calls(text, self.engine)
        if found is None:
            return self.chunks.message_delta(index, {"content": text}, finish_reason, logprobs)
        content, calls = found
        message = {"content": content, "tool_calls": [{"index": i, **c} for i, c in enumerate(calls)]}
        return self.chunks.message_delta(index, message, self.tools.finish(finish_reason), logprobs)
