"""One set of assertions over every engine behind the seam: the fake the HTTP tests use and
vLLM itself (like the store contract suite over local and S3). What the layers above rely on:
greedy answers are stable, streaming adds up to the whole, adapters change the answer, and a
request runs exactly the adapter version its handle names, even after an unload."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from pathlib import Path

import pytest

from loramux.adapters.errors import InvalidRequest
from loramux.server.engine.protocol import AdapterHandle, GenerateRequest, SamplingOptions
from tests.lora_factory import PROBE, distinct_loras


class Loop:
    """An event loop in a thread for the module: vLLM's AsyncLLM stays bound to the loop it started on."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def run(self, coro, timeout: float = 300):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture(scope="module")
def loras(tiny_base: Path, tmp_path_factory) -> dict[str, Path]:
    return distinct_loras(tiny_base, tmp_path_factory.mktemp("contract"), ["acme/a", "acme/b"])


@pytest.fixture(scope="module", params=["fake", pytest.param("vllm", marks=pytest.mark.integration)])
def engine(request, tiny_base: Path):
    loop = Loop()
    if request.param == "fake":
        from loramux.server.engine.fake import FakeEngine

        eng = FakeEngine("tiny", max_model_len=128, max_loras=2, tool_parser="fake")
    else:
        from loramux.server.engine.vllm_engine import EngineConfig, VLLMEngine

        async def start():
            return VLLMEngine.start(EngineConfig(base=tiny_base, served_name="tiny", dtype="float32",
                                                 max_loras=2, max_lora_rank=16, tool_parser="hermes"))
        eng = loop.run(start())
    eng.run = loop.run  # the tests below drive it through its own loop
    yield eng
    eng.shutdown()
    loop.close()


def _req(engine, prompt: str = PROBE, adapter: AdapterHandle | None = None, *, max_tokens: int = 8,
         n: int = 1, temperature: float = 0.0, stream: bool = False, ids: list[int] | None = None) -> GenerateRequest:
    return GenerateRequest(f"contract-{uuid.uuid4().hex}", ids or engine.encode(prompt),
                           SamplingOptions(max_tokens=max_tokens, temperature=temperature, n=n, seed=0),
                           adapter, stream)


async def _chunks(engine, request: GenerateRequest) -> list:
    return [c async for c in engine.generate(request)]


def _text(engine, request: GenerateRequest) -> str:
    return "".join(d.text for c in engine.run(_chunks(engine, request)) for d in c.choices)


def test_greedy_answers_are_stable_and_stop_at_max_tokens(engine):
    chunks = engine.run(_chunks(engine, _req(engine, max_tokens=6, n=2, temperature=1.0)))
    final = chunks[-1].choices
    assert sorted(d.index for d in final) == [0, 1]
    assert all(d.new_tokens == 6 and d.finish_reason == "length" for d in final)
    assert chunks[-1].prompt_tokens == len(engine.encode(PROBE))
    assert _text(engine, _req(engine)) == _text(engine, _req(engine))


def test_stream_deltas_add_up_to_the_whole_answer(engine):
    whole = engine.run(_chunks(engine, _req(engine, max_tokens=10)))[-1].choices[0]
    deltas = [d for c in engine.run(_chunks(engine, _req(engine, max_tokens=10, stream=True))) for d in c.choices]
    assert "".join(d.text for d in deltas) == whole.text
    assert sum(d.new_tokens for d in deltas) == whole.new_tokens == 10
    assert [d.finish_reason for d in deltas][-1] == "length" and all(d.finish_reason is None for d in deltas[:-1])


def test_adapters_change_the_answer(engine, loras):
    a = AdapterHandle("acme/a", 1, loras["acme/a"])
    b = AdapterHandle("acme/b", 2, loras["acme/b"])
    engine.run(engine.load(a))
    engine.run(engine.load(b))
    texts = {_text(engine, _req(engine, adapter=h)) for h in (None, a, b)}
    assert len(texts) == 3, texts


def test_a_handle_runs_its_version_after_unload(engine, loras):
    """What lets the catalog unload or replace a name while requests that resolved it still run."""
    h = AdapterHandle("acme/a", 3, loras["acme/a"])
    engine.run(engine.load(h))
    before = _text(engine, _req(engine, adapter=h, max_tokens=12))

    async def unload_mid_stream() -> str:
        parts, stream = [], engine.generate(_req(engine, adapter=h, max_tokens=12, stream=True))
        async for chunk in stream:
            if not parts:
                await engine.unload(h)
            parts += [d.text for d in chunk.choices]
        return "".join(parts)

    assert engine.run(unload_mid_stream()) == before
    assert _text(engine, _req(engine, adapter=h, max_tokens=12)) == before  # loaded again from its path


def test_two_versions_of_one_name_in_one_batch_stay_apart(engine, loras):
    v1 = AdapterHandle("acme/x", 10, loras["acme/a"])
    v2 = AdapterHandle("acme/x", 11, loras["acme/b"])
    for h in (v1, v2):
        engine.run(engine.load(h))
    alone = [_text(engine, _req(engine, adapter=h)) for h in (v1, v2)]

    async def together():
        return await asyncio.gather(*(_chunks(engine, _req(engine, adapter=h)) for h in (v1, v2, v1, v2)))

    batched = ["".join(d.text for c in chunks for d in c.choices) for chunks in engine.run(together())]
    assert alone[0] != alone[1] and batched == alone * 2


