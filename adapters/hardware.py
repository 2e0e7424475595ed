"""Which dtype a model computes in on this machine, and the CPU facts that decide it.

vLLM's `dtype auto` (and a plain `torch.bfloat16` load) turns an fp32 checkpoint into bf16
on every CPU. Only CPUs with native bf16 (AVX512-BF16, AMX-BF16) compute that fast; on the
others (AVX2-only EPYCs, AVX-512 without BF16) bf16 is emulated and serving ran 4.5x slower
than float32 (issue 24). So `auto` is resolved here, once, for the server, the trainer's
evaluation and the benchmarks, and the reason travels with the answer to the start line.

This is the only place loramux reads CPU features. bitsandbytes and vLLM read their own
(`has_avx512bf16()`, `torch.cpu._is_avx512_bf16_supported()`); trainer/bnb_cpu.py keeps
bitsandbytes off its AVX512-BF16 path, and tests force both answers together (see
tests/trainer/test_trainer_qlora_cpu_paths.py). Lives in `adapters` so both the server and
the trainer can import it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from loramux.adapters.errors import InvalidRequest

FEATURES = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
"""The CPU flags (as /proc/cpuinfo spells them) that change a code path somewhere in the stack."""
NATIVE_BF16 = ("avx512_bf16", "amx_bf16")
ENV_FEATURES = "LORAMUX_CPU_FEATURES"
"""Overrides the CPU's answer: comma-separated FEATURES, empty for none (tests force each path)."""
CPUINFO = Path("/proc/cpuinfo")
SIXTEEN_BIT = ("bfloat16", "float16")
BF16_MIN_HIDDEN = 512
"""Below this hidden size bf16 does not pay even on a CPU with native bf16: the matmuls are too small
for their speed-up to cover the conversions (docs/bench/dtype_auto.md, an AVX512-BF16 EPYC: hidden
256 served at 0.88-0.92x float32, SmolLM2-135M's 576 at 1.14-1.21x)."""


def cpu_features(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The FEATURES this machine's CPU has: LORAMUX_CPU_FEATURES if set, else /proc/cpuinfo's
    flags (none where there is no such file: not Linux x86, so no native bf16 either)."""
    forced = os.environ.get(ENV_FEATURES)
    if forced is not None:
        given = {f.strip() for f in forced.split(",") if f.strip()}
        if unknown := sorted(given - set(FEATURES)):
            raise InvalidRequest(f"{ENV_FEATURES}: unknown feature(s) {', '.join(unknown)}; "
                                 f"use some of {', '.join(FEATURES)}", param=ENV_FEATURES)
        return frozenset(given)
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    flags = next((line.partition(":")[2].split() for line in text.splitlines() if line.startswith("flags")), [])
    return frozenset(flags) & frozenset(FEATURES)


def _config(base: Path | None) -> list[dict]:
    """A model folder's config.json and its text model's part (multimodal configs nest it)."""
    try:
        config = json.loads((Path(base) / "config.json").read_text()) if base is not None else {}
    except (OSError, ValueError):
        return []
    return [config, config.get("text_config") or {}]


def _first(configs: list[dict], keys: tuple[str, ...], kind: type):
    """The first value of one of `keys` that is a `kind`, in the config, then its text part."""
    return next((v for cfg in configs for k in keys if isinstance(v := cfg.get(k), kind)), None)


def _stored(configs: list[dict]) -> str | None:
    found = _first(configs, ("dtype", "torch_dtype"), str)
    return found.removeprefix("torch.") if found else None


def checkpoint_dtype(base: Path | None) -> str | None:
    """The dtype a model folder's config.json says its weights are stored in (None if it says nothing)."""
    return _stored(_config(base))


@dataclass(frozen=True)
class DtypeChoice:
    """A concrete dtype (or `auto`: vLLM decides, on GPU) and why; str() is what the start line says."""

    dtype: str
    reason: str

    def __str__(self) -> str:
        return f"dtype {self.dtype}: {self.reason}"


def resolve_dtype(requested: str, base: Path | None = None, *, on_cpu: bool = True,
                  features: frozenset[str] | None = None) -> DtypeChoice:
    """`auto` made concrete for this machine; any other value is kept as asked.

    On CPU: bfloat16 where the CPU has native bf16, unless the checkpoint is float16 (bf16 would
    round its weights) or the model is too small for bf16 to pay (BF16_MIN_HIDDEN); float32
    otherwise, also for 16-bit checkpoints (upcast: exact, and fast).
    float16 is never chosen: nowhere measured faster. On GPU: `auto`, vLLM's own choice.
    """
    if requested != "auto":
        return DtypeChoice(requested, "as asked")
    if not on_cpu:
        return DtypeChoice("auto", "vLLM's choice on GPU")
    have = cpu_features() if features is None else features
    native = [f for f in NATIVE_BF16 if f in have]
    configs = _config(base)  # read once: the stored dtype and the width both come from it
    stored = _stored(configs)
    if not native:
        upcast = f" (the {stored} checkpoint runs upcast)" if stored in SIXTEEN_BIT else ""
        return DtypeChoice("float32", f"this CPU has no native bf16{upcast}")
    has = f"this CPU has native bf16 ({', '.join(native)})"
    if stored == "float16":
        return DtypeChoice("float32", f"the checkpoint is float16 (bf16 would round its weights), though {has}")
    if (hidden := _first(configs, ("hidden_size",), int)) is not None and hidden < BF16_MIN_HIDDEN:
        return DtypeChoice("float32", f"the model is too small for bf16 to pay (hidden size {hidden} < "
                                      f"{BF16_MIN_HIDDEN}), though {has}")
    return DtypeChoice("bfloat16", has)
