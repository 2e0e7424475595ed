"""One recipe flag each for what users turn on in TRL/PEFT, each checked where it shows: the saved
adapter's config or weights, or the run's optimizer/loss. PiSSA/OLoRA adapters are saved as plain
LoRA (rank 2r) against the original base and match the trained model's logits."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from loramux.trainer.config import load_config, recipe_path
from loramux.trainer.train import train

PROBE = "Q: What time is it? A: the old man follows the river"


def _run(tiny_base, demo_data, out, *extra):
    train_file, held = demo_data["pirate"]
    cfg = load_config(recipe_path("lora"), [
        f"base={tiny_base}", f"data.train={train_file}", f"data.eval={held}", f"output_dir={out}",
        "training.threads=1", "data.max_eval_examples=4", "eval.sample_size=4", "training.logging_steps=1",
        "training.max_steps=3", *extra])
    return train(cfg, with_base=False)


@pytest.fixture(scope="module")
def plain(tiny_base, demo_data, tmp_path_factory):
    """The same short run with no flag: what each flag is compared against."""
    return _run(tiny_base, demo_data, tmp_path_factory.mktemp("plain"))


def _b_size(adapter) -> float:
    w = load_file(str(adapter / "adapter_model.safetensors"))
    return torch.stack([w[k].abs().mean() for k in w if "lora_B" in k]).mean().item()


def test_rslora_and_target_modules_reach_the_adapter_config(tiny_base, demo_data, tmp_path):
    result = _run(tiny_base, demo_data, tmp_path, "lora.use_rslora=true", "lora.target_modules=[q_proj, v_proj]",
                  "lora.r=8")
    config = json.loads((result.artifact / "adapter_config.json").read_text())
    assert config["use_rslora"] is True
    assert sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    assert (config["r"], config["lora_alpha"]) == (8, 16)  # alpha defaults to 2r
    keys = load_file(str(result.artifact / "adapter_model.safetensors")).keys()
    assert keys and all(".q_proj." in k or ".v_proj." in k for k in keys)


def test_loraplus_trains_b_at_ratio_times_the_rate(tiny_base, demo_data, tmp_path, plain):
    result = _run(tiny_base, demo_data, tmp_path, "training.loraplus_lr_ratio=16")
    lr = plain.metrics["learning_rate"]
    assert plain.metrics["optimizer_lrs"] == [pytest.approx(lr)]
    # peft's groups: A at the rate, B at 16x (plus embeddings, none here, at its own small rate)
    assert sorted(round(x / lr, 6) for x in result.metrics["optimizer_lrs"] if x >= lr) == [1, 16]
    # Adam moves each weight by ~the rate per step: B (zero at init) ends ~16x larger
    assert _b_size(result.artifact) > 5 * _b_size(plain.artifact)


def test_neftune_noise_changes_what_the_model_trains_on(tiny_base, demo_data, tmp_path, plain):
    result = _run(tiny_base, demo_data, tmp_path, "training.neftune_noise_alpha=50")
    noisy, clean = result.metrics["loss_curve"]["train_loss"][0], plain.metrics["loss_curve"]["train_loss"][0]
    assert abs(noisy - clean) > 0.05, (noisy, clean)  # same seed, same data: only the noise differs
    assert json.loads((result.output_dir / "config.json").read_text())["training"]["neftune_noise_alpha"] == 50


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_pissa_and_olora_are_saved_as_plain_lora_matching_the_trained_model(tiny_base, demo_data, tmp_path, init):
    from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = _run(tiny_base, demo_data, tmp_path, f"lora.init={init}")
    config = json.loads((result.artifact / "adapter_config.json").read_text())
    assert config["init_lora_weights"] is True  # served as a plain LoRA: nothing to recompute at load
    assert (config["r"], config["lora_alpha"]) == (32, 64)  # 2r, alpha scaled with it
    assert all("lora_A" in k or "lora_B" in k for k in load_file(str(result.artifact / "adapter_model.safetensors")))

    ids = AutoTokenizer.from_pretrained(tiny_base)(PROBE, return_tensors="pt").input_ids

    def base():
        return AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32)

    with torch.no_grad():
        served = PeftModel.from_pretrained(base(), result.artifact).eval()(ids).logits
        # the trained model as it was: the residual base PiSSA/OLoRA made, plus the kept checkpoint
        trained = get_peft_model(base(), LoraConfig(r=16, lora_alpha=32, target_modules="all-linear",
                                                    init_lora_weights=init, task_type="CAUSAL_LM"))
        ckpt = result.output_dir / "checkpoints" / result.metrics["best_checkpoint"]
        set_peft_model_state_dict(trained, load_file(str(ckpt / "adapter_model.safetensors")))
        trained = trained.eval()(ids).logits
        plain_base = base().eval()(ids).logits
    assert (served - plain_base).abs().max() > 0.1  # training moved the model
    assert torch.allclose(served, trained, atol=2e-3, rtol=1e-3), (served - trained).abs().max()
