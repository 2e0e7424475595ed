"""Defaults that depend on the base: learning rate, LoRA rank and run length by parameter count, declared once.

A recipe leaves `training.learning_rate`, `lora.r` or `lora.alpha` unset (null) to get these;
a value in the recipe or an override always wins. Why these numbers:
- LoRA/QLoRA r=16 on every linear layer, alpha = 2r: the QLoRA paper and the TRL, axolotl and
  LLaMA-Factory examples; all-linear beats attention-only at equal parameter count.
- 2e-4 on 7B-class bases (QLoRA paper, TRL/axolotl examples), 1e-4 from ~30B (QLoRA paper's
  33B/65B runs); smaller bases take larger steps: ~5e-4 around 1B, 1e-3 below (SmolLM2-135M: 1e-3
  reached 100% held-out exact match on a triage task in 81 steps, docs/bench/real_base_tasks.md),
  and the few-million-parameter test base ~3e-3 (measured on a 4-intent task, 5 epochs: 3e-3 reached 18% exact match while
  6e-3 and 1e-2 stayed at 0% with a flat loss; with the data-sized length 3e-3 reaches 100%).
- full fine-tuning: 1e-5..2e-5 on billion-parameter bases, 1e-3 on the tiny one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from loramux.trainer.methods import METHODS

if TYPE_CHECKING:
    from loramux.trainer.config import TrainConfig


@dataclass(frozen=True)
class SizeRule:
    """Defaults for bases with fewer than `below` parameters."""

    below: float
    lora_lr: float
    """learning rate for method lora and qlora"""
    full_lr: float
    """learning rate for method full"""
    r: int
    """LoRA rank (alpha defaults to 2r)"""
    min_examples: int
    """with `epochs: null`, small data is repeated until the run has seen this many examples"""


MIN_EXAMPLES_PRETRAINED = 600
"""A pretrained base learns a task's pattern in a few hundred examples (SmolLM2-135M: 100% held-out exact
match on docs/bench/real_base_tasks.md's tasks well within 3 epochs of 300 rows); the from-scratch
tiny base needs thousands."""

# Ordered by size; the first rule whose `below` exceeds the base's parameter count applies.
SIZE_RULES: tuple[SizeRule, ...] = (
    SizeRule(below=50e6, lora_lr=3e-3, full_lr=1e-3, r=16, min_examples=3000),      # test bases, trained from scratch
    SizeRule(below=1e9, lora_lr=1e-3, full_lr=2e-5, r=16, min_examples=MIN_EXAMPLES_PRETRAINED),  # 50M-1B
    SizeRule(below=3e9, lora_lr=5e-4, full_lr=2e-5, r=16, min_examples=MIN_EXAMPLES_PRETRAINED),  # 1B-3B
    SizeRule(below=20e9, lora_lr=2e-4, full_lr=1e-5, r=16, min_examples=MIN_EXAMPLES_PRETRAINED),  # 7B-13B class
    SizeRule(below=float("inf"), lora_lr=1e-4, full_lr=5e-6, r=16, min_examples=MIN_EXAMPLES_PRETRAINED),  # 30B+
)


DEFAULT_EPOCHS, MAX_EPOCHS = 3, 25
"""`epochs: null` means DEFAULT_EPOCHS, raised on small data to see `min_examples` examples, capped at
MAX_EPOCHS (the shape of OpenAI's fine-tuning `n_epochs: auto`). Measured on the tiny base: a
3-intent support task needs ~3,000 examples seen (3 epochs of 800 rows, 12 of 240) to reach 95%+."""


def auto_epochs(n_train: int, min_examples: int) -> float:
    """DEFAULT_EPOCHS, or more so that `min_examples` examples are seen, at most MAX_EPOCHS."""
    return float(min(MAX_EPOCHS, max(DEFAULT_EPOCHS, math.ceil(min_examples / max(n_train, 1)))))


def rule_for(params: float) -> SizeRule:
    return next(r for r in SIZE_RULES if params < r.below)


def base_params(base) -> int:
    """Parameter count from the base's config.json (weights are not read)."""
    from loramux.trainer.plan import load_shape

    return load_shape(base).params


def resolve(cfg: TrainConfig, n_train: int | None = None, params: int | None = None) -> TrainConfig:
    """`cfg` with every size-dependent default (null in the recipe) filled in for this base and data."""
    t = cfg.training
    rule = rule_for(base_params(cfg.base) if params is None else params)
    lr = t.learning_rate or (rule.lora_lr if METHODS[cfg.method].adapter else rule.full_lr)
    min_examples = t.min_examples if t.min_examples is not None else rule.min_examples
    epochs = t.epochs or (auto_epochs(n_train, min_examples) if n_train else None)
    r = cfg.lora.r or rule.r
    alpha = cfg.lora.alpha if cfg.lora.alpha is not None else 2.0 * r
    return cfg.model_copy(update={"training": t.model_copy(update={"learning_rate": lr, "epochs": epochs,
                                                                             "min_examples": min_examples}),
                                  "lora": cfg.lora.model_copy(update={"r": r, "alpha": alpha})})
