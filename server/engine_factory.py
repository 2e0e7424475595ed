"""The engine factory `loramux serve` gives `create_app`: vLLM's engine from the server settings,
in one process or in each Ray replica."""

from __future__ import annotations

import time

from rich.console import Console

from loramux.adapters.hardware import DtypeChoice

from .settings import ServerSettings

_err = Console(stderr=True)


async def start_vllm_engine(s: ServerSettings):
    """Runs in the app's lifespan; says on stderr when the engine is up (a replica: in its log)."""
    from .engine.vllm_engine import EngineConfig, VLLMEngine

    started = time.perf_counter()
    engine = VLLMEngine.start(EngineConfig(
        base=s.base, served_name=s.base_name, max_loras=s.max_loras, max_lora_rank=s.max_lora_rank,
        max_cpu_loras=s.max_cpu_loras, dtype=s.dtype, max_model_len=s.max_model_len,
        progress_bars=s.log_level in ("debug", "info"), max_num_seqs=s.max_num_seqs, enable_lora=s.enable_lora,
        scheduling_policy="priority" if s.fair_share else "fcfs", tool_parser=s.tool_call_parser))
    _err.print(ready_line(s, engine.dtype_choice, time.perf_counter() - started), highlight=False, soft_wrap=True)
    return engine


def ready_line(s: ServerSettings, dtype: DtypeChoice, seconds: float) -> str:
    """The start line: what is served, where, to whom, and the dtype the engine computes in and why
    (`auto` is resolved per machine, so an operator must see what it became)."""
    served = f"{len(s.adapters)} adapter(s)" + (f" and the registry {s.registry}" if s.registry else "")
    access = f"keys from {s.keys}" if s.keys else "open to every client (no --keys)"
    where = f"{s.replicas} replica(s) on Ray Serve" if s.replicas else "one process"
    return (f"engine ready in {seconds:.1f}s; serving {s.base_name}, {served} on http://{s.host}:{s.port}/v1 "
            f"from {where}; {dtype}; {access}")
