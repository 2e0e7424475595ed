"""Tool calls on the real engine, with the official client: `required` and a named function give
calls whose arguments follow the function's schema for the base and every adapter, streamed and
not, on a base with no tool-call training (structured output does it); `auto` goes through vLLM's
`hermes` parser (the session server runs with --tool-call-parser hermes)."""

from __future__ import annotations

import json

import pytest
from jsonschema import validate
from openai import OpenAI

pytestmark = pytest.mark.integration

# Bounded values only: a weak model may write one string forever, as it may in any free answer.
WEATHER = {"type": "object", "additionalProperties": False, "required": ["city", "days"],
           "properties": {"city": {"enum": ["paris", "oslo", "lima"]},
                          "days": {"type": "integer", "minimum": 1, "maximum": 7}}}
ALARM = {"type": "object", "additionalProperties": False, "required": ["hour"],
         "properties": {"hour": {"type": "integer", "minimum": 0, "maximum": 23}}}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
         {"type": "function", "function": {"name": "set_alarm", "parameters": ALARM}}]
SCHEMAS = {"get_weather": WEATHER, "set_alarm": ALARM}
MSGS = [{"role": "user", "content": "what is the weather in paris"}]


@pytest.fixture(scope="module")
def client(server) -> OpenAI:
    return OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=300)


def _calls(out, stream: bool) -> tuple[list[tuple[str, dict]], str]:
    """(name, arguments) of each call and the finish reason, from a whole answer or a stream."""
    if not stream:
        choice = out.choices[0]
        return [(c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls], \
            choice.finish_reason
    calls: dict[int, list[str]] = {}
    finish = None
    for chunk in out:
        for d in chunk.choices[0].delta.tool_calls or []:
            call = calls.setdefault(d.index, ["", ""])
            call[0] += d.function.name or ""
            call[1] += d.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    return [(name, json.loads(args)) for name, args in calls.values()], finish


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_named_function_is_called_with_valid_arguments_by_every_model(server, client, stream):
    for name in [server.base_name, *server.adapters]:
        out = client.chat.completions.create(
            model=name, messages=MSGS, tools=TOOLS, max_tokens=40, temperature=0.8, seed=5, stream=stream,
            tool_choice={"type": "function", "function": {"name": "set_alarm"}})
        calls, finish = _calls(out, stream)
        assert [n for n, _ in calls] == ["set_alarm"] and finish == "stop", (name, calls, finish)
        validate(calls[0][1], ALARM)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_required_calls_an_offered_function_with_valid_arguments(server, client, stream):
    for name in [server.base_name, *server.adapters]:
        out = client.chat.completions.create(
            model=name, messages=MSGS, tools=TOOLS, tool_choice="required", parallel_tool_calls=False,
            max_tokens=60, temperature=0.8, seed=7, stream=stream)
        calls, finish = _calls(out, stream)
        assert len(calls) == 1 and finish == "tool_calls", (name, calls, finish)
        validate(calls[0][1], SCHEMAS[calls[0][0]])


def test_a_conversation_with_a_tool_result_continues(server, client):
    first = client.chat.completions.create(
        model="acme/support", messages=MSGS, tools=TOOLS, max_tokens=40, temperature=0,
        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    call = first.choices[0].message.tool_calls[0]
    history = [*MSGS, first.choices[0].message.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 degrees"}]
    nxt = client.chat.completions.create(model="acme/support", messages=history, tools=TOOLS,
                                         tool_choice="none", max_tokens=8, temperature=0)
    assert nxt.choices[0].message.content and not nxt.choices[0].message.tool_calls
    assert nxt.usage.prompt_tokens > first.usage.prompt_tokens  # the call and its result are in the prompt


def test_auto_shows_the_tools_and_answers_through_the_parser(server, client):
    """The tiny base never writes `<tool_call>` itself: `auto` gives its words as content. That the
    parser finds calls in a Hermes answer is in tests/server/test_engine_contract.py."""
    plain = client.chat.completions.create(model=server.base_name, messages=MSGS, max_tokens=8, temperature=0)
    auto = client.chat.completions.create(model=server.base_name, messages=MSGS, tools=TOOLS, max_tokens=8,
                                          temperature=0)
    assert auto.usage.prompt_tokens > plain.usage.prompt_tokens + 40  # the template lists the tools
    assert auto.choices[0].message.content and not auto.choices[0].message.tool_calls
    assert auto.choices[0].finish_reason in ("stop", "length")
