"""`tools` and `tool_choice` through the HTTP layer over the fake engine, with the official client:
the shapes clients parse, what reaches the engine, and the 400s. That the real engine's calls
follow the schemas is in tests/integration/test_tool_calls.py."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from jsonschema import validate
from openai import OpenAI

from loramux.server.engine.fake import FakeEngine

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
           "required": ["city", "days"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather forecast",
                                           "parameters": WEATHER}},
         {"type": "function", "function": {"name": "ping"}}]
MSGS = [{"role": "user", "content": "Weather in Paris for 3 days?"}]


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(base_name="tiny", max_model_len=2048)  # one token per character: tools are long


def _ask(oai: OpenAI, **kw):
    return oai.chat.completions.create(model="acme/support", messages=MSGS, max_tokens=30, tools=TOOLS, **kw)


def test_a_named_function_gives_one_call_whose_arguments_follow_its_schema(oai: OpenAI):
    out = _ask(oai, tool_choice={"type": "function", "function": {"name": "get_weather"}})
    choice = out.choices[0]
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    validate(json.loads(call.function.arguments), WEATHER)
    assert choice.message.content is None and choice.finish_reason == "stop"  # OpenAI's, for a forced call


def test_required_gives_calls_of_the_offered_functions(oai: OpenAI):
    out = _ask(oai, tool_choice="required", n=2)
    assert len(out.choices) == 2
    for choice in out.choices:
        assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
        for call in choice.message.tool_calls:
            assert call.function.name in {"get_weather", "ping"}
            if call.function.name == "get_weather":
                validate(json.loads(call.function.arguments), WEATHER)


def test_the_engine_is_asked_for_the_calls_json(oai: OpenAI, engine: FakeEngine, monkeypatch):
    seen = []
    real = engine.generate

    def spy(request):
        seen.append(request.sampling)
        return real(request)
    monkeypatch.setattr(engine, "generate", spy)
    _ask(oai, tool_choice={"type": "function", "function": {"name": "get_weather"}})
    _ask(oai, tool_choice="required", parallel_tool_calls=False)
    named, required = (json.loads(s.json.schema) for s in seen)
    assert named == WEATHER
    assert required["type"] == "array" and required["maxItems"] == 1
    assert [b["properties"]["name"]["enum"] for b in required["items"]["anyOf"]] == [["get_weather"], ["ping"]]
    assert required["items"]["anyOf"][1]["properties"]["parameters"] == {"type": "object", "properties": {}}


def test_streamed_calls_add_up_to_the_whole_answer(oai: OpenAI):
    for choice in [{"type": "function", "function": {"name": "get_weather"}}, "required"]:
        whole = _ask(oai, tool_choice=choice, temperature=0, seed=1).choices[0]
        chunks = list(_ask(oai, tool_choice=choice, temperature=0, seed=1, stream=True))
        calls: dict[int, dict] = {}
        for chunk in chunks:
            for d in chunk.choices[0].delta.tool_calls or []:
                call = calls.setdefault(d.index, {"name": "", "arguments": ""})
                call["name"] += (d.function.name or "") if d.function else ""
                call["arguments"] += (d.function.arguments or "") if d.function else ""
        assert [c["name"] for c in calls.values()] == [c.function.name for c in whole.message.tool_calls]
        assert [json.loads(c["arguments"]) for c in calls.values()] == \
            [json.loads(c.function.arguments) for c in whole.message.tool_calls]
        assert chunks[0].choices[0].delta.role == "assistant"
        assert chunks[-1].choices[0].finish_reason == whole.finish_reason


def test_tools_and_past_calls_reach_the_chat_template(client: TestClient, engine: FakeEngine, monkeypatch):
    seen = []
    real = engine.render_chat
    monkeypatch.setattr(engine, "render_chat", lambda m, t=None: seen.append((m, t)) or real(m, t))
    history = [*MSGS, {"role": "assistant", "content": None, "tool_calls": [
                   {"id": "call_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris", "days": 3}'}}]},
               {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    r = client.post("/v1/chat/completions", json={"model": "tiny", "messages": history, "tools": TOOLS,
                                                  "tool_choice": "none", "max_tokens": 5})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"]  # `none`: a plain answer
    messages, tools = seen[0]
    assert tools == TOOLS
    assert messages[1]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris", "days": 3}  # parsed
    assert messages[2] == {"role": "tool", "content": "sunny", "tool_call_id": "call_1"}


def test_auto_uses_the_engines_tool_parser(client: TestClient, engine: FakeEngine, monkeypatch):
    engine.tool_parser = "fake"

    async def answer(request):
        from loramux.server.engine.protocol import ChoiceDelta, GenerateChunk

        assert not request.sampling.skip_special_tokens and request.sampling.json is None
        text = 'Let me look.<call>{"name": "get_weather", "arguments": {"city": "Oslo", "days": 1}}'
        yield GenerateChunk(prompt_tokens=3, choices=[ChoiceDelta(0, text, 9, "stop")])
    monkeypatch.setattr(engine, "generate", answer)
    for stream in (False, True):
        r = client.post("/v1/chat/completions", json={"model": "tiny", "messages": MSGS, "tools": TOOLS,
                                                      "stream": stream})
        assert r.status_code == 200, r.text
        if stream:
            events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
            (event,) = events
            message, finish = event["choices"][0]["delta"], event["choices"][0]["finish_reason"]
        else:
            message, finish = r.json()["choices"][0]["message"], r.json()["choices"][0]["finish_reason"]
        assert message["content"] == "Let me look." and finish == "tool_calls"
        assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in message["tool_calls"]] == \
            [("get_weather", {"city": "Oslo", "days": 1})]


@pytest.mark.parametrize("body,param", [
    ({"tools": TOOLS}, "tool_choice"),  # auto, the default with tools, but no --tool-call-parser
    ({"tools": TOOLS, "tool_choice": "auto"}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),  # no tools
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tools": [TOOLS[0], TOOLS[0]], "tool_choice": "required"}, "tools"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}], "tool_choice": "required"}, "tools"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "nope"}}}],
      "tool_choice": "required"}, "tools"),
    ({"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}}, "response_format"),
    ({"functions": [{"name": "f"}]}, "functions"),  # the deprecated form: refused, not ignored
])
def test_unservable_tool_requests_are_a_400_naming_the_field(client: TestClient, body: dict, param: str):
    r = client.post("/v1/chat/completions", json={"model": "tiny", "messages": MSGS, "max_tokens": 5, **body})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"].startswith(param), r.json()
