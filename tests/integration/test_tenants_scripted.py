"""The tenants' scripted run on the real engine: three tenants with their own keys over 20
registry adapters, 200 concurrent requests, one tenant flooding, one over its quota. Zero
cross-tenant answers (every 200 is the named adapter's own answer), the right 401/403/404/429
for every wrong call, and a bounded /metrics page."""

from __future__ import annotations

import asyncio
import functools
import random
import re
import statistics
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.bench.bench_fair_share import phase
from tests.integration.conftest import running_server
from tests.lora_factory import random_lora

pytestmark = pytest.mark.integration

ADAPTERS = {"flood": 8, "calm": 6, "capped": 6}  # tenant -> adapters (20)
RPM, TOP_K = 10, 5
PROMPTS = ["The cat sees", "Q: where is the river? A:"]


@pytest.fixture(scope="module")
def deployment(tiny_base: Path, tmp_path_factory) -> dict:
    from loramux.adapters.base_spec import BaseSpec
    from loramux.adapters.registry import publish
    from loramux.adapters.store import open_store
    from loramux.server.keys import create_key

    root, base = tmp_path_factory.mktemp("tenants"), BaseSpec.from_dir(tiny_base, "tiny")
    store = open_store(str(root / "store"))
    names = []
    for tenant, n in ADAPTERS.items():
        for i in range(n):
            path = random_lora(tiny_base, root / f"{tenant}-{i}", seed=7000 + len(names), std=0.2, r=4)
            publish(store, path, tenant=tenant, name=f"a{i}", base=base)
            names.append(f"{tenant}/a{i}")
    keys_file = root / "keys.json"
    keys = {"flood": create_key(keys_file, "flood")[0], "calm": create_key(keys_file, "calm")[0],
            "capped": create_key(keys_file, "capped", rpm=RPM)[0],
            "ops": create_key(keys_file, "ops", adapters=["*"], admin=True)[0]}
    log = root / "server.log"
    with running_server(["--base", str(tiny_base), "--served-name", "tiny", "--dtype", "float32",
                         "--registry", str(store.root), "--keys", str(keys_file), "--max-loras", "4",
                         "--metrics-top-k", str(TOP_K)], log) as url:
        yield {"url": url, "keys": keys, "names": names, "store": store}


def _jobs(names: list[str]) -> list[tuple[str, str, str]]:
    """(tenant, model, prompt): the flooding tenant sends 10x the calm one's load."""
    rng = random.Random(5)
    own = {t: [n for n in names if n.startswith(f"{t}/")] for t in ADAPTERS}
    counts = {"flood": 150, "calm": 15, "capped": 35}
    jobs = [(t, rng.choice(own[t]), rng.choice(PROMPTS)) for t, n in counts.items() for _ in range(n)]
    rng.shuffle(jobs)
    return jobs


