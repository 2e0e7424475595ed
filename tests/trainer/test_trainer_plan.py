"""plan: parameter counts and memory from config.json alone, checked on a Llama-2-7B config."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from loramux.trainer.cli import app
from loramux.trainer.plan import GiB, load_shape, make_plan, parse_bytes

LLAMA2_7B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000,
             "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
             "num_attention_heads": 32, "num_key_value_heads": 32, "max_position_embeddings": 4096,
             "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "torch_dtype": "float16"}


@pytest.fixture
def llama7b(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(LLAMA2_7B))
    return tmp_path  # no weights: plan must not need them


def test_llama2_7b_parameter_counts(llama7b):
    s = load_shape(llama7b)
    assert s.params == 6_738_415_616  # the published Llama-2-7B count
    assert s.lora_params(8, ["q_proj", "v_proj"]) == 4_194_304


def test_tiny_base_count_matches_the_real_model(tiny_base):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32)
    assert load_shape(tiny_base).params == sum(p.numel() for p in model.parameters())


def test_memory_breakdown_orders_methods_and_recommends_lora_on_24gib(llama7b):
    p = make_plan(llama7b, gpu_mem=parse_bytes("24GiB"), examples=5000, seq_len=2048, r=8, targets="q_proj,v_proj")
    by = {e.method: e for e in p.estimates}
    assert by["lora"].trainable == 4_194_304
    assert by["full"].weights / GiB == pytest.approx(12.55, abs=0.1)  # 2 bytes/param
    assert by["full"].optimizer == 8 * by["full"].trainable
    assert by["qlora"].weights < by["lora"].weights / 3
    assert by["qlora"].total < by["lora"].total < by["full"].total
    assert p.recommendation.startswith("lora") and "full fine-tuning does not fit" in p.reason


def test_small_gpu_gets_qlora_and_tiny_gpu_gets_nothing(llama7b):
    assert make_plan(llama7b, gpu_mem=parse_bytes("8GiB"), examples=500).recommendation.startswith("qlora")
    assert make_plan(llama7b, gpu_mem=parse_bytes("2GiB"), examples=500).recommendation == "none fits"


def test_rank_rate_and_length_are_the_recipes_defaults_for_the_base(llama7b, tmp_path):
    """One source: the plan shows what a run on this base would resolve to (defaults.resolve)."""
    from loramux.trainer.config import build_config
    from loramux.trainer.defaults import resolve

    p = make_plan(llama7b, gpu_mem=80 * GiB, examples=300)
    cfg = resolve(build_config({"base": str(llama7b), "output_dir": str(tmp_path)}), n_train=300)
    assert f"r={cfg.lora.r}, targets={cfg.lora.target_modules}" in p.recommendation
    assert p.defaults["lora_learning_rate"] == cfg.training.learning_rate == 2e-4
    assert p.defaults["epochs"] == cfg.training.epochs and p.defaults["examples_seen"] == round(300 * cfg.training.epochs)
    assert "r=4, targets=attention" in make_plan(llama7b, gpu_mem=80 * GiB, examples=300, r=4,
                                                 targets="attention").recommendation


def test_plan_cli_prints_every_method(llama7b):
    r = CliRunner().invoke(app, ["plan", "--base", str(llama7b / "config.json"), "--gpu-mem", "24GiB",
                                 "--examples", "2000", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["params"] == 6_738_415_616
    assert [m["method"] for m in data["methods"]] == ["full", "lora", "qlora"]
    bad = CliRunner().invoke(app, ["plan", "--base", str(llama7b), "--gpu-mem", "lots", "--examples", "1"])
    assert bad.exit_code == 2 and "24GiB" in bad.output
