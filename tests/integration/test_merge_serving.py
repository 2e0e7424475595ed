"""A `cat`-merged adapter loads in the running vLLM server and answers like PEFT does."""

from __future__ import annotations

import httpx
import pytest
from openai import OpenAI

from loramux.adapters.merge import merge_adapters
from tests.integration.test_mixed_batches import MAX_TOKENS, peft_outputs

pytestmark = pytest.mark.integration

PROMPTS = ["the cat sees", "Q: How are you? A:", "my friend builds the red box"]


def test_a_cat_merged_adapter_loads_in_vllm_and_matches_peft(server, tmp_path):
    parts = [(server.adapters["acme/support"], 0.7), (server.adapters["acme/legal"], 0.3)]
    merged = merge_adapters(parts, tmp_path / "merged", "cat")
    loaded = httpx.post(f"{server.url}/v1/load_lora_adapter", timeout=300,
                        json={"lora_name": "acme/merged", "lora_path": str(merged)},
                        headers={"Authorization": f"Bearer {server.admin_key}"})
    assert loaded.status_code == 200, loaded.text
    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=300)
    try:
        served = {p: client.completions.create(model="acme/merged", prompt=p, max_tokens=MAX_TOKENS,
                                               temperature=0.0).choices[0].text for p in PROMPTS}
    finally:  # the server is shared by the session: leave it serving what it started with
        httpx.post(f"{server.url}/v1/unload_lora_adapter", json={"lora_name": "acme/merged"},
                   headers={"Authorization": f"Bearer {server.admin_key}"})
    assert all(served.values())
    reference = peft_outputs(server.base_dir, {"acme/merged": merged}, ["acme/merged"], PROMPTS)
    assert served == {p: reference[("acme/merged", p)] for p in PROMPTS}
    base = peft_outputs(server.base_dir, {}, [server.base_name], PROMPTS)
    assert any(served[p] != base[(server.base_name, p)] for p in PROMPTS)  # the merge does something


def test_a_per_request_merge_equals_peft_with_both_adapters_active(server):
    """`model: "A+B"` (cat, weights 1): the deltas summed, exactly as PEFT runs two active adapters."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=300)
    served = {p: client.completions.create(model="acme/support+acme/legal", prompt=p, max_tokens=MAX_TOKENS,
                                           temperature=0.0).choices[0].text for p in PROMPTS}
    tok = AutoTokenizer.from_pretrained(server.base_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(server.base_dir, dtype=torch.float32),
                                      server.adapters["acme/support"], adapter_name="support")
    model.load_adapter(server.adapters["acme/legal"], adapter_name="legal")
    model.base_model.set_adapter(["support", "legal"])
    model.eval()
    for p in PROMPTS:
        ids = torch.tensor([tok.encode(p, add_special_tokens=False)])
        with torch.no_grad():
            gen = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=MAX_TOKENS, do_sample=False)
        assert served[p] == tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True), p
    alone = {p: client.completions.create(model="acme/support", prompt=p, max_tokens=MAX_TOKENS,
                                          temperature=0.0).choices[0].text for p in PROMPTS}
    assert served != alone  # the second adapter really takes part
