"""The official `openai` client against the real server (vLLM engine): sync, async, streaming."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from openai import AsyncOpenAI, BadRequestError, NotFoundError, OpenAI

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
        timing = {k: float(v) for k, v in (p.split(";dur=") for p in r.headers["server-timing"].split(", "))}
        assert {"resolve", "queue", "prefill"} <= set(timing) and timing["prefill"] > 0
