"""The official `openai` client against the real server (vLLM engine): sync, async, streaming, and
`with_raw_response` / `with_streaming_response` (loramux's headers next to the typed objects)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from openai import AsyncOpenAI, AsyncStream, BadRequestError, NotFoundError, OpenAI, Stream
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from loramux.adapters.manifest import content_hash

from tests.lora_factory import PROBE

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def oai(server) -> OpenAI:
    return OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


def test_models_list_base_and_adapters(oai: OpenAI, server):
    models = {m.id: m for m in oai.models.list().data}
    published = {f"{m.tenant}/{m.name}" for m in server.registry.list()}  # all trained on this base
    assert set(models) == {server.base_name, *server.adapters, *published}
    assert all(models[a].parent == server.base_name for a in server.adapters)


def test_each_adapter_answers_differently(oai: OpenAI, server):
    # the adapters' first greedy tokens on PROBE differ by a wide margin (distinct_loras)
    texts = {m: oai.completions.create(model=m, prompt=PROBE, max_tokens=10, temperature=0).choices[0].text
             for m in [server.base_name, *server.adapters]}
    assert len(set(texts.values())) == len(texts), texts


def test_sync_completion_usage_and_finish(oai: OpenAI):
    r = oai.completions.create(model="acme/support", prompt="the robot", max_tokens=7, temperature=0)
    assert r.usage.completion_tokens == 7 and r.usage.prompt_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + 7
    assert r.choices[0].finish_reason == "length"


def test_chat_streaming_matches_non_streaming(oai: OpenAI):
    msgs = [{"role": "user", "content": "Where is my order?"}]
    full = oai.chat.completions.create(model="globex/sales", messages=msgs, max_tokens=10, temperature=0)
    stream = oai.chat.completions.create(model="globex/sales", messages=msgs, max_tokens=10, temperature=0,
                                         stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens


def test_async_client_concurrent_requests(server):
    async def run():
        async with AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0) as client:
            return await asyncio.gather(*(
                client.chat.completions.create(model=m, messages=[{"role": "user", "content": "hi"}],
                                               max_tokens=5, temperature=0)
                for m in [server.base_name, *server.adapters] * 2))
    results = asyncio.run(run())
    assert all(r.usage.completion_tokens >= 1 for r in results)
    assert [r.choices[0].message.content for r in results[:4]] == [r.choices[0].message.content for r in results[4:]]


def test_seeded_sampling_is_reproducible_and_n_gives_choices(oai: OpenAI):
    kw = dict(model="acme/legal", prompt="a dog", max_tokens=8, temperature=1.0, top_p=0.9, seed=42)
    a, b = oai.completions.create(**kw), oai.completions.create(**kw)
    assert a.choices[0].text == b.choices[0].text
    many = oai.completions.create(**{**kw, "n": 3, "seed": None})
    assert sorted(c.index for c in many.choices) == [0, 1, 2]
    assert 3 <= many.usage.completion_tokens <= 24
    assert len({c.text for c in many.choices}) > 1  # sampled, not copies of one choice


def test_stop_sequence(oai: OpenAI):
    full = oai.completions.create(model="tiny", prompt="The cat", max_tokens=12, temperature=0).choices[0].text
    word = full.split()[2]
    cut = oai.completions.create(model="tiny", prompt="The cat", max_tokens=12, temperature=0, stop=[word])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].text == full[: full.index(word)]


def test_errors(oai: OpenAI, server):
    with pytest.raises(NotFoundError) as nf:
        oai.completions.create(model="acme/nope", prompt="x", max_tokens=2)
    assert nf.value.body["code"] == "model_not_found"
    with pytest.raises(BadRequestError) as bad:
        oai.completions.create(model="tiny", prompt="x", max_tokens=0)
    assert bad.value.body["param"] == "max_tokens"
    with pytest.raises(BadRequestError) as long:
        oai.completions.create(model="tiny", prompt="the cat " * 400, max_tokens=2)
    assert long.value.body["param"] == "prompt"
    with pytest.raises(BadRequestError) as ctx:
        oai.completions.create(model="tiny", prompt="x", max_tokens=100_000)
    assert ctx.value.body["param"] == "max_tokens"
    with pytest.raises(BadRequestError) as vocab:
        oai.completions.create(model="tiny", prompt=[5, 10**6], max_tokens=2)
    assert vocab.value.body["param"] == "prompt"
    r = httpx.post(f"{server.url}/v1/chat/completions", content=b"{oops",
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.headers["x-request-id"]


def test_health_and_metrics(oai: OpenAI, server):
    oai.completions.create(model="acme/support", prompt="x", max_tokens=3)
    assert httpx.get(f"{server.url}/health").status_code == 200
    text = httpx.get(f"{server.url}/metrics").text
    assert "vllm:" in text  # the engine's own series
    assert 'loramux_completion_tokens_total{adapter="acme/support",endpoint="completions",tenant="acme"}' in text
    assert "loramux_time_to_first_token_seconds_bucket" in text
    # what llm-d's endpoint picker, KServe and AIBrix read from a vLLM pod, from the real engine
    from prometheus_client.parser import text_string_to_metric_families

    families = {}
    for family in text_string_to_metric_families(text):
        families.setdefault(family.name, []).append(family)
    for name in ("vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc",
                 "vllm:cache_config_info", "vllm:lora_requests_info"):
        assert len(families.get(name, [])) == 1, f"{name}: {len(families.get(name, []))} families"
    (info,) = families["vllm:lora_requests_info"][0].samples
    assert "#" not in info.labels["running_lora_adapters"] + info.labels["waiting_lora_adapters"]
    assert int(info.labels["max_lora"]) > 0


def test_admin_load_validates_then_serves(oai: OpenAI, server, tmp_path):
    auth = {"Authorization": f"Bearer {server.admin_key}"}
    bad = tmp_path / "broken"
    bad.mkdir()
    (bad / "adapter_config.json").write_text("{not json")
    r = httpx.post(f"{server.url}/v1/load_lora_adapter", headers=auth,
                   json={"lora_name": "initech/broken", "lora_path": str(bad)})
    assert r.status_code == 400 and "adapter_config.json" in r.json()["error"]["message"]
    src = server.adapters["acme/support"]
    r = httpx.post(f"{server.url}/v1/load_lora_adapter", headers=auth,
                   json={"lora_name": "initech/copy", "lora_path": str(src)})
    assert r.status_code == 200, r.text
    same = [oai.completions.create(model=m, prompt="my friend", max_tokens=8, temperature=0).choices[0].text
            for m in ("initech/copy", "acme/support")]
    assert same[0] == same[1]
    r = httpx.post(f"{server.url}/v1/unload_lora_adapter", headers=auth, json={"lora_name": "initech/copy"})
    assert r.status_code == 200
    with pytest.raises(NotFoundError):
        oai.completions.create(model="initech/copy", prompt="x", max_tokens=2)


def test_server_timing_comes_from_the_engine(server):
    """queue and prefill are vLLM's own request stats; streamed or not, the header is there."""
    for stream in (False, True):
        r = httpx.post(f"{server.url}/v1/completions", timeout=120, json={
            "model": "acme/support", "prompt": "The cat sees", "max_tokens": 4, "stream": stream})
        assert r.status_code == 200
        timing = _timing(r.headers)
        assert {"resolve", "queue", "prefill"} <= set(timing) and timing["prefill"] > 0


