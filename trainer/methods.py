"""How each method loads the base and what it trains: a name -> Method registry.

QLoRA on CPU: bitsandbytes' AVX512-BF16 inference path repacks 4-bit weights in place on a
no-grad forward, which breaks training and asserts on layer widths that are not multiples
of 32; `load_qlora` turns it off for the model it returns (see bnb_cpu.py). Held-out
evaluation (evaluate.py) still uses a separate 16-bit model: what the server runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from loramux.trainer.config import TrainConfig


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def bf16_available() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def compute_dtype(name: str):
    import torch

    if name == "auto":
        return torch.bfloat16 if bf16_available() else torch.float32
    return getattr(torch, name)


@dataclass
class Loaded:
    """A model ready for SFTTrainer, the PEFT config to wrap it with (None for full) and extra args."""

    model: object
    peft_config: object | None
    trainer_args: dict


# lora.init -> peft's `init_lora_weights`
LORA_INITS = {"default": True, "gaussian": "gaussian", "pissa": "pissa", "olora": "olora"}
# Inits that change the base weights in the training model: the saved adapter is converted back to
# a plain LoRA (rank 2r) against the original base (peft `path_initial_model_for_weight_conversion`).
CONVERTED_INITS = ("pissa", "olora")


def _peft_config(cfg: TrainConfig):
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=cfg.lora.targets(), bias="none", task_type="CAUSAL_LM",
                      use_rslora=cfg.lora.use_rslora, init_lora_weights=LORA_INITS[cfg.lora.init])


def _base_dtype():
    import torch

    return torch.bfloat16 if bf16_available() else torch.float32


def load_lora(cfg: TrainConfig) -> Loaded:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(cfg.base, dtype=_base_dtype())
    return Loaded(model, _peft_config(cfg), {})


def quantization_config(cfg: TrainConfig):
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=cfg.quant.quant_type,
                              bnb_4bit_use_double_quant=cfg.quant.double_quant,
                              bnb_4bit_compute_dtype=compute_dtype(cfg.quant.compute_dtype))


def load_qlora(cfg: TrainConfig) -> Loaded:
    """4-bit base (bitsandbytes), LoRA on top; the paged optimizer only exists on CUDA."""
    from transformers import AutoModelForCausalLM

    from loramux.trainer.bnb_cpu import use_plain_4bit_path

    model = AutoModelForCausalLM.from_pretrained(
        cfg.base, quantization_config=quantization_config(cfg), dtype=compute_dtype(cfg.quant.compute_dtype))
    use_plain_4bit_path(model)
    args = {"optim": "paged_adamw_32bit"} if cfg.quant.paged_optimizer and has_cuda() else {}
    return Loaded(model, _peft_config(cfg), args)


def load_full(cfg: TrainConfig) -> Loaded:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(cfg.base, dtype=_base_dtype())
    return Loaded(model, None, {})


METHODS: dict[str, Callable[[TrainConfig], Loaded]] = {
    "lora": load_lora,
    "qlora": load_qlora,
    "full": load_full,
}


def quantization_record(cfg: TrainConfig) -> dict:
    """What the run records about quantization (metrics.json, compare table)."""
    if cfg.method != "qlora":
        return {}
    return {"bits": 4, "quant_type": cfg.quant.quant_type, "double_quant": cfg.quant.double_quant,
            "compute_dtype": str(compute_dtype(cfg.quant.compute_dtype)).removeprefix("torch.")}
