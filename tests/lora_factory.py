"""Adapters with random, non-zero LoRA weights, made with PEFT for a given base."""

from __future__ import annotations

from pathlib import Path

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def random_lora(base: Path, out: Path, *, seed: int, r: int = 8, alpha: int = 16,
                targets=DEFAULT_TARGETS, std: float = 0.05) -> Path:
    """PEFT initialises lora_B to zero (a no-op adapter); fill A and B with noise instead."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets),
                                                  lora_dropout=0.0, bias="none", task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                p.normal_(0.0, std if "lora_B" in name else 1.0 / r)
    peft_model.save_pretrained(out)
    return Path(out)