def _timing(headers) -> dict[str, float]:
    return {k: float(v) for k, v in (p.split(";dur=") for p in headers["server-timing"].split(", "))}


def test_raw_response_headers_and_parsed_objects(oai: OpenAI, server):
    raw = oai.completions.with_raw_response.create(model="acme/support", prompt=PROBE, max_tokens=4, temperature=0)
    assert raw.status_code == 200
    assert raw.headers["x-loramux-adapter-version"] == content_hash(server.adapters["acme/support"])[:12]
    assert _timing(raw.headers)["prefill"] > 0
    completion = raw.parse()
    assert isinstance(completion, Completion) and completion.model == "acme/support"
    assert completion.usage.completion_tokens == 4
    assert completion._request_id == raw.headers["x-request-id"]  # what openai-python logs and reports
    plain = oai.completions.create(model="acme/support", prompt=PROBE, max_tokens=4, temperature=0)
    assert completion.choices[0].text == plain.choices[0].text

    base = oai.chat.completions.with_raw_response.create(model=server.base_name, max_tokens=3, temperature=0,
                                                         messages=[{"role": "user", "content": "hi"}])
    assert "x-loramux-adapter-version" not in base.headers and "server-timing" in base.headers
    chat = base.parse()
    assert isinstance(chat, ChatCompletion) and chat.choices[0].message.role == "assistant"


def test_streaming_response_headers_come_before_the_tokens(oai: OpenAI, server):
    msgs = [{"role": "user", "content": "Where is my order?"}]
    full = oai.chat.completions.create(model="globex/sales", messages=msgs, max_tokens=8, temperature=0)
    with oai.chat.completions.with_streaming_response.create(model="globex/sales", messages=msgs, max_tokens=8,
                                                             temperature=0, stream=True) as response:
        assert response.headers["x-loramux-adapter-version"] == content_hash(server.adapters["globex/sales"])[:12]
        assert response.headers["content-type"].startswith("text/event-stream")
        assert _timing(response.headers)["prefill"] > 0  # the first token's timing, sent with it
        stream = response.parse()
        assert isinstance(stream, Stream)
        chunks = list(stream)
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == full.choices[0].message.content


def test_async_streaming_and_raw_response(server):
    async def run():
        async with AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0) as client:
            raw = await client.completions.with_raw_response.create(model="acme/legal", prompt=PROBE, max_tokens=6,
                                                                    temperature=0)
            stream = await client.completions.create(model="acme/legal", prompt=PROBE, max_tokens=6, temperature=0,
                                                     stream=True, stream_options={"include_usage": True})
            assert isinstance(stream, AsyncStream)
            return raw, [chunk async for chunk in stream]
    raw, chunks = asyncio.run(run())
    assert raw.headers["x-loramux-adapter-version"] == content_hash(server.adapters["acme/legal"])[:12]
    whole = raw.parse()
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens == 6
