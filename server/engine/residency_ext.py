"""A vLLM worker extension that reports where each LoRA adapter is.

vLLM's public calls say which adapters are registered (`list_loras`) but not which sit in a
batch slot. `worker_extension_cls` is vLLM's documented way to add a method to its workers,
reached through `collective_rpc`; reading the LoRA manager's slot LRU is the only private part.
"""

from __future__ import annotations


class LoraResidency:
    def loramux_lora_residency(self) -> dict[str, list[int]]:
        manager = getattr(getattr(self, "model_runner", None), "lora_manager", None)
        if manager is None:
            return {"device": [], "host": []}
        slots = getattr(getattr(manager, "_adapter_manager", None), "_active_adapters", None)
        return {"device": sorted(slots.cache) if slots is not None else [], "host": sorted(manager.list_adapters())}
