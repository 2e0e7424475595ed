"""More adapters than slots: 40 registry adapters over the server's 3 LoRA slots, 200 concurrent
greedy requests with power-law popularity. No errors, and every answer equals the same request
served alone (a slot never runs another adapter's weights)."""

from __future__ import annotations

import asyncio
import random

import httpx
import pytest

from tests.lora_factory import random_lora

pytestmark = pytest.mark.integration

N_ADAPTERS, N_REQUESTS = 40, 200
PROMPTS = ["The cat sees", "my friend builds", "Q: where is the river? A:", "the robot opens"]


@pytest.fixture(scope="module")
def swarm(server, tiny_base, tmp_path_factory) -> list[str]:
    from loramux.adapters.base_spec import BaseSpec
    from loramux.adapters.registry import publish

    root, base = tmp_path_factory.mktemp("swarm"), BaseSpec.from_dir(tiny_base, "tiny")
    names = [f"swarm/a{i:02d}" for i in range(N_ADAPTERS)]
    for i, name in enumerate(names):
        path = random_lora(tiny_base, root / name.replace("/", "--"), seed=1000 + i, std=0.2, r=4)
        publish(server.registry, path, tenant="swarm", name=name.split("/")[1], base=base)
    return names


def test_forty_adapters_over_three_slots_answer_as_if_alone(server, swarm):
    rng = random.Random(7)
    weights = [1 / (i + 1) for i in range(len(swarm))]  # power law: a few hot, a long cold tail
    jobs = [(rng.choices(swarm, weights)[0], rng.choice(PROMPTS)) for _ in range(N_REQUESTS)]

    async def ask(client: httpx.AsyncClient, model: str, prompt: str) -> str:
        r = await client.post(f"{server.url}/v1/completions", json={
            "model": model, "prompt": prompt, "max_tokens": 8, "temperature": 0})
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["text"]

    async def run():
        limits = httpx.Limits(max_connections=N_REQUESTS)
        async with httpx.AsyncClient(timeout=600, limits=limits) as client:
            together = await asyncio.gather(*(ask(client, m, p) for m, p in jobs))
            alone = {job: await ask(client, *job) for job in sorted(set(jobs))}
        return together, alone

    together, alone = asyncio.run(run())
    wrong = [(job, got, alone[job]) for job, got in zip(jobs, together, strict=True) if got != alone[job]]
    assert not wrong, wrong[:5]
    assert len({m for m, _ in jobs}) >= 15  # the cold tail was really asked for
    assert len(set(alone.values())) >= 20  # adapters answer differently: a mix-up would show
