"""merge writes base + adapter as one model whose logits match the unmerged pair (fp32, 1e-4)."""

from __future__ import annotations

import json

import pytest
import torch

from loramux.trainer.merge import merge


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("fixture,ref", [("lora_tenant", "demo/pirate"), ("qlora_tenant", "demo/robot@prod")])
def test_merged_model_matches_base_plus_adapter(fixture, ref, request, tiny_base, store, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from loramux.adapters.registry import Resolver
    from loramux.adapters.store import open_store

    from typer.testing import CliRunner

    from loramux.trainer.cli import app

    request.getfixturevalue(fixture)
    out = tmp_path / "merged"
    r = CliRunner().invoke(app, ["merge", "--adapter", ref, "--out", str(out), "--base", str(tiny_base),
                                 "--registry", str(store)])
    assert r.exit_code == 0, r.output
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config  # a QLoRA adapter merges onto the 16-bit base
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()

    tok = AutoTokenizer.from_pretrained(out)
    ids = tok.apply_chat_template([{"role": "user", "content": "Where is the blue sky?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32)
    unmerged = PeftModel.from_pretrained(base, Resolver(open_store(str(store))).resolve(ref).path).eval()
    a, b = _logits(merged, ids), _logits(unmerged, ids)
    assert (a - b).abs().max().item() <= 1e-4
    plain = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32).eval()
    assert (a - _logits(plain, ids)).abs().max().item() > 1e-2  # the adapter is really in there


def test_merge_refuses_a_base_with_another_fingerprint(lora_tenant, tiny_base, store, tmp_path):
    import shutil

    from loramux.adapters.errors import InvalidRequest

    other = shutil.copytree(tiny_base, tmp_path / "other-base")  # same shape, another seed: another base
    identity = json.loads((other / "loramux_base.json").read_text())
    (other / "loramux_base.json").write_text(json.dumps({**identity, "seed": identity["seed"] + 1}))
    with pytest.raises(InvalidRequest, match="fingerprint"):
        merge("demo/pirate", tmp_path / "merged", base=other, store=str(store))


def test_an_adapter_the_server_refuses_is_offered_merge_and_merge_serves_it(tiny_base, tmp_path):
    """DoRA and modules_to_save may be trained; publishing refuses them and points at `trainer merge`,
    whose output is a plain model with the adapter's effect (logits match PEFT's, fp32, 1e-4)."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from loramux.adapters.base_spec import BaseSpec
    from loramux.adapters.validation import validate_adapter

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], use_dora=True,
                                      modules_to_save=["lm_head"], task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(tmp_path / "dora")
    report = validate_adapter(tmp_path / "dora", base=BaseSpec.from_dir(tiny_base))
    assert {p.check for p in report.errors} == {"dora", "modules_to_save"}
    assert all("trainer merge" in p.fix for p in report.errors)

    out = merge(str(tmp_path / "dora"), tmp_path / "merged", base=tiny_base)
    ids = AutoTokenizer.from_pretrained(out)("The cat sees", return_tensors="pt")["input_ids"]
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    unmerged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32),
                                         tmp_path / "dora").eval()
    assert (_logits(merged, ids) - _logits(unmerged, ids)).abs().max().item() <= 1e-4
