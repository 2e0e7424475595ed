"""/metrics stays bounded however many adapters are called: the K busiest keep their own
`adapter` label, the rest share `other`, and an adapter that stops being busy gives its series
up (its traffic goes on under `other`). Totals stay exact across the relabelling."""

from __future__ import annotations

import re
import time
from pathlib import Path

from fastapi.testclient import TestClient

from loramux.adapters.base_spec import BaseSpec
from loramux.adapters.registry import publish
from loramux.adapters.store import open_store
from loramux.server.app import create_app
from loramux.server.engine.fake import FakeEngine
from loramux.server.metrics import OTHER, AdapterLabels
from loramux.server.settings import ServerSettings
from tests.lora_factory import random_lora

N, K = 300, 20


def test_three_hundred_adapters_make_a_bounded_metrics_page(tiny_base: Path, tmp_path: Path):
    store, base = open_store(str(tmp_path / "store")), BaseSpec.from_dir(tiny_base)
    for i in range(N):
        publish(store, random_lora(tiny_base, tmp_path / f"a{i}", seed=i, r=2, targets=("q_proj",)),
                tenant=f"t{i % 3}", name=f"a{i}", base=base)
    settings = ServerSettings(base=tiny_base, registry=str(store.root), metrics_top_k=K)

    async def factory(_):
        return FakeEngine("tiny")

    with TestClient(create_app(settings, factory)) as client:
        for i in range(N):
            r = client.post("/v1/completions", json={"model": f"t{i % 3}/a{i}", "prompt": "hi", "max_tokens": 1})
            assert r.status_code == 200
        deadline = time.monotonic() + 15  # residency is read from the policy's snapshot (every 5 s here)
        while "loramux_adapter_resident{" not in (text := client.get("/metrics").text) and time.monotonic() < deadline:
            time.sleep(0.5)
    per_request = "\n".join(line for line in text.splitlines() if not line.startswith("loramux_adapter_resident"))
    adapters = set(re.findall(r'adapter="([^"]+)"', per_request))
    assert len(adapters) <= K + 1 and OTHER in adapters, sorted(adapters)
    resident = set(re.findall(r'^loramux_adapter_resident\{adapter="([^"]+)"', text, re.MULTILINE))
    assert 0 < len(resident) <= settings.capacity  # residency is bounded by what the engine holds
    served = sum(float(v) for v in re.findall(r'^loramux_requests_total\{[^}]*status="200"[^}]*\} (\S+)$', text,
                                              re.MULTILINE))
    assert served == N  # nothing lost to `other`
    series = [line for line in text.splitlines() if line.startswith("loramux_")]
    one = sum('adapter="t0/a0"' in line for line in series)  # a labelled adapter's share of the page
    assert one > 0 and len(series) < one * N / 5, (one, len(series))  # unbounded: about one * N lines


def test_the_busiest_take_the_labels_and_the_quiet_give_theirs_up():
    dropped: list[str] = []
    labels = AdapterLabels(2, dropped.append, period_s=3600)
    assert [labels(a) for a in ("a", "b", "c")] == ["a", "b", OTHER]  # first come, until the first period ends
    for _ in range(5):
        labels("c")
    labels("a")
    labels._rerank()  # the period ends: c and a were the busiest
    assert dropped == ["b"] and labels("b") == OTHER and labels("c") == "c" and labels("a") == "a"


def test_a_quiet_adapter_keeps_its_label_while_there_is_room():
    """Only a busier adapter takes a label away: one that failed to load and never served a request
    keeps its series, so its failed-load count and alert do not move under `other`."""
    dropped: list[str] = []
    labels = AdapterLabels(3, dropped.append, period_s=3600)
    assert labels("failing", busy=False) == "failing" and labels("a") == "a"
    labels._rerank()  # only `a` was busy; there is room for all
    assert dropped == [] and labels("failing", busy=False) == "failing"
    for name in ("b", "c", "d"):
        labels(name)
    labels._rerank()  # three busier adapters: now it gives its label up
    assert "failing" in dropped and labels("failing", busy=False) == OTHER
