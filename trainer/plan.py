"""`trainer plan`: memory and trainable parameters per method, from the base's config.json alone.

Estimates (bytes), the rules of thumb the fine-tuning guides use, made explicit:
- full:  bf16 weights 2 + bf16 gradients 2 + AdamW m and v in fp32 8  = 12 per parameter;
- LoRA:  frozen bf16 weights 2 per parameter; each trainable (fp32) parameter 4 + 4 + 8 = 16;
- QLoRA: frozen linear weights 0.5 (NF4) + quantization constants (~0.016 with double
  quantization, 0.0625 without); embeddings and lm_head stay bf16 (2); trainables as LoRA;
- activations: Korthikanti et al. 34·s·b·h bytes per layer with fused (SDPA/flash) attention,
  scaled by the MLP width, or ~2·s·b·h per layer plus one layer's worth with gradient
  checkpointing; plus fp32 logits and their gradient, 8·s·b·V.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from loramux.adapters.errors import InvalidRequest
from loramux.adapters.shapes import TARGET_SETS, BaseShape
from loramux.trainer.methods import METHODS

GiB = 2**30
_UNITS = {"": 1, "b": 1, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
          "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_bytes(text: str) -> int:
    """'24GiB', '80GB', '16g' -> bytes."""
    t = text.strip().lower().replace(" ", "")
    num = t.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = t[len(num):]
    if unit not in _UNITS or not num:
        raise InvalidRequest(f"cannot read memory size {text!r}: use e.g. 24GiB, 80GB, 16g", param="gpu_mem")
    return int(float(num) * _UNITS[unit])


def load_shape(base: str | Path) -> BaseShape:
    """From a model folder or a config.json path; weights are never read."""
    path = Path(base)
    path = path / "config.json" if path.is_dir() else path
    try:
        shape = BaseShape.from_config(json.loads(path.read_text()))
    except (OSError, ValueError) as e:
        raise InvalidRequest(f"cannot read base config {path}: {e}", param="base") from None
    if shape.vocab is None:
        raise InvalidRequest(f"{path} lacks vocab_size (a Llama-family config.json is needed)", param="base")
    return shape


@dataclass
class Estimate:
    method: str
    trainable: int
    weights: float
    gradients: float
    optimizer: float
    activations: float
    checkpointing: bool
    notes: str = ""

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations


def activations(s: BaseShape, tokens: int, checkpointing: bool) -> float:
    per_layer = 34 * tokens * s.hidden * (1 + (s.intermediate / (4 * s.hidden) - 1) * 0.5)
    logits = 8 * tokens * s.vocab
    if checkpointing:
        return 2 * tokens * s.hidden * s.layers + per_layer + logits
    return per_layer * s.layers + logits


def estimate(s: BaseShape, method: str, *, r: int, targets: list[str], tokens: int, checkpointing: bool,
             double_quant: bool = True) -> Estimate:
    m = METHODS[method]
    t = m.trainable(s, r, targets)
    memory = m.describe + (" + double quant" if m.quantized and double_quant else "")
    note = ", ".join(x for x in (memory, m.adapter and f"r={r} on {','.join(targets)}") if x)
    return Estimate(method, t, m.weights_bytes(s, t, double_quant), m.grad_bytes * t, 8 * t,
                    activations(s, tokens, checkpointing), checkpointing, note)


@dataclass
class Plan:
    shape: BaseShape
    gpu_mem: int
    estimates: list[Estimate] = field(default_factory=list)
    recommendation: str = ""
    reason: str = ""
    defaults: dict = field(default_factory=dict)
    """What `trainer train`/`add-tenant` would use on this base and data (defaults.py): rate, rank, length."""


def make_plan(base: str | Path, *, gpu_mem: int, examples: int, seq_len: int = 2048, batch_size: int = 1,
              r: int | None = None, targets: str | list[str] | None = None, headroom: float = 0.9) -> Plan:
    """Per-method estimates (without, and if needed with, gradient checkpointing) and a recommendation."""
    from loramux.trainer.config import LoraSettings
    from loramux.trainer.defaults import auto_epochs, rule_for

    s = load_shape(base)
    rule = rule_for(s.params)
    r = r or rule.r
    targets = targets or LoraSettings().target_modules
    names = TARGET_SETS[targets] if isinstance(targets, str) and targets in TARGET_SETS else (
        targets.split(",") if isinstance(targets, str) else list(targets))
    tokens = seq_len * batch_size
    budget = gpu_mem * headroom
    epochs = auto_epochs(examples, rule.min_examples)
    plan = Plan(s, gpu_mem, defaults={"lora_learning_rate": rule.lora_lr, "full_learning_rate": rule.full_lr,
                                      "r": r, "alpha": 2 * r, "targets": targets, "epochs": epochs,
                                      "examples_seen": round(epochs * examples)})
    for method in METHODS:
        e = estimate(s, method, r=r, targets=names, tokens=tokens, checkpointing=False)
        if e.total > budget:
            e = estimate(s, method, r=r, targets=names, tokens=tokens, checkpointing=True)
        plan.estimates.append(e)
    fits = {e.method: e for e in plan.estimates if e.total <= budget}
    lora_desc = f"r={r}, targets={targets if isinstance(targets, str) else ','.join(names)}"
    if "full" in fits and s.params < 1e9 and examples >= 50_000:
        plan.recommendation, plan.reason = "full", (
            f"full fine-tuning fits ({fits['full'].total / GiB:.1f} of {gpu_mem / GiB:.0f} GiB), the base is small "
            f"and {examples:,} examples are enough to move every weight without overfitting")
    elif "lora" in fits:
        plan.recommendation, plan.reason = f"lora ({lora_desc})", (
            f"LoRA fits ({fits['lora'].total / GiB:.1f} of {gpu_mem / GiB:.0f} GiB) at 16-bit quality; "
            f"rank {r} on {targets if isinstance(targets, str) else 'these modules'}"
            + ("" if "full" in fits else "; full fine-tuning does not fit"))
    elif "qlora" in fits:
        plan.recommendation, plan.reason = f"qlora ({lora_desc})", (
            f"only QLoRA fits ({fits['qlora'].total / GiB:.1f} of {gpu_mem / GiB:.0f} GiB): the 4-bit base "
            f"needs ~{s.linear_params * 0.52 / GiB:.1f} GiB instead of {2 * s.params / GiB:.1f} GiB")
    else:
        smallest = min(plan.estimates, key=lambda e: e.total)
        plan.recommendation, plan.reason = "none fits", (
            f"even {smallest.method} needs {smallest.total / GiB:.1f} GiB with gradient checkpointing; "
            "use a shorter --seq-len, a smaller base or a larger GPU")
    return plan