def test_residency_reports_batch_slots_and_a_pin_keeps_one(engine, loras):
    """What the admin listing and `--pin` rely on: a pinned adapter stays in a slot (of 2) while
    others churn through the rest, and unpinning lets it go, its answers unchanged throughout."""
    a, b, c = (AdapterHandle(f"acme/{n}", i, loras["acme/a" if n == "a" else "acme/b"])
               for n, i in (("a", 301), ("b", 302), ("c", 303)))
    for h in (a, b):
        engine.run(engine.load(h))
    before = _text(engine, _req(engine, adapter=a))
    engine.run(engine.pin(a))
    assert engine.run(engine.residency())[a.id] == "device"
    for h in (b, c, b, c):
        _text(engine, _req(engine, adapter=h))
        tiers = engine.run(engine.residency())
        assert tiers[a.id] == tiers[h.id] == "device"
    assert _text(engine, _req(engine, adapter=a)) == before
    engine.run(engine.pin(a, pinned=False))
    for h in (b, c):
        _text(engine, _req(engine, adapter=h))
    assert engine.run(engine.residency()).get(a.id) != "device"
    assert _text(engine, _req(engine, adapter=a)) == before
    for h in (a, b, c):
        engine.run(engine.unload(h))


def test_priority_orders_the_queue_and_never_the_answer(engine):
    """What fair share (server/fairness.py) relies on: any int priority is accepted, and with
    requests queued together it changes who goes first, never what comes back."""
    from dataclasses import replace

    plain = _req(engine, max_tokens=6)
    alone = _text(engine, plain)

    async def queued():
        reqs = [replace(_req(engine, max_tokens=6), priority=p) for p in (10**9, 3, 0, 3)]
        return await asyncio.gather(*(_chunks(engine, r) for r in reqs))

    texts = ["".join(d.text for c in chunks for d in c.choices) for chunks in engine.run(queued())]
    assert texts == [alone] * 4


def test_bad_input_is_a_client_error(engine, tmp_path):
    with pytest.raises(InvalidRequest) as exc:
        engine.run(_chunks(engine, _req(engine, ids=[10**7])))
    assert exc.value.param == "prompt"
    with pytest.raises(InvalidRequest):  # several greedy choices would all be the same one
        engine.run(_chunks(engine, _req(engine, n=2, temperature=0.0)))
    with pytest.raises(InvalidRequest):
        engine.run(engine.load(AdapterHandle("acme/empty", 99, tmp_path)))


def test_tokenization_and_health(engine):
    ids = engine.encode("hello there")
    assert ids and all(isinstance(i, int) for i in ids)
    chat = engine.render_chat([{"role": "user", "content": "hello there"}])
    assert len(chat) > len(ids)
    engine.run(engine.check_health())


# An answer that calls a tool, in each engine's parser's format (the tiny base's template writes Hermes).
TOOL_ANSWERS = {"fake": 'Checking.<call>{"name": "get_weather", "arguments": {"city": "Oslo"}}',
                "hermes": 'Checking.<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'}


def test_tools_reach_the_template_and_the_parser_finds_calls(engine):
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "the forecast",
                                               "parameters": {"type": "object"}}}]
    messages = [{"role": "user", "content": "weather?"}]
    assert len(engine.render_chat(messages, tools)) > len(engine.render_chat(messages))
    content, calls = engine.parse_tool_calls(TOOL_ANSWERS[engine.tool_parser], tools)
    assert content == "Checking." and [(c.name, json.loads(c.arguments)) for c in calls] == \
        [("get_weather", {"city": "Oslo"})]
    assert engine.parse_tool_calls("no call here", tools) == ("no call here", [])


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_logprobs_one_per_token_with_the_top_alternatives(engine, stream):
    from dataclasses import replace

    request = _req(engine, max_tokens=5, stream=stream)
    request = replace(request, sampling=replace(request.sampling, logprobs=2, prompt_logprobs=1))
    chunks = engine.run(_chunks(engine, request))
    tokens = [t for c in chunks for d in c.choices for t in d.logprobs]
    assert len(tokens) == sum(d.new_tokens for c in chunks for d in c.choices) == 5
    greedy = "".join(d.text for c in chunks for d in c.choices)
    assert "".join(t.text for t in tokens) == greedy
    for t in tokens:
        assert len(t.top) == 2 and t.top[0][1] >= t.top[1][1] and t.logprob <= 0
        assert t.logprob == pytest.approx(t.top[0][1], abs=1e-4)  # greedy: the chosen token is the likeliest
    prompt = next(c.prompt_logprobs for c in chunks if c.prompt_logprobs)
    assert [t.token_id for t in prompt] == list(request.prompt_token_ids)
    assert prompt[0].logprob is None and all(t.logprob <= 0 and len(t.top) == 1 for t in prompt[1:])
