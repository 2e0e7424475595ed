"""Training methods as records: how each loads the base, what it trains and produces, what it
costs in memory. Code elsewhere asks the record (`METHODS[cfg.method]`), never the name.

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
    from loramux.adapters.shapes import BaseShape
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


def _full_weights(s: BaseShape, trainable: int, double_quant: bool) -> float:
    """Every weight in 16 bit, trained in place."""
    return 2 * s.params


def _lora_weights(s: BaseShape, trainable: int, double_quant: bool) -> float:
    """Frozen 16-bit weights plus fp32 LoRA factors."""
    return 2 * s.params + 4 * trainable


def _nf4_weights(s: BaseShape, trainable: int, double_quant: bool) -> float:
    """NF4 linears (+ quantization constants), embeddings and norms in 16 bit, fp32 LoRA factors."""
    frozen_other = s.params - s.linear_params
    return (0.5 + (0.016 if double_quant else 0.0625)) * s.linear_params + 2 * frozen_other + 4 * trainable


@dataclass(frozen=True)
class TrainingMethod:
    name: str
    load: Callable[[TrainConfig], Loaded]
    adapter: bool  # trains LoRA factors (lora.* applies); False: every weight, a full model
    quantized: bool  # a 4-bit base: no bf16 autocast, the 4-bit settings are recorded
    weights_bytes: Callable[[BaseShape, int, bool], float]  # (shape, trainable params, double quant)
    grad_bytes: int  # per trainable parameter (AdamW's m and v add 8 more)
    describe: str  # what `trainer plan` says about its memory

    @property
    def artifact(self) -> str:
        """The run folder's output: a PEFT adapter, or a whole model."""
        return "adapter" if self.adapter else "model"

    @property
    def publishable(self) -> bool:
        """The registry serves adapters; a full model is deployed as a base."""
        return self.adapter

    def trainable(self, s: BaseShape, r: int, targets: list[str]) -> int:
        return s.lora_params(r, targets) if self.adapter else s.params


METHODS: dict[str, TrainingMethod] = {m.name: m for m in (  # the order `trainer plan` lists them in
    TrainingMethod("full", load_full, adapter=False, quantized=False, weights_bytes=_full_weights, grad_bytes=2,
                   describe="bf16 weights/grads, fp32 AdamW"),
    TrainingMethod("lora", load_lora, adapter=True, quantized=False, weights_bytes=_lora_weights, grad_bytes=4,
                   describe=""),
    TrainingMethod("qlora", load_qlora, adapter=True, quantized=True, weights_bytes=_nf4_weights, grad_bytes=4,
                   describe="NF4"),
)}


def quantization_record(cfg: TrainConfig) -> dict:
    """What the run records about quantization (metrics.json, compare table); empty unless 4-bit."""
    if not METHODS[cfg.method].quantized:
        return {}
    return {"bits": 4, "quant_type": cfg.quant.quant_type, "double_quant": cfg.quant.double_quant,
            "compute_dtype": str(compute_dtype(cfg.quant.compute_dtype)).removeprefix("torch.")}
