"""Per-key quotas over the fake engine: requests and tokens per minute and requests in flight;
a 429 `rate_limit_exceeded` with Retry-After; OpenAI's x-ratelimit headers on every answer to
a limited key; no over-admission in a burst; rejections counted by tenant and limit."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from loramux.server.app import create_app
from loramux.server.engine.fake import FakeEngine
from loramux.server.keys import create_key
from loramux.server.settings import ServerSettings


class SlowEngine(FakeEngine):
    """Holds each request a moment, so concurrent requests really overlap."""

    async def generate(self, request):
        await asyncio.sleep(0.3)
        async for chunk in super().generate(request):
            yield chunk


@pytest.fixture
def server(tiny_base: Path, tmp_path: Path):
    path = tmp_path / "keys.json"
    keys = {"rpm": create_key(path, "acme", rpm=5)[0], "tpm": create_key(path, "tpm", tpm=100)[0],
            "inflight": create_key(path, "solo", max_inflight=1)[0], "free": create_key(path, "free")[0]}
    settings = ServerSettings(base=tiny_base, served_name="tiny", keys=path)

    async def factory(_):
        return SlowEngine(base_name="tiny", max_model_len=128)

    with TestClient(create_app(settings, factory)) as client:
        yield client, keys


def _ask(client: TestClient, key: str, max_tokens: int = 4):
    return client.post("/v1/completions", json={"model": "tiny", "prompt": "hi", "max_tokens": max_tokens},
                       headers={"Authorization": f"Bearer {key}"})


def test_requests_per_minute_count_down_then_429_with_retry_after(server):
    client, keys = server
    remaining = []
    for _ in range(5):
        r = _ask(client, keys["rpm"])
        assert r.status_code == 200
        remaining.append(r.headers["x-ratelimit-remaining-requests"])
        assert r.headers["x-ratelimit-limit-requests"] == "5"
    assert remaining == ["4", "3", "2", "1", "0"]  # counted after the request being answered
    r = _ask(client, keys["rpm"])
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded"
    assert 0 < int(r.headers["retry-after"]) <= 60 and r.headers["x-ratelimit-remaining-requests"] == "0"
    assert r.headers["x-ratelimit-reset-requests"].endswith("s")
    assert client.get("/v1/models", headers={"Authorization": f"Bearer {keys['rpm']}"}).headers[
        "x-ratelimit-remaining-requests"] == "0"  # every answer to a limited key carries them
    assert "x-ratelimit-limit-requests" not in _ask(client, keys["free"]).headers
    metrics = client.get("/metrics").text
    assert 'loramux_quota_rejections_total{limit="requests",tenant="acme"} 1.0' in metrics


def test_a_burst_never_over_admits(server):
    client, keys = server
    with ThreadPoolExecutor(20) as pool:
        codes = sorted(pool.map(lambda _: _ask(client, keys["rpm"]).status_code, range(20)))
    assert codes == [200] * 5 + [429] * 15


def test_tokens_per_minute_count_prompt_and_max_tokens(server):
    client, keys = server
    r = _ask(client, keys["tpm"], max_tokens=40)  # "hi" is 2 tokens on the fake engine: 42 reserved
    assert r.status_code == 200 and r.headers["x-ratelimit-remaining-tokens"] == "58"
    assert _ask(client, keys["tpm"], max_tokens=40).headers["x-ratelimit-remaining-tokens"] == "16"
    r = _ask(client, keys["tpm"], max_tokens=40)
    assert r.status_code == 429 and "tokens per min" in r.json()["error"]["message"]
    r = _ask(client, keys["tpm"], max_tokens=120)
    assert r.status_code == 429 and "Lower max_tokens" in r.json()["error"]["message"]
    assert _ask(client, keys["tpm"], max_tokens=10).status_code == 200  # 12 still fit


def test_requests_in_flight_are_capped_and_freed(server):
    client, keys = server
    with ThreadPoolExecutor(2) as pool:
        codes = sorted(pool.map(lambda _: _ask(client, keys["inflight"]).status_code, range(2)))
    assert codes == [200, 429]
    assert _ask(client, keys["inflight"]).status_code == 200  # the slot came back
