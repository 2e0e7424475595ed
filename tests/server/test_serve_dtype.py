"""`loramux serve` with the default `--dtype auto`: vLLM gets a concrete dtype chosen for this CPU,
and the start line names it and why (issue 24).

No engine starts: vLLM's `AsyncLLM.from_engine_args` is replaced by a stub that records the
arguments and answers like an engine built from them. The CPU's answer is forced both ways.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest

from loramux.adapters.hardware import ENV_FEATURES, DtypeChoice
from loramux.server.engine_factory import ready_line, start_vllm_engine
from loramux.server.settings import ServerSettings

pytest.importorskip("vllm")


@pytest.fixture
def engine_args(monkeypatch) -> list:
    """What vLLM's engine was built from, per start; the process itself is left as it was."""
    import torch
    from vllm.v1.engine.async_llm import AsyncLLM

    from loramux.server.engine import vllm_engine

    seen = []

    def built(args, **_):
        seen.append(args)
        config = SimpleNamespace(dtype=getattr(torch, args.dtype), max_model_len=64, get_vocab_size=lambda: 100)
        return SimpleNamespace(model_config=config, get_tokenizer=lambda: SimpleNamespace(bos_token_id=1))

    monkeypatch.setattr(vllm_engine, "prepare_process", lambda cfg: None)  # no plugins in the test process
    monkeypatch.setattr(AsyncLLM, "from_engine_args", staticmethod(built))
    return seen


SMALL = "the model is too small for bf16 to pay (hidden size 256 < 512), though "


# min_hidden 0 serves the tiny base as a model big enough for bf16 (loramux.adapters.hardware.BF16_MIN_HIDDEN)
@pytest.mark.parametrize("features, min_hidden, dtype, why", [
    pytest.param(*case, marks=pytest.mark.cpu_path(f"dtype auto: {case[0]}"), id=f"{case[0]}-{case[1]}")
    for case in [
        ("avx2", 512, "float32", "this CPU has no native bf16"),
        ("avx2,avx512f", 512, "float32", "this CPU has no native bf16"),
        ("avx2,avx512f,avx512_bf16", 512, "float32", SMALL + "this CPU has native bf16 (avx512_bf16)"),
        ("avx2,avx512f,avx512_bf16", 0, "bfloat16", "this CPU has native bf16 (avx512_bf16)"),
        ("avx2,avx512f,amx_bf16", 0, "bfloat16", "this CPU has native bf16 (amx_bf16)")]])
def test_auto_reaches_vllm_as_the_dtype_this_cpu_computes_fast(features, min_hidden, dtype, why, engine_args,
                                                               monkeypatch, capsys, tiny_base: Path):
    from loramux.adapters import hardware

    monkeypatch.setattr(hardware, "BF16_MIN_HIDDEN", min_hidden)
    monkeypatch.setenv(ENV_FEATURES, features)
    monkeypatch.delenv("LORAMUX_DTYPE", raising=False)
    engine = asyncio.run(start_vllm_engine(ServerSettings(base=tiny_base, served_name="tiny")))
    (args,) = engine_args
    assert args.dtype == dtype  # vLLM never sees `auto` on CPU
    assert engine.dtype_choice == DtypeChoice(dtype, why)
    line = capsys.readouterr().err
    assert line.startswith("engine ready in") and line.count("\n") == 1, line  # one line, however narrow the console
    assert f"; dtype {dtype}: {why};" in line, line


def test_an_asked_dtype_is_passed_as_is_and_said_so(engine_args, monkeypatch, capsys, tiny_base: Path):
    monkeypatch.setenv(ENV_FEATURES, "avx2")
    asyncio.run(start_vllm_engine(ServerSettings(base=tiny_base, dtype="bfloat16")))
    assert engine_args[0].dtype == "bfloat16"
    assert "; dtype bfloat16: as asked;" in capsys.readouterr().err


def test_the_start_line_names_the_dtype_between_place_and_access(tiny_base: Path):
    s = ServerSettings(base=tiny_base, served_name="tiny", port=9001)
    line = ready_line(s, DtypeChoice("float32", "this CPU has no native bf16"), 12.34)
    assert line == ("engine ready in 12.3s; serving tiny, 0 adapter(s) on http://127.0.0.1:9001/v1 from one process; "
                    "dtype float32: this CPU has no native bf16; open to every client (no --keys)")
