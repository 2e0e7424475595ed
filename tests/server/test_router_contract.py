"""What LoRA-aware Kubernetes routers read from a vLLM pod, read from loramux over the fake engine:
`/v1/models` with `parent`, and `vllm:lora_requests_info` naming adapters as clients do (llm-d's
endpoint picker matches `running_lora_adapters` / `waiting_lora_adapters` against a request's
`model`). The engine's own `vllm:num_requests_*` and `vllm:kv_cache_usage_perc` come from vLLM
unchanged (tests/integration/test_openai_api.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.parser import text_string_to_metric_families

from loramux.server import metrics
from loramux.server.app import create_app
from loramux.server.engine.fake import FakeEngine
from loramux.server.settings import ServerSettings


class GatedEngine(FakeEngine):
    """Holds every request until the test opens the gate, so requests stay in flight."""

    def __init__(self, gate: threading.Event, **kw) -> None:
        super().__init__(**kw)
        self.gate = gate

    async def generate(self, request):
        await asyncio.to_thread(self.gate.wait)
        async for chunk in super().generate(request):
            yield chunk


def _lora_info(client: TestClient) -> list[dict[str, str]]:
    families = [f for f in text_string_to_metric_families(client.get("/metrics").text)
                if f.name == "vllm:lora_requests_info"]
    assert len(families) == 1, "one vllm:lora_requests_info family, or Prometheus refuses the page"
    return [s.labels for s in families[0].samples]


def _until(client: TestClient, ready, timeout_s: float = 10.0) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    while not ready(info := _lora_info(client)[0]) and time.monotonic() < deadline:
        time.sleep(0.02)
    return info


@pytest.fixture
def gated(tiny_base: Path, adapter_dir: Path):
    gate = threading.Event()
    settings = ServerSettings(base=tiny_base, served_name="tiny", max_loras=1,
                              adapters={"acme/support": adapter_dir, "globex/sales": adapter_dir})

    async def factory(_):
        return GatedEngine(gate, base_name="tiny", max_model_len=128)

    with TestClient(create_app(settings, factory)) as client:
        yield client, gate
    gate.set()


def test_lora_requests_info_names_running_and_waiting_adapters_as_served(gated):
    client, gate = gated
    assert _lora_info(client) == [{"max_lora": "1", "running_lora_adapters": "", "waiting_lora_adapters": ""}]

    def ask(model: str) -> int:
        return client.post("/v1/completions", json={"model": model, "prompt": "hi", "max_tokens": 2}).status_code

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(ask, "acme/support")  # takes the one slot and stays in the engine
        _until(client, lambda info: info["running_lora_adapters"] == "acme/support")
        second = pool.submit(ask, "globex/sales")  # waits for that slot
        info = _until(client, lambda info: info["waiting_lora_adapters"] != "")
        assert info == {"max_lora": "1", "running_lora_adapters": "acme/support",
                        "waiting_lora_adapters": "globex/sales"}
        gate.set()
        assert first.result() == 200 and second.result() == 200
    assert _lora_info(client)[0]["running_lora_adapters"] == ""


def test_vllm_engine_names_never_reach_the_router(client: TestClient, monkeypatch):
    """vLLM's own gauge (in the process's default registry) names adapters `acme/support#3`; the page
    carries loramux's only. A fresh registry stands in for the default one, which an engine started
    earlier in this process may hold."""
    engine_registry = CollectorRegistry()
    Gauge("vllm:lora_requests_info", "Running stats on lora requests.",
          ["max_lora", "waiting_lora_adapters", "running_lora_adapters"],
          registry=engine_registry).labels("4", "", "acme/support#3").set_to_current_time()
    Gauge("vllm:num_requests_waiting", "Requests waiting.", registry=engine_registry).set(2)
    monkeypatch.setattr(metrics, "DEFAULT_REGISTRY", engine_registry)
    (info,) = _lora_info(client)
    assert "#" not in info["running_lora_adapters"] and info["max_lora"] == "4"
    assert "vllm:num_requests_waiting 2.0" in client.get("/metrics").text  # the rest as vLLM states it


def test_models_name_the_base_as_parent_of_every_adapter(client: TestClient):
    cards = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert cards["tiny"].get("parent") is None
    assert {cards[a]["parent"] for a in ("acme/support", "globex/sales")} == {"tiny"}
