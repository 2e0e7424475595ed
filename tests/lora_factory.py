"""Adapters with random, non-zero LoRA weights, made with PEFT for a given base."""

from __future__ import annotations

import functools
from pathlib import Path

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@functools.lru_cache(maxsize=4)
def _peft_model(base: Path, r: int, alpha: int, targets: tuple[str, ...]):
    """One PEFT model per shape, refilled for every adapter: loading the base is most of the cost."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    return get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets),
                                            lora_dropout=0.0, bias="none", task_type="CAUSAL_LM"))


def random_lora(base: Path, out: Path, *, seed: int, r: int = 8, alpha: int = 16,
                targets=DEFAULT_TARGETS, std: float = 0.05) -> Path:
    """PEFT initialises lora_B to zero (a no-op adapter); fill A and B with noise instead."""
    import torch

    peft_model = _peft_model(Path(base).resolve(), r, alpha, tuple(targets))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                p.normal_(0.0, std if "lora_B" in name else 1.0 / r)
    peft_model.save_pretrained(out)
    return Path(out)


# A prompt on which the tiny base's first greedy token wins by a wide logit margin.
PROBE = "The cat sees"


def _first_token(model, ids) -> tuple[int, float]:
    """Greedy first token and its logit margin over the runner-up."""
    import torch

    with torch.no_grad():
        top = model(ids).logits[0, -1].topk(2)
    return int(top.indices[0]), float(top.values[0] - top.values[1])


def distinct_loras(base: Path, root: Path, names, *, min_margin: float = 0.1, std: float = 0.2,
                   max_seed: int = 200) -> dict[str, Path]:
    """Random adapters whose first greedy token on PROBE differs from the base's and from each
    other's, each by at least `min_margin` logits, checked with PEFT on this machine's build of
    the base. Greedy texts then differ on any hardware: a different CPU moves logits by far
    less than the margin, so "each model answers differently" never rests on a near-tie."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ids = AutoTokenizer.from_pretrained(base)(PROBE, return_tensors="pt", add_special_tokens=False).input_ids
    plain = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    token, margin = _first_token(plain, ids)
    assert margin >= min_margin, f"the base's answer to {PROBE!r} is a near-tie ({margin:.3f}); pick another PROBE"
    taken, out, seed = {token}, {}, 0
    for name in names:
        while True:
            seed += 1
            assert seed <= max_seed, f"no distinct adapter for {name} in {max_seed} seeds"
            path = random_lora(base, root / name.replace("/", "--"), seed=seed, std=std)
            with torch.no_grad():
                model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                                                  path).eval()
            token, margin = _first_token(model, ids)
            if token not in taken and margin >= min_margin:
                taken.add(token)
                out[name] = path
                break
    return out