def test_three_tenants_get_only_their_own_answers(deployment):
    url, keys, names = deployment["url"], deployment["keys"], deployment["names"]
    jobs = _jobs(names)

    async def ask(client: httpx.AsyncClient, key: str | None, model: str, prompt: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return await client.post(f"{url}/v1/completions", headers=headers, json={
            "model": model, "prompt": prompt, "max_tokens": 8, "temperature": 0})

    async def run():
        async with httpx.AsyncClient(timeout=900, limits=httpx.Limits(max_connections=len(jobs))) as client:
            answers = await asyncio.gather(*(ask(client, keys[t], m, p) for t, m, p in jobs))
            wrong = {  # every wrong call, while the others are running
                "no key": await ask(client, None, "calm/a0", PROMPTS[0]),
                "bad key": await ask(client, "lmx-000000000000-nope", "calm/a0", PROMPTS[0]),
                "other tenant": await ask(client, keys["flood"], "calm/a0", PROMPTS[0]),
                "nowhere": await ask(client, keys["flood"], "calm/zz", PROMPTS[0]),
                "admin with a tenant key": await client.get(f"{url}/v1/admin/adapters",
                                                            headers={"Authorization": f"Bearer {keys['calm']}"}),
            }
            calm_alone = await asyncio.gather(*(ask(client, keys["calm"], m, p) for t, m, p in jobs if t == "calm"))
            solo = {}
            for model, prompt in sorted({(m, p) for _, m, p in jobs}):
                r = await ask(client, keys["ops"], model, prompt)
                assert r.status_code == 200, r.text
                solo[model, prompt] = (r.headers["x-loramux-adapter-version"], r.json()["choices"][0]["text"])
            return answers, wrong, solo, (await client.get(f"{url}/metrics")).text, calm_alone

    answers, wrong, solo, metrics, calm_alone = asyncio.run(run())
    codes = Counter((t, r.status_code) for (t, _, _), r in zip(jobs, answers, strict=True))
    assert codes == {("flood", 200): 150, ("calm", 200): 15, ("capped", 200): RPM, ("capped", 429): 35 - RPM}
    for (tenant, model, prompt), r in zip(jobs, answers, strict=True):
        if r.status_code == 429:
            assert r.json()["error"]["code"] == "rate_limit_exceeded" and int(r.headers["retry-after"]) > 0
            assert r.headers["x-ratelimit-remaining-requests"] == "0"
            continue
        got = (r.headers["x-loramux-adapter-version"], r.json()["choices"][0]["text"])
        assert got == solo[model, prompt], (tenant, model, prompt)  # its own adapter's answer, nobody else's
    assert len({text for _, text in solo.values()}) >= 15  # the adapters answer differently: a mix-up would show

    assert [wrong[k].status_code for k in ("no key", "bad key")] == [401, 401]
    assert wrong["admin with a tenant key"].status_code == 403
    strip = {"x-request-id", "date"}
    assert wrong["other tenant"].status_code == wrong["nowhere"].status_code == 404
    assert (wrong["other tenant"].text.replace("calm/a0", "X"), {k: v for k, v in wrong["other tenant"].headers.items()
            if k not in strip}) == (wrong["nowhere"].text.replace("calm/zz", "X"),
                                    {k: v for k, v in wrong["nowhere"].headers.items() if k not in strip})

    per_request = [line for line in metrics.splitlines()
                   if line.startswith("loramux_") and not line.startswith("loramux_adapter_resident")]
    labels = set(re.findall(r'adapter="([^"]+)"', "\n".join(per_request))) - {"-"}  # "-": never resolved
    assert len(labels) <= TOP_K + 1 and "other" in labels  # 20 adapters, 5 labels and `other`
    assert keys["ops"] not in metrics and all(k not in metrics for k in keys.values())
    burst = [_ttft_ms(r) for (t, _, _), r in zip(jobs, answers, strict=True) if t == "calm"]
    alone = [_ttft_ms(r) for r in calm_alone]
    print(f"\n/metrics: {len(metrics.splitlines())} lines, {len(per_request)} loramux series lines, "
          f"adapter labels {sorted(labels)}; calm's TTFT (server-timing) p50/max: alone "
          f"{statistics.median(alone):.0f}/{max(alone):.0f} ms, in the 200-request burst "
          f"{statistics.median(burst):.0f}/{max(burst):.0f} ms")


def test_the_calm_tenant_keeps_flowing_while_the_flood_holds_the_adapter_slots(deployment):
    """The flood keeps 20 requests in flight over its 8 adapters, more than the 4 LoRA slots, so
    the slots are always wanted; calm asks for its own 6 adapters one request at a time. With
    loramux handing out slots in fair-share order, calm's requests wait for one slot to drain,
    far less than the flood's own; under vLLM's order (running adapters take every new request)
    calm waits until the flood lets a slot go, which a flood never does."""
    keys, names = deployment["keys"], deployment["names"]
    roles = {"flood": keys["flood"], "light": keys["calm"]}
    models = {"flood": [n for n in names if n.startswith("flood/")], "light": [n for n in names if n.startswith("calm/")]}
    run = functools.partial(phase, deployment["url"], roles, b_requests=12, b_clients=1, a_clients=20, max_tokens=16,
                            warmup_s=3.0, models=models)
    alone, flooded = asyncio.run(run(flood=False)), asyncio.run(run(flood=True))
    calm, flood = statistics.median(flooded.b_ttft), statistics.median(flooded.a_ttft)
    print(f"\ncalm's TTFT p50/max: alone {statistics.median(alone.b_ttft) * 1000:.0f}/{max(alone.b_ttft) * 1000:.0f} ms, "
          f"under the flood {calm * 1000:.0f}/{max(flooded.b_ttft) * 1000:.0f} ms; the flood's own p50 "
          f"{flood * 1000:.0f} ms ({flooded.a_done} of its requests in the window)")
    assert len(flooded.b_ttft) == 12 and flooded.a_done >= 12, flooded
    assert calm * 2 < flood, f"calm's median TTFT {calm:.2f}s vs the flood's {flood:.2f}s"


def _ttft_ms(r: httpx.Response) -> float:
    """The server's time to first token for one answer: resolve + load + queue + prefill."""
    return sum(float(part.split(";dur=")[1]) for part in r.headers["server-timing"].split(", "))
