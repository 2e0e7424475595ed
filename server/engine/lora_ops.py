"""Which LoRA ops vLLM's CPU path runs: `grouped` (loramux's, the default) or `vllm` (its own).

Why: vLLM's PyTorch-native ops copy every token's LoRA matrices before an einsum, 56 times
a step, and apply the last slot to tokens without an adapter; through loramux two adapters
ran at 0.37x the base's tok/s. The grouped ops (`grouped_lora.py`) group rows by adapter
once a step and do one product per adapter present, skipping rows without one.

Delivered like the mixed-batch fix (`lora_fix.py`): the `vllm.general_plugins` entry point
runs in every vLLM process and is inert unless loramux's engine set `LORAMUX_LORA_OPS`
(`grouped` by default; `vllm` keeps vLLM's ops, e.g. to measure them). The swap happens
only where the platform uses `PunicaWrapperCPU` and a probe finds the method signatures
the subclass overrides; otherwise vLLM's path runs and a log line says why.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable

from loramux.adapters.errors import LoramuxError

log = logging.getLogger(__name__)

ENV_FLAG = "LORAMUX_LORA_OPS"
DEFAULT = "grouped"
WRAPPER = "loramux.server.engine.grouped_punica.GroupedPunicaWrapper"
_CPU_WRAPPER = "vllm.lora.punica_wrapper.punica_cpu.PunicaWrapperCPU"

# The parameters (after self) of every PunicaWrapperCPU method the grouped wrapper replaces
# or relies on; a different vLLM that changed any of them keeps its own ops.
EXPECTED = {
    "update_metadata": ("mapping", "lora_index_to_id", "max_loras", "vocab_size", "kwargs"),
    "add_shrink": ("y", "x", "lora_a_stacked", "scale", "kwargs"),
    "add_expand": ("y", "x", "lora_b_stacked", "output_slices", "offset_start", "add_inputs", "kwargs"),
    "add_lora_embedding": ("y", "x", "lora_b_stacked", "add_inputs", "kwargs"),
    "add_lora_linear": ("y", "x", "lora_a_stacked", "lora_b_stacked", "scale", "output_slices", "buffer",
                        "kwargs"),
    "add_lora_logits": ("y", "x", "lora_a_stacked", "lora_b_stacked", "scale", "buffer", "kwargs"),
}
_applied = False
_vllm_wrapper: str | None = None  # the platform's own choice, kept when ours replaces it


class UnknownLoraOps(LoramuxError):
    """`LORAMUX_LORA_OPS` names no op set."""


def signature_mismatches() -> list[str]:
    """Methods of the installed PunicaWrapperCPU whose parameters differ from EXPECTED."""
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    bad = []
    for name, params in EXPECTED.items():
        got = tuple(inspect.signature(getattr(PunicaWrapperCPU, name, None) or (lambda self: None)).parameters)[1:]
        if got != params:
            bad.append(f"{name}{got}")
    for prop in ("token_lora_indices", "sampler_indices"):
        if not isinstance(getattr(PunicaWrapperCPU, prop, None), property):
            bad.append(prop)
    return bad


def platform_wrapper() -> str:
    """The punica wrapper the platform itself chose, also once the grouped one is swapped in."""
    if _vllm_wrapper is not None:
        return _vllm_wrapper
    from vllm.platforms import current_platform

    return current_platform.get_punica_wrapper()


def grouped() -> bool:
    """Swap in the grouped wrapper if this platform runs vLLM's torch ops with known signatures."""
    global _applied, _vllm_wrapper
    if _applied:
        return True
    wrapper = platform_wrapper()
    if wrapper != _CPU_WRAPPER:
        log.info("LoRA ops: this platform uses %s, not the torch ops; keeping vLLM's", wrapper)
        return False
    if bad := signature_mismatches():
        log.warning("LoRA ops: vLLM's PunicaWrapperCPU changed (%s); keeping vLLM's ops", ", ".join(bad))
        return False
    from vllm.platforms import current_platform

    platform = type(current_platform)
    _vllm_wrapper = wrapper
    platform.get_punica_wrapper = classmethod(lambda cls: WRAPPER)
    platform.check_and_update_config = classmethod(compiling(platform.check_and_update_config.__func__))
    _applied = True
    log.info("LoRA ops: grouped (one product per adapter present; no-adapter rows skipped)")
    return True


def compiling(check_and_update_config):
    """vLLM's CPU platform turns torch.compile off whenever LoRA is on, because its torch ops branch
    on each batch in Python; the grouped wrapper hides that branching in a custom op, so the
    platform is asked for its config as if LoRA were off (`LORAMUX_LORA_COMPILE=0` keeps it off)."""
    def check(cls, vllm_config) -> None:
        lora = vllm_config.lora_config
        if os.environ.get("LORAMUX_LORA_COMPILE", "1") == "1":
            vllm_config.lora_config = None
        try:
            check_and_update_config(cls, vllm_config)
        finally:
            vllm_config.lora_config = lora
    return check


def keep_vllm() -> bool:
    log.info("LoRA ops: vLLM's own (%s=vllm)", ENV_FLAG)
    return False


OP_SETS: dict[str, Callable[[], bool]] = {"grouped": grouped, "vllm": keep_vllm}


def check(value: str) -> str:
    if value not in OP_SETS:
        raise UnknownLoraOps(f"{ENV_FLAG}={value!r}: choose one of {', '.join(OP_SETS)}", param=ENV_FLAG)
    return value


def requested() -> str | None:
    """The op set loramux's engine asked for; None in a plain vLLM run (then nothing changes)."""
    value = os.environ.get(ENV_FLAG)
    return None if value is None else check(value)


def will_group() -> bool:
    """True when `plugin()` swaps in the grouped ops here (so the zero slot is not needed)."""
    return _applied or (requested() == "grouped" and platform_wrapper() == _CPU_WRAPPER
                        and not signature_mismatches())


def plugin() -> None:
    """vLLM general plugin: runs in every vLLM process; acts only for loramux's engine."""
    if (name := requested()) is not None:
        OP_SETS[name]()
